//! Connection subsetting: each client connects to k of the N listed backends, so that M
//! clients hold about M·k connections instead of M·N, spread evenly over the backends and
//! moving little when either side scales.
//!
//! | [`Subset`] | Needs | Balance (connections per backend, max/mean) | Churn when a backend comes or goes |
//! |---|---|---|---|
//! | [`Subset::Ring`] (Ringsteady-like) | a dense client ordinal | near even: clients and backends sit on a ring at bit-reversed (van der Corput) positions | about the minimum, 1/(N+1); 0 beyond the removed backend's own |
//! | [`Subset::Rendezvous`] (gRPC A68) | nothing | about 1 + √(2 ln N / μ), μ = M·k/N | at most one backend of each subset |
//!
//! The SRE book's deterministic subsetting (a shuffle per round of clients) balances exactly
//! but re-shuffles when N changes, closing 40–94 % of connections (balancing.md §2.1); both
//! schemes here are consistent instead.
//!
//! A backend's ring position comes from its ordinal when its stable name ends in one (a
//! StatefulSet's `web-3`, or just `3`), else from the hash of its name, so ordinal-named
//! backends keep their place as others come and go. A client that joins or leaves moves no
//! other client's subset.

use super::hash::{hash_str, mix64, pair};

/// How a client chooses its subset; set in
/// [`BalanceConfig::subset`](super::BalanceConfig::subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subset {
    /// Ring-based deterministic subsetting (Ringsteady-like): client `ordinal` takes the
    /// `k` backends that follow its position on the ring.
    Ring {
        /// This client's dense ordinal (a StatefulSet ordinal, a lease index), from 0.
        ordinal: u64,
        /// Subset size.
        k: usize,
    },
    /// Rendezvous top-k (gRPC A68): the `k` backends scoring highest for `client`.
    Rendezvous {
        /// This client's identity (a pod name, or anything random and unique).
        client: String,
        /// Subset size.
        k: usize,
    },
}

impl Subset {
    /// The subset size.
    pub fn k(&self) -> usize {
        match self {
            Subset::Ring { k, .. } | Subset::Rendezvous { k, .. } => *k,
        }
    }

    /// The indices into `names` (each backend's stable name) of this client's subset, in
    /// the order of `names`. All of them when `k` ≥ the number of backends.
    pub fn select<S: AsRef<str>>(&self, names: &[S]) -> Vec<usize> {
        let n = names.len();
        let k = self.k();
        if k >= n {
            return (0..n).collect();
        }
        let mut chosen = match self {
            Subset::Ring { ordinal, .. } => {
                let mut ring: Vec<(u64, u64, usize)> = names
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let s = s.as_ref();
                        (ring_position(s), hash_str(s), i)
                    })
                    .collect();
                ring.sort_unstable();
                let me = vdc(*ordinal);
                let start = ring.partition_point(|&(p, _, _)| p < me);
                (0..k).map(|j| ring[(start + j) % n].2).collect::<Vec<_>>()
            }
            Subset::Rendezvous { client, .. } => {
                let c = hash_str(client);
                let mut scored: Vec<(u64, usize)> = names
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (pair(c, hash_str(s.as_ref())), i))
                    .collect();
                scored.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
                scored[..k].iter().map(|&(_, i)| i).collect()
            }
        };
        chosen.sort_unstable();
        chosen
    }
}

/// The van der Corput position of index `i`: its bits reversed, as a fraction of 2^64.
pub(crate) fn vdc(i: u64) -> u64 {
    i.reverse_bits()
}

/// The ordinal a stable name ends in: `web-3` → 3, `7` → 7; `None` without one.
pub fn ordinal_of(name: &str) -> Option<u64> {
    if name.parse::<std::net::SocketAddr>().is_ok() || name.parse::<std::net::IpAddr>().is_ok() {
        return None; // an address, not a name
    }
    // `web-3:8080`: the port is not the ordinal.
    let name = match name.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => name,
    };
    // `web-3.echo.default.svc.cluster.local`: the ordinal is in the first label.
    let first = name.split('.').next().unwrap_or(name);
    let digits = first.rsplit(['-', '_']).next().unwrap_or(first);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A backend's position on the subsetting ring: its ordinal's van der Corput position, else
