//! [`TestHost`]: a network namespace joined to this one by a veth pair.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;

use nix::sched::CloneFlags;

use crate::subnet::{self, Subnet};
use crate::{NetnsError, ip};

/// A test host in its own network namespace; see the [crate docs](crate).
#[derive(Debug)]
pub struct TestHost {
    ns: String,
    veth: String,
    subnet: Subnet,
}

impl TestHost {
    /// Makes a test host: namespace `drpc-PID-N`, veth `drpcN` here and `eth0` inside, a free
    /// /30 of `10.253.0.0/16` (this side `.1`, the host `.2`), loopback up inside.
    ///
    /// # Errors
    /// [`NetnsError::NotRoot`], a failing `ip` command, [`NetnsError::NoSubnet`].
    pub fn new() -> Result<TestHost, NetnsError> {
        crate::available()?;
        let pid = std::process::id();
        subnet::with_free_subnet(pid.wrapping_mul(7919), |subnet| {
            remove_stale_namespaces();
            let n = subnet.index();
            let host = TestHost {
                ns: format!("drpc-{pid}-{n}"),
                veth: format!("drpc{n}"),
                subnet,
            };
            // From here on, Drop removes whatever was made.
            host.create()?;
            Ok(host)
        })
    }

    /// [`TestHost::new`] for a test: `None` (after printing why, so the test can skip) when
    /// this process cannot make namespaces and [`crate::REQUIRED_VAR`] is not set.
    ///
    /// # Panics
    /// When the host cannot be made and [`crate::REQUIRED_VAR`] is set, or when it cannot be
    /// made for another reason than missing root or `ip`.
    pub fn for_test(test: &str) -> Option<TestHost> {
        match TestHost::new() {
            Ok(host) => Some(host),
            Err(e) if crate::required() => {
                panic!(
                    "{test}: needs a network namespace ({} is set): {e}",
                    crate::REQUIRED_VAR
                )
            }
            Err(e @ (NetnsError::NotRoot | NetnsError::Command { .. })) => {
                eprintln!(
                    "SKIPPED {test}: needs a network namespace: {e} (set {} to make this fail)",
                    crate::REQUIRED_VAR
                );
                None
            }
            Err(e) => panic!("{test}: making a test host: {e}"),
        }
    }

    fn create(&self) -> Result<(), NetnsError> {
        let ns = self.ns.as_str();
        let near = format!("{}/30", self.subnet.near());
        let far = format!("{}/30", self.subnet.far());
        ip::run(&["netns", "add", ns])?;
        ip::run(&[
            "link", "add", &self.veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip::run(&["addr", "add", &near, "dev", &self.veth])?;
        ip::run(&["link", "set", &self.veth, "up"])?;
        ip::run(&["-n", ns, "link", "set", "lo", "up"])?;
        ip::run(&["-n", ns, "addr", "add", &far, "dev", "eth0"])?;
        ip::run(&["-n", ns, "link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host's address (inside the namespace).
    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.subnet.far())
    }

    /// This side's address on the veth pair (what the host sees connections come from).
    pub fn near_ip(&self) -> Ipv4Addr {
        self.subnet.near()
    }

    /// Runs `f` on a thread that entered the namespace: sockets it makes live there.
    ///
    /// # Errors
    /// [`NetnsError::Setns`].
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let path = Path::new("/run/netns").join(&self.ns);
        let setns_err = |source: std::io::Error| NetnsError::Setns {
            ns: self.ns.clone(),
            source,
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).map_err(setns_err)?;
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| setns_err(e.into()))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A TCP listener inside the namespace on all its addresses (so it survives a blackhole
    /// and heal), non-blocking (ready for `tokio::net::TcpListener::from_std`); `port` 0
    /// picks one. Dial it at [`TestHost::ip`] and the listener's port.
    ///
    /// # Errors
    /// [`NetnsError::Setns`], or the bind error.
    pub fn bind_tcp(&self, port: u16) -> Result<TcpListener, NetnsError> {
        self.run_in(|| {
            let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?
        .map_err(|source| NetnsError::Io {
            what: "binding a TCP listener in the namespace",
            source,
        })
    }

    /// A UDP socket inside the namespace on all its addresses, non-blocking (for a QUIC
    /// server); `port` 0 picks one.
    ///
    /// # Errors
    /// [`NetnsError::Setns`], or the bind error.
    pub fn bind_udp(&self, port: u16) -> Result<UdpSocket, NetnsError> {
        self.run_in(|| {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })?
        .map_err(|source| NetnsError::Io {
            what: "binding a UDP socket in the namespace",
            source,
        })
    }

    /// The address to dial for a socket bound inside (its port at [`TestHost::ip`]).
    pub fn addr_of(&self, local: SocketAddr) -> SocketAddr {
        SocketAddr::new(self.ip(), local.port())
    }

    /// `ip netns exec NS program`: a command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Silently drops all traffic to the host: deletes its address inside the namespace.
    /// Packets to it are dropped without a reset; connections stay open on both sides.
    ///
    /// # Errors
    /// The failing `ip` command (also when it is blackholed already).
    pub fn blackhole(&self) -> Result<(), NetnsError> {
        let far = format!("{}/30", self.subnet.far());
        ip::run(&["-n", &self.ns, "addr", "del", &far, "dev", "eth0"]).map(|_| ())
    }

    /// Ends a blackhole: adds the host's address back.
    ///
    /// # Errors
    /// The failing `ip` command (also when it is not blackholed).
    pub fn heal(&self) -> Result<(), NetnsError> {
        let far = format!("{}/30", self.subnet.far());
        ip::run(&["-n", &self.ns, "addr", "add", &far, "dev", "eth0"]).map(|_| ())
    }
}

impl Drop for TestHost {
    /// Deletes the veth pair first (at once, even while sockets still hold the namespace),
    /// then the namespace. Errors are printed, never raised.
    fn drop(&mut self) {
        let _ = ip::run(&["link", "del", &self.veth]);
        if let Err(e) = ip::run(&["netns", "del", &self.ns]) {
            eprintln!("drpc-netns: removing {}: {e}", self.ns);
        }
    }
}

/// Removes `drpc-PID-N` namespaces whose process is gone (a test killed before its drop).
fn remove_stale_namespaces() {
    let Ok(list) = ip::run(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("drpc-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = ip::run(&["netns", "del", name]);
        }
    }
}
