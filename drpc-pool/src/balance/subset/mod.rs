//! Connection subsetting: each client connects to k of the N listed backends, so that M
//! clients hold about M·k connections instead of M·N, spread evenly over the backends and
//! moving little when either side scales.
//!
//! | [`Subset`] | Needs | Balance (connections per backend, max/mean) | Churn when a backend comes or goes |
//! |---|---|---|---|
//! | [`Subset::Ring`] with `clients` (Ringsteady-like, capped) | a dense client ordinal and the client count | at most max(⌈μ⌉, ⌊1.1·μ⌋) connections a backend, μ = M·k/N | about the minimum, 1/(N+1), except next to a backend at the cap |
//! | [`Subset::Ring`] without `clients` | a dense client ordinal | near even (up to about 1.2× where N is not a power of two) | about the minimum; 0 beyond the removed backend's own |
//! | [`Subset::Rendezvous`] (gRPC A68) | nothing | about 1 + √(2 ln N / μ) | at most one backend of each subset |
//!
//! The SRE book's deterministic subsetting (a shuffle per round of clients) balances exactly
//! but re-shuffles when N changes, closing 40–94 % of connections (balancing.md §2.1); the
//! schemes here are consistent instead.
//!
//! A backend's ring position comes from its ordinal when its stable name ends in one (a
//! StatefulSet's `web-3`, or just `3`), else from the hash of its name, so ordinal-named
//! backends keep their place as others come and go. A client that joins or leaves moves no
//! other client's subset, unless the cap changes with the client count.

use super::hash::{hash_str, pair};

mod ring;