/// its name's hash (odd, so it never equals an ordinal's position exactly).
fn ring_position(name: &str) -> u64 {
    match ordinal_of(name) {
        Some(o) => vdc(o),
        None => mix64(hash_str(name)) | 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("web-{i}")).collect()
    }

    /// Connections per backend name over clients `0..m`.
    fn counts(m: u64, names: &[String], subset: impl Fn(u64) -> Subset) -> Vec<usize> {
        let mut c = vec![0; names.len()];
        for client in 0..m {
            for i in subset(client).select(names) {
                c[i] += 1;
            }
        }
        c
    }

    #[test]
    fn ordinals_come_from_the_name() {
        assert_eq!(ordinal_of("web-3"), Some(3));
        assert_eq!(ordinal_of("12"), Some(12));
        assert_eq!(ordinal_of("web-3.echo.default.svc.cluster.local"), Some(3));
        assert_eq!(
            ordinal_of("web-3.echo.default.svc.cluster.local:8080"),
            Some(3)
        );
        assert_eq!(ordinal_of("web-4:8080"), Some(4));
        assert_eq!(ordinal_of("[::1]:8080"), None);
        assert_eq!(ordinal_of("10.0.0.7:8080"), None);
        assert_eq!(ordinal_of("echo-7d9f8-xk2lp"), None);
        assert_eq!(ordinal_of(""), None);
    }

    #[test]
    fn ring_subsets_are_even_when_clients_match_backends() {
        let names = pods(300);
        let c = counts(300, &names, |o| Subset::Ring { ordinal: o, k: 10 });
        assert!(c.iter().all(|&x| x == 10), "{c:?}");
        // every client gets k distinct backends
        let s = Subset::Ring { ordinal: 5, k: 10 }.select(&names);
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn adding_a_backend_moves_at_most_one_backend_per_ring_subset() {
        let names = pods(100);
        let mut more = names.clone();
        more.push("web-100".into());
        let mut closed = 0;
        for o in 0..1000 {
            let s = Subset::Ring { ordinal: o, k: 10 };
            let before: Vec<&String> = s.select(&names).iter().map(|&i| &names[i]).collect();
            let after: Vec<&String> = s.select(&more).iter().map(|&i| &more[i]).collect();
            let gone = before.iter().filter(|b| !after.contains(b)).count();
            assert!(gone <= 1);
            closed += gone;
        }
        assert!(closed <= 150, "closed {closed} of 10000");
    }

    #[test]
    fn removing_a_backend_moves_only_its_own_connections() {
        for subset in [
            |o: u64| Subset::Ring { ordinal: o, k: 5 },
            |o: u64| Subset::Rendezvous {
                client: format!("client-{o}"),
                k: 5,
            },
        ] {
            let names = pods(50);
            let fewer: Vec<String> = names.iter().filter(|n| *n != "web-20").cloned().collect();
            for o in 0..200 {
                let s = subset(o);
                let before: Vec<&String> = s.select(&names).iter().map(|&i| &names[i]).collect();
                let after: Vec<&String> = s.select(&fewer).iter().map(|&i| &fewer[i]).collect();
                for b in &before {
                    assert!(*b == "web-20" || after.contains(b), "{o}: lost {b}");
                }
            }
        }
    }

    #[test]
    fn rendezvous_subsets_are_deterministic_and_k_sized() {
        let names = pods(30);
        let s = Subset::Rendezvous {
            client: "a".into(),
            k: 4,
        };
        assert_eq!(s.select(&names), s.select(&names));
        assert_eq!(s.select(&names).len(), 4);
        assert_eq!(s.select(&names[..3]), vec![0, 1, 2]);
    }
}
