//! Picks a free /30 out of `10.253.0.0/16` for a new test host.
//!
//! Several test processes (and several engineers' test runs on one machine) make hosts at
//! once, so the pick and the address assignment happen under an exclusive lock on a file
//! in `/run`; a /30 is free when no interface of this namespace has an address in it.

use std::fs::OpenOptions;
use std::net::Ipv4Addr;

use nix::fcntl::{Flock, FlockArg};

use crate::{NetnsError, ip};

const LOCK_PATH: &str = "/run/drpc-netns.lock";
/// /30s in a /16.
const SUBNETS: u32 = 1 << 14;

/// A /30: `.1` is this side's address, `.2` the test host's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subnet(u32);

impl Subnet {
    fn base(self) -> u32 {
        u32::from(Ipv4Addr::new(10, 253, 0, 0)) + self.0 * 4
    }

    /// Its index in the range (unique among live test hosts: names derive from it).
    pub(crate) fn index(self) -> u32 {
        self.0
    }

    /// This side's address (on the veth end outside the namespace).
    pub(crate) fn near(self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 1)
    }

    /// The test host's address (inside the namespace).
    pub(crate) fn far(self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 2)
    }
}

/// Holds the lock; `assign` runs under it with a free subnet.
pub(crate) fn with_free_subnet<T>(
    seed: u32,
    assign: impl FnOnce(Subnet) -> Result<T, NetnsError>,
) -> Result<T, NetnsError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .map_err(|source| NetnsError::Io {
            what: "opening the subnet lock file",
            source,
        })?;
    let _lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| NetnsError::Io {
        what: "locking the subnet lock file",
        source: e.into(),
    })?;
    let used = used_subnets()?;
    let free = (0..SUBNETS)
        .map(|i| (seed + i) % SUBNETS)
        .find(|i| !used.contains(i))
        .ok_or(NetnsError::NoSubnet)?;
    assign(Subnet(free))
}

/// The /30 indexes of `10.253.0.0/16` any interface here has an address in.
fn used_subnets() -> Result<Vec<u32>, NetnsError> {
    let out = ip::run(&["-o", "-4", "addr", "show"])?;
    let base = u32::from(Ipv4Addr::new(10, 253, 0, 0));
    Ok(out
        .split_whitespace()
        .filter_map(|w| w.split_once('/'))
        .filter_map(|(a, _)| a.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .filter(|a| a >> 16 == base >> 16)
        .map(|a| (a - base) / 4)
        .collect())
}