/// How a client chooses its subset; set in
/// [`BalanceConfig::subset`](super::BalanceConfig::subset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subset {
    /// Ring-based deterministic subsetting (Ringsteady-like): client `ordinal` takes the
    /// `k` backends that follow its position on the ring. With the client count, no backend
    /// takes more than max(⌈μ⌉, ⌊1.1·μ⌋) connections (μ = clients·k/N): every client
    /// computes the same whole assignment, and a backend's overflow moves on to the next
    /// backends with room.
    ///
    /// ```
    /// use drpc_pool::balance::subset::Subset;
    /// let names: Vec<String> = (0..300).map(|i| format!("web-{i}")).collect();
    /// let mine = Subset::Ring { ordinal: 7, clients: Some(100), k: 20 }.select(&names);
    /// assert_eq!(mine.len(), 20);
    /// ```
    Ring {
        /// This client's dense ordinal (a StatefulSet ordinal, a lease index), from 0.
        ordinal: u64,
        /// How many clients there are (ordinals `0..clients`), when known; `None` for plain
        /// windows. An ordinal at or past the count counts as the last client.
        clients: Option<u64>,
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
    /// the order of `names`. All of them when `k` ≥ the number of backends; none when `k`
    /// is 0.
    pub fn select<S: AsRef<str>>(&self, names: &[S]) -> Vec<usize> {
        let n = names.len();
        let k = self.k();
        if k >= n {
            return (0..n).collect();
        }
        if k == 0 {
            return Vec::new();
        }
        let mut chosen = match self {
            Subset::Ring {
                ordinal,
                clients: Some(clients),
                ..
            } => {
                let clients = (*clients).max(ordinal.saturating_add(1));
                ring::bounded(names, *ordinal, clients, k)
            }
            Subset::Ring { ordinal, .. } => ring::window(names, *ordinal, k),
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
        let c = counts(300, &names, |o| Subset::Ring {
            ordinal: o,
            clients: None,
            k: 10,
        });
        assert!(c.iter().all(|&x| x == 10), "{c:?}");
        // every client gets k distinct backends
        let s = Subset::Ring {
            ordinal: 5,
            clients: None,
            k: 10,
        }
        .select(&names);
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn adding_a_backend_moves_at_most_one_backend_per_ring_subset() {
        let names = pods(100);
        let mut more = names.clone();
        more.push("web-100".into());
        let mut closed = 0;
        for o in 0..1000 {
            let s = Subset::Ring {
                ordinal: o,
                clients: None,
                k: 10,
            };
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
            |o: u64| Subset::Ring {
                ordinal: o,
                clients: None,
                k: 5,
            },
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

    /// Connections per backend under the capped ring, all clients at once.
    fn capped_counts(m: u64, n: usize, k: usize) -> Vec<u64> {
        let mut c = vec![0; n];
        for set in ring::bounded_all(&pods(n), m, k) {
            assert_eq!(set.len(), k);
            let mut distinct = set.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), k, "a subset holds a backend twice");
            for i in set {
                c[i] += 1;
            }
        }
        c
    }

    /// The connections that `before` has and `after` does not, over all clients, by name.
    fn closed(before: &[Vec<usize>], bn: &[String], after: &[Vec<usize>], an: &[String]) -> usize {
        before
            .iter()
            .zip(after)
            .map(|(b, a)| {
                b.iter()
                    .filter(|&&i| !a.iter().any(|&j| an[j] == bn[i]))
                    .count()
            })
            .sum()
    }

    #[test]
    fn capped_ring_holds_every_backend_within_the_cap() {
        // The balance-sim grid, where plain windows reach 1.13–1.20 at three points.
        for m in [100u64, 300, 1000] {
            for n in [10usize, 100, 300] {
                for k in [5usize, 10, 20] {
                    if k >= n {
                        continue;
                    }
                    let c = capped_counts(m, n, k);
                    let cap = ring::cap(m, k, n);
                    let mean = (m * k as u64) as f64 / n as f64;
                    assert!(cap as f64 <= (mean * 1.1).max(mean.ceil()) + 1e-9);
                    let max = *c.iter().max().unwrap();
                    assert!(max <= cap, "M{m} N{n} k{k}: {max} > cap {cap}");
                    assert_eq!(c.iter().sum::<u64>(), m * k as u64);
                }
            }
        }
        // Plain windows do exceed 1.1 at one of those points: the cap is doing the work.
        let names = pods(300);
        let plain = counts(100, &names, |o| Subset::Ring {
            ordinal: o,
            clients: None,
            k: 20,
        });
        assert!(*plain.iter().max().unwrap() as f64 > 1.1 * 100.0 * 20.0 / 300.0);
    }

    #[test]
    fn capped_ring_select_is_this_clients_part_of_the_whole() {
        let names = pods(100);
        let all = ring::bounded_all(&names, 300, 5);
        for o in [0u64, 7, 299] {
            let mut mine = all[o as usize].clone();
            mine.sort_unstable();
            let s = Subset::Ring {
                ordinal: o,
                clients: Some(300),
                k: 5,
            };
            assert_eq!(s.select(&names), mine);
            // The list order does not matter: the same backends by name.
            let mut reversed = names.clone();
            reversed.reverse();
            let mut got: Vec<&String> = s.select(&reversed).iter().map(|&i| &reversed[i]).collect();
            got.sort();
            let mut want: Vec<&String> = mine.iter().map(|&i| &names[i]).collect();
            want.sort();
            assert_eq!(got, want);
        }
        // An ordinal past the count still gets k backends.
        let s = Subset::Ring {
            ordinal: 500,
            clients: Some(300),
            k: 5,
        };
        assert_eq!(s.select(&names).len(), 5);
    }

    #[test]
    fn capped_ring_churn_stays_near_the_minimum() {
        // (M, N, k): the balance-sim churn grid.
        for (m, n, k) in [(300u64, 300usize, 10usize), (1000, 100, 10), (100, 10, 5)] {
            let names = pods(n);
            let before = ring::bounded_all(&names, m, k);
            let total = m as usize * k;
            // A backend joins: at most 1.5× the minimum of connections close.
            let mut more = names.clone();
            more.push(format!("web-{n}"));
            let after = ring::bounded_all(&more, m, k);
            let moved = closed(&before, &names, &after, &more) as f64 / total as f64;
            assert!(
                moved <= 1.5 / (n as f64 + 1.0),
                "M{m} N{n} k{k}: +1 closed {moved}"
            );
            // A backend leaves: at most 0.5 % beyond its own connections.
            let gone = format!("web-{}", n / 2);
            let fewer: Vec<String> = names.iter().filter(|b| **b != gone).cloned().collect();
            let after = ring::bounded_all(&fewer, m, k);
            let own = before
                .iter()
                .filter(|s| s.iter().any(|&i| names[i] == gone))
                .count();
            let extra = closed(&before, &names, &after, &fewer) - own;
            assert!(
                extra as f64 <= 0.005 * (total - own) as f64,
                "M{m} N{n} k{k}: -1 closed {extra} extra"
            );
            // A client joins: at most 1/M of the others' connections move.
            let after = ring::bounded_all(&names, m + 1, k);
            let moved = closed(&before, &names, &after[..m as usize], &names);
            assert!(
                moved as f64 <= total as f64 / m as f64,
                "M{m} N{n} k{k}: join {moved}"
            );
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

    #[test]
    fn a_zero_k_selects_nothing_and_does_not_panic() {
        let names = pods(10);
        for s in [
            Subset::Ring {
                ordinal: 1,
                clients: Some(5),
                k: 0,
            },
            Subset::Ring {
                ordinal: 1,
                clients: None,
                k: 0,
            },
            Subset::Rendezvous {
                client: "a".into(),
                k: 0,
            },
        ] {
            assert!(s.select(&names).is_empty(), "{s:?}");
        }
        let none: [&str; 0] = [];
        assert!(
            Subset::Rendezvous {
                client: "a".into(),
                k: 0
            }
            .select(&none)
            .is_empty()
        );
    }
}
