//! Routing by key: a [`RouteTable`] maps a request's key (a user id, a shard key, taken from
//! the call's metadata) to one endpoint, the same one on every client of the fleet, and moves
//! as few keys as possible when an endpoint comes or goes.
//!
//! | Endpoints | Method | Balance (key share, max/mean) | Keys moved on ±1 endpoint | Pick |
//! |---|---|---|---|---|
//! | every name carries a distinct ordinal (`web-3`), equal weights | [jump](RouteMethod::Jump) over the ordinals | exact in expectation | the minimum | O(log N) |
//! | otherwise, up to [`RouteConfig::rendezvous_max`] (48) | [weighted rendezvous](RouteMethod::Rendezvous) (HRW) | exact in expectation, by weight | the minimum, 1/(N+1) | N one-multiply scores |
//! | otherwise, more | [multi-probe](RouteMethod::MultiProbe) ring, 4 points per endpoint, 32 probes | about 1.035, at any N (computed exactly) | the minimum: only the changed endpoint's keys | 32 branch-free O(1) lookups |
//! | more, opt-in ([`LargeSet::Maglev`]) | [Maglev](RouteMethod::Maglev), table ≥ 100·N slots (prime) | ⌊M/N⌋ or ⌈M/N⌉ slots each | several times the minimum (about 6.6× at N=1000) | one array read |
//!
//! Endpoints hash by their stable name (a pod name or StatefulSet ordinal, when discovery
//! gives one; see [`ResolvedEndpoint`](super::resolver::ResolvedEndpoint)), else by address,
//! so a pod that comes back with a new IP keeps its keys (gRPC A76's `hash_key`). Every
//! method is independent of the order discovery lists the endpoints in.
//!
//! **Bounded load** ([`RouteConfig::bounded_load`], Mirrokni, Thorup and Zadimoghaddam, SODA
//! 2018): with a factor c, an endpoint running more than ⌈c·(in flight + 1)/N⌉ calls takes no
//! new key; the call goes to the key's next endpoint in its order (the next rendezvous
//! score, the next closest probe, the next Maglev slot). Hot keys then spill over, at the
//! cost of their locality.
//!
//! The table is built once per endpoint-set change, off the call path (a Maglev fill on a
//! blocking thread), and published in the balancer's snapshot: a pick reads it without a
//! lock.

mod maglev;
mod multiprobe;

use super::hash::{fold, hash_str, mix64, node_mix, unit};
use multiprobe::MultiProbe;

/// How a balanced connection routes calls by key. Set in
/// [`BalanceConfig::route`](super::BalanceConfig::route); calls without the key go to the
/// [picker](super::BalanceConfig::picker).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// The metadata entry holding the key. Default `"drpc-route-key"`.
    pub metadata_key: String,
    /// The largest endpoint set routed by rendezvous hashing (a pick scores every
    /// endpoint, about 0.6 ns each); larger sets use [`RouteConfig::large`]. Default 48,
    /// where a multi-probe pick (32 lookups) becomes the cheaper. A set that grows or
    /// shrinks across it changes method, and nearly every key moves once: set it above
    /// (or below) the range a fleet scales in.
    pub rendezvous_max: usize,
    /// The method for sets larger than [`RouteConfig::rendezvous_max`]. Default
    /// [`LargeSet::MultiProbe`].
    pub large: LargeSet,
    /// Multi-probe: the positions each key probes (1–64). More even shares, slower picks:
    /// the largest share is about 1.05× the mean with 21, 1.035× with 32. Default 32.
    pub probes: usize,
    /// Multi-probe: ring points per endpoint (per mean weight). More points lift the
    /// smallest share (about 0.1× the mean with 1 point, 0.55× with 4). Default 4.
    pub points: usize,
    /// The bounded-load factor c (≥ 1): no endpoint takes a key while running more than
    /// ⌈c·(calls in flight + 1)/N⌉ calls. Default `None` (keys always go to their endpoint
    /// while it is ready).
    pub bounded_load: Option<f64>,
    /// Whether endpoint sets whose names all carry distinct ordinals (`web-0`, `web-1`…)
    /// and whose weights are equal are routed by jump consistent hashing (the minimum of
    /// keys move, O(log N) picks) at any size. Default `true`.
    pub ordinals: bool,
    /// Maglev: the smallest table. The table is the first prime at or above this doubled
    /// until it reaches 100·N (65537, 131074, 262148…, each rounded up to a prime), so that
    /// its size changes only at those steps. Default 65537.
    pub min_table_size: usize,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            metadata_key: "drpc-route-key".to_string(),
            rendezvous_max: 48,
            large: LargeSet::MultiProbe,
            probes: 32,
            points: 4,
            bounded_load: None,
            ordinals: true,
            min_table_size: 65_537,
        }
    }
}

impl RouteConfig {
    /// Routing on the metadata entry `key`, with the other defaults.
    pub fn on(key: impl Into<String>) -> RouteConfig {
        RouteConfig {
            metadata_key: key.into(),
            ..RouteConfig::default()
        }
    }

    /// With the bounded-load factor `c` (1.25 is a good start).
    pub fn with_bounded_load(mut self, c: f64) -> RouteConfig {
        self.bounded_load = Some(c.max(1.0));
        self
    }

    /// Whether a table over `n` endpoints takes long enough to build that it belongs on a
    /// blocking thread (a Maglev fill: milliseconds at N=1000).
    pub(crate) fn builds_slowly(&self, n: usize) -> bool {
        self.large == LargeSet::Maglev && n > self.rendezvous_max
    }
}

/// The routing method for endpoint sets larger than [`RouteConfig::rendezvous_max`] (when
/// their names do not all carry ordinals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LargeSet {
    /// Multi-probe consistent hashing: the minimum of keys move, shares within a few
    /// percent of even, a pick costs [`RouteConfig::probes`] lookups.
    #[default]
    MultiProbe,
    /// A Maglev table: exactly even slot counts and one array read per pick, but several
    /// times the minimum of keys move on every change, and weights are ignored.
    Maglev,
}

/// How a [`RouteTable`] maps keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMethod {
    /// Jump consistent hashing (Lamping and Veach, 2014) over the endpoints' ordinals, when
    /// every name carries a distinct one (a StatefulSet's `web-3`) and weights are equal;
    /// a missing ordinal is a hole whose keys jump again.
    Jump,
    /// Weighted rendezvous (highest random weight) hashing: each endpoint scores each key,
    /// the highest score wins.
    Rendezvous,
    /// Multi-probe consistent hashing (Appleton and O'Reilly, 2015).
    MultiProbe,
    /// A Maglev lookup table (Eisenbud et al., NSDI 2016).
    Maglev,
}

/// The method-specific part of a [`RouteTable`].
#[derive(Debug, Clone)]
enum Kind {
    /// Ordinal → endpoint (`u32::MAX` for a hole).
    Jump(Vec<u32>),
    Rendezvous,
    MultiProbe(MultiProbe),
    /// Slot → endpoint.
    Maglev(Vec<u32>),
}

/// An immutable key → endpoint map over one endpoint set. Endpoint `i` is the `i`-th of the
/// list it was built from.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Each endpoint's name hash, mixed once more: its rendezvous seed.
    seeds: Vec<u64>,
    /// Each endpoint's weight, when not all are equal.
    weights: Option<Vec<f64>>,
    kind: Kind,
}

impl RouteTable {
    /// The table over `endpoints` (each a stable name and a weight; a weight of 0 counts
    /// as 1), built as `config` says.
    pub fn new<'a>(
        endpoints: impl IntoIterator<Item = (&'a str, u32)>,
        config: &RouteConfig,
    ) -> RouteTable {
        let (names, weights): (Vec<&str>, Vec<u32>) = endpoints.into_iter().unzip();
        let ids: Vec<u64> = names.iter().map(|n| hash_str(n)).collect();
        let equal = weights.windows(2).all(|w| w[0].max(1) == w[1].max(1));
        let weights: Option<Vec<f64>> =
            (!equal).then(|| weights.iter().map(|&w| f64::from(w.max(1))).collect());
        let ordinals = if equal && config.ordinals {
            ordinal_slots(&names)
        } else {
            Vec::new()
        };
        let kind = if !ordinals.is_empty() {
            Kind::Jump(ordinals)
        } else if ids.len() <= config.rendezvous_max {
            Kind::Rendezvous
        } else {
            match config.large {
                LargeSet::Maglev => Kind::Maglev(maglev::maglev(
                    &names,
                    &ids,
                    maglev::table_size(config.min_table_size, ids.len()),
                )),
                LargeSet::MultiProbe => {
                    let points: Vec<usize> = match &weights {
                        None => vec![config.points.max(1); ids.len()],
                        Some(w) => {
                            let mean = w.iter().sum::<f64>() / w.len() as f64;
                            w.iter()
                                .map(|w| {
                                    ((config.points.max(1) as f64 * w / mean).round() as usize)
                                        .max(1)
                                })
                                .collect()
                        }
                    };
                    Kind::MultiProbe(MultiProbe::new(&ids, &points, config.probes))
                }
            }
        };
        RouteTable {
            seeds: ids.iter().map(|&id| node_mix(id)).collect(),
            weights,
            kind,
        }
    }

    /// The method in use.
    pub fn method(&self) -> RouteMethod {
        match self.kind {
            Kind::Jump(_) => RouteMethod::Jump,
            Kind::Rendezvous => RouteMethod::Rendezvous,
            Kind::MultiProbe(_) => RouteMethod::MultiProbe,
            Kind::Maglev(_) => RouteMethod::Maglev,
        }
    }

    /// Endpoints in the table.
    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    /// Whether the table has no endpoint.
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// Maglev: the table size (0 for the other methods).
    pub fn table_size(&self) -> usize {
        match &self.kind {
            Kind::Maglev(t) => t.len(),
            _ => 0,
        }
    }

    /// The hash of a key, as [`RouteTable::route`] takes it.
    pub fn key_hash(key: &str) -> u64 {
        hash_str(key)
    }

    /// The endpoint owning the key whose hash is `key` (`None` when the table is empty).
    pub fn route(&self, key: u64) -> Option<usize> {
        self.route_where(key, |_| true)
    }

    /// The key's endpoint among those for which `usable` holds: its own endpoint if usable,
    /// else the next in the key's order (rendezvous: the next highest score; multi-probe:
    /// the next closest probe, then rendezvous; Maglev: the next slots of the table).
    /// `None` when none is usable.
    pub fn route_where(&self, key: u64, mut usable: impl FnMut(usize) -> bool) -> Option<usize> {
        if self.seeds.is_empty() {
            return None;
        }
        match &self.kind {
            Kind::Jump(ordinals) => {
                // A hole or an unusable endpoint makes the key jump again (the same
                // sequence on every client). After many misses, rendezvous among the usable.
                let mut h = key;
                for _ in 0..64 {
                    let i = ordinals[jump(h, ordinals.len())];
                    if i != u32::MAX && usable(i as usize) {
                        return Some(i as usize);
                    }
                    h = mix64(h ^ 0x6a75_6d70);
                }
                self.rendezvous(key, usable)
            }
            Kind::Rendezvous => {
                let first = match &self.weights {
                    None => self.top_score(key),
                    Some(_) => return self.rendezvous(key, usable),
                };
                if usable(first) {
                    return Some(first);
                }
                self.rendezvous(key, usable)
            }
            Kind::MultiProbe(ring) => {
                let first = ring.route(key)?;
                if usable(first) {
                    return Some(first);
                }
                ring.order(key)
                    .into_iter()
                    .find(|&i| usable(i))
                    .or_else(|| self.rendezvous(key, usable))
            }
            Kind::Maglev(table) => {
                let m = table.len();
                let start = (key % m as u64) as usize;
                (0..m)
                    .map(|step| table[(start + step) % m] as usize)
                    .find(|&i| usable(i))
            }
        }
    }

    /// The endpoint with the highest unweighted rendezvous score: the hot loop, one
    /// multiply per endpoint and no call to `usable`.
    /// Four independent running maxima, so that the compare of one endpoint does not wait
    /// for the previous one's; ties go to the lower index, as in a single pass.
    #[inline]
    fn top_score(&self, key: u64) -> usize {
        let mut best = [(0u64, 0usize); 4];
        let chunks = self.seeds.chunks_exact(4);
        let rest = chunks.remainder();
        for (c, seeds) in chunks.enumerate() {
            for lane in 0..4 {
                let s = fold(key ^ seeds[lane]);
                if s > best[lane].0 {
                    best[lane] = (s, c * 4 + lane);
                }
            }
        }
        let base = self.seeds.len() - rest.len();
        for (j, &seed) in rest.iter().enumerate() {
            let s = fold(key ^ seed);
            if s > best[j].0 {
                best[j] = (s, base + j);
            }
        }
        let mut top = best[0];
        for &(s, i) in &best[1..] {
            if s > top.0 || (s == top.0 && i < top.1) {
                top = (s, i);
            }
        }
        top.1
    }

    /// The highest rendezvous score among the usable endpoints.
    fn rendezvous(&self, key: u64, mut usable: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        match &self.weights {
            None => {
                let mut best_raw = 0u64;
                for (i, seed) in self.seeds.iter().enumerate() {
                    let s = fold(key ^ seed);
                    if (best.is_none() || s > best_raw) && usable(i) {
                        best = Some((i, 0.0));
                        best_raw = s;
                    }
                }
            }
            Some(weights) => {
                for (i, (seed, w)) in self.seeds.iter().zip(weights).enumerate() {
                    // Weighted HRW: the largest -w / ln(u), u uniform in (0, 1).
                    let s = -w / unit(fold(key ^ seed)).ln();
                    if best.is_none_or(|(_, b)| s > b) && usable(i) {
                        best = Some((i, s));
                    }
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Each endpoint's share of the key space: exact slot counts for Maglev; for
    /// multi-probe, the exact share with the probes taken as independent uniform positions;
    /// for rendezvous and jump, the weight share (its expectation; sample keys through
    /// [`RouteTable::route`] to measure it).
    pub fn shares(&self) -> Vec<f64> {
        let n = self.seeds.len();
        match &self.kind {
            Kind::Maglev(table) => {
                let mut counts = vec![0usize; n];
                for &i in table {
                    counts[i as usize] += 1;
                }
                let m = table.len() as f64;
                counts.into_iter().map(|c| c as f64 / m).collect()
            }
            Kind::MultiProbe(ring) => ring.shares(n),
            _ => match &self.weights {
                None => vec![1.0 / n as f64; n],
                Some(w) => {
                    let total: f64 = w.iter().sum();
                    w.iter().map(|w| w / total).collect()
                }
            },
        }
    }
}

/// Jump consistent hash: the bucket in `0..n` of `key` (Lamping and Veach, arXiv:1406.2294).
fn jump(mut key: u64, n: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < n as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// Ordinal → endpoint when every name carries a distinct ordinal and they are dense enough
/// (the largest below 2·N + 16, so that holes stay few); else empty.
fn ordinal_slots(names: &[&str]) -> Vec<u32> {
    let mut ords = Vec::with_capacity(names.len());
    for n in names {
        match super::subset::ordinal_of(n) {
            Some(o) if o < 2 * names.len() as u64 + 16 => ords.push(o as usize),
            _ => return Vec::new(),
        }
    }
    let Some(&max) = ords.iter().max() else {
        return Vec::new();
    };
    let mut slots = vec![u32::MAX; max + 1];
    for (i, o) in ords.into_iter().enumerate() {
        if slots[o] != u32::MAX {
            return Vec::new(); // two endpoints share an ordinal
        }
        slots[o] = i as u32;
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names without ordinals (a Deployment's pods).
    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("pod-{i}x")).collect()
    }

    fn table(names: &[String], config: &RouteConfig) -> RouteTable {
        RouteTable::new(names.iter().map(|n| (n.as_str(), 1)), config)
    }

    /// Fraction of `keys` keys whose endpoint name differs between two tables.
    fn moved(a: (&RouteTable, &[String]), b: (&RouteTable, &[String]), keys: u64) -> f64 {
        let moved = (0..keys)
            .filter(|k| {
                let h = super::super::hash::mix64(*k);
                a.1[a.0.route(h).unwrap()] != b.1[b.0.route(h).unwrap()]
            })
            .count();
        moved as f64 / keys as f64
    }

    #[test]
    fn rendezvous_moves_only_the_keys_of_the_changed_endpoint() {
        let config = RouteConfig::default();
        let before = names(20);
        let mut after = before.clone();
        after.push("pod-new".into());
        assert_eq!(table(&after, &config).method(), RouteMethod::Rendezvous);
        let (a, b) = (table(&before, &config), table(&after, &config));
        assert_eq!(a.method(), RouteMethod::Rendezvous);
        for k in 0..20_000u64 {
            let h = super::super::hash::mix64(k);
            let (x, y) = (&before[a.route(h).unwrap()], &after[b.route(h).unwrap()]);
            assert!(x == y || y == "pod-new", "key {k} moved from {x} to {y}");
        }
        let m = moved((&a, &before), (&b, &after), 20_000);
        assert!((m - 1.0 / 21.0).abs() < 0.01, "moved {m}");
        // The order of the list does not matter.
        let mut shuffled = before.clone();
        shuffled.reverse();
        let c = table(&shuffled, &config);
        assert_eq!(moved((&a, &before), (&c, &shuffled), 5_000), 0.0);
    }

    #[test]
    fn rendezvous_fast_path_agrees_with_the_full_scan() {
        // Sizes around the four-lane chunks, so that the remainder is exercised.
        for n in 1..=13 {
            let t = table(&names(n), &RouteConfig::default());
            assert_eq!(t.method(), RouteMethod::Rendezvous);
            for k in 0..2_000u64 {
                let h = super::super::hash::mix64(k);
                assert_eq!(
                    Some(t.top_score(h)),
                    t.rendezvous(h, |_| true),
                    "n={n} key {k}"
                );
            }
        }
    }

    #[test]
    fn weighted_rendezvous_follows_the_weights() {
        let t = RouteTable::new([("a", 1), ("b", 3)], &RouteConfig::default());
        let on_b = (0..40_000u64)
            .filter(|k| t.route(super::super::hash::mix64(*k)) == Some(1))
            .count() as f64
            / 40_000.0;
        assert!((on_b - 0.75).abs() < 0.02, "b got {on_b}");
        assert_eq!(t.shares(), vec![0.25, 0.75]);
    }

    #[test]
    fn maglev_is_balanced_and_independent_of_list_order() {
        let config = RouteConfig {
            rendezvous_max: 4,
            large: LargeSet::Maglev,
            min_table_size: 1009,
            ..RouteConfig::default()
        };
        let n = names(10);
        let t = table(&n, &config);
        assert_eq!(t.method(), RouteMethod::Maglev);
        assert_eq!(t.table_size(), 1009);
        let shares = t.shares();
        for s in &shares {
            assert!((s * 1009.0 - 100.9).abs() <= 1.0, "{shares:?}");
        }
        let mut rev = n.clone();
        rev.reverse();
        let r = table(&rev, &config);
        assert_eq!(moved((&t, &n), (&r, &rev), 5_000), 0.0);
    }

    #[test]
    fn jump_over_ordinals_moves_only_the_keys_of_the_changed_endpoint() {
        let config = RouteConfig::default();
        let web = |n: usize| (0..n).map(|i| format!("web-{i}")).collect::<Vec<_>>();
        let before = web(300);
        let a = table(&before, &config);
        assert_eq!(a.method(), RouteMethod::Jump);
        // Added at the end, removed from the middle, listed in any order.
        let mut after = web(301);
        after.reverse();
        let fewer: Vec<String> = before.iter().filter(|n| *n != "web-150").cloned().collect();
        let (b, c) = (table(&after, &config), table(&fewer, &config));
        let (mut to_new, mut from_gone) = (0, 0);
        for k in 0..30_000u64 {
            let h = super::super::hash::mix64(k);
            let x = &before[a.route(h).unwrap()];
            let y = &after[b.route(h).unwrap()];
            assert!(x == y || y == "web-300", "key {k}: {x} → {y}");
            to_new += usize::from(y == "web-300");
            let z = &fewer[c.route(h).unwrap()];
            assert!(x == z || x == "web-150", "key {k}: {x} → {z}");
            from_gone += usize::from(x == "web-150");
        }
        for got in [to_new, from_gone] {
            assert!(
                (60..=140).contains(&got),
                "{got} of 30000, expected about 100"
            );
        }
        // Weights, duplicate or missing ordinals: not jump.
        let w = RouteTable::new([("web-0", 1), ("web-1", 2)], &config);
        assert_eq!(w.method(), RouteMethod::Rendezvous);
        let d = RouteTable::new([("web-0", 1), ("db-0", 1)], &config);
        assert_eq!(d.method(), RouteMethod::Rendezvous);
        let off = RouteConfig {
            ordinals: false,
            ..RouteConfig::default()
        };
        assert_eq!(table(&before, &off).method(), RouteMethod::MultiProbe); // 300 > 48
    }

    #[test]
    fn multiprobe_moves_only_the_keys_of_the_changed_endpoint() {
        let config = RouteConfig::default();
        let before = names(400);
        let a = table(&before, &config);
        assert_eq!(a.method(), RouteMethod::MultiProbe);
        let mut after = before.clone();
        after.push("pod-new".into());
        let fewer: Vec<String> = before
            .iter()
            .filter(|n| *n != "pod-200x")
            .cloned()
            .collect();
        let (b, c) = (table(&after, &config), table(&fewer, &config));
        let keys = 100_000u64;
        let (mut to_new, mut from_gone) = (0u64, 0u64);
        for k in 0..keys {
            let h = super::super::hash::mix64(k);
            let x = &before[a.route(h).unwrap()];
            let y = &after[b.route(h).unwrap()];
            assert!(x == y || y == "pod-new", "key {k}: {x} → {y}");
            to_new += u64::from(y == "pod-new");
            let z = &fewer[c.route(h).unwrap()];
            assert!(x == z || x == "pod-200x", "key {k}: {x} → {z}");
            from_gone += u64::from(x == "pod-200x");
        }
        // The minimum is 1/401 and 1/400 of the keys (about 250); the shares are within a
        // few percent of even, sampling adds about ±6 %.
        for got in [to_new, from_gone] {
            let ratio = got as f64 / (keys as f64 / 400.0);
            assert!(
                (0.55..=1.25).contains(&ratio),
                "moved {got}: {ratio}× the minimum"
            );
        }
        // Exact shares: within 5 % of even at the largest.
        let max = a.shares().iter().cloned().fold(0.0, f64::max) * 400.0;
        assert!(max <= 1.05, "max/mean {max}");
        // The order of the list does not matter.
        let mut rev = before.clone();
        rev.reverse();
        assert_eq!(
            moved((&a, &before), (&table(&rev, &config), &rev), 5_000),
            0.0
        );
    }

    /// Multi-probe routes of 100 000 keys, folded into one FNV-1a value per size: a change
    /// here reroutes keys of deployed fleets. The values are those of every earlier layout
    /// of the lookup table (24-byte cells, then two-byte starts into 33-bit packed points).
    #[test]
    fn multiprobe_routes_are_stable_across_table_layouts() {
        for (n, want) in [
            (100, 0x8c13_5bf9_d4fb_965c_u64),
            (1000, 0xfb74_31f8_91c3_5b54),
            (3000, 0x535c_0598_ee3c_966d),
        ] {
            let t = table(&names(n), &RouteConfig::default());
            assert_eq!(t.method(), RouteMethod::MultiProbe);
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for k in 0..100_000u64 {
                let i = t.route(RouteTable::key_hash(&format!("user-{k}"))).unwrap() as u64;
                h = (h ^ i).wrapping_mul(0x0000_0100_0000_01b3);
            }
            assert_eq!(h, want, "N={n}: routes changed");
        }
    }

    #[test]
    fn weighted_multiprobe_follows_the_weights_roughly() {
        let config = RouteConfig {
            rendezvous_max: 4,
            ..RouteConfig::default()
        };
        let n = names(200);
        // Every tenth endpoint weighs 3.
        let t = RouteTable::new(
            n.iter()
                .enumerate()
                .map(|(i, s)| (s.as_str(), if i % 10 == 0 { 3 } else { 1 })),
            &config,
        );
        assert_eq!(t.method(), RouteMethod::MultiProbe);
        let shares = t.shares();
        let heavy: f64 = shares.iter().step_by(10).sum::<f64>() / 20.0;
        let light: f64 = (shares.iter().sum::<f64>() - heavy * 20.0) / 180.0;
        let ratio = heavy / light;
        assert!((2.5..=3.5).contains(&ratio), "heavy/light {ratio}");
    }

    #[test]
    fn route_where_falls_back_in_key_order() {
        for (max, large) in [
            (256, LargeSet::MultiProbe),
            (2, LargeSet::MultiProbe),
            (2, LargeSet::Maglev),
            (100, LargeSet::MultiProbe),
        ] {
            let config = RouteConfig {
                rendezvous_max: max,
                large,
                min_table_size: 101,
                ..RouteConfig::default()
            };
            let n = if max == 256 {
                (0..5).map(|i| format!("web-{i}")).collect()
            } else {
                names(5)
            };
            let t = table(&n, &config);
            for k in 0..500u64 {
                let h = super::super::hash::mix64(k);
                let first = t.route(h).unwrap();
                let second = t.route_where(h, |i| i != first).unwrap();
                assert_ne!(first, second);
                // Consistent: the fallback for a key is always the same endpoint.
                assert_eq!(t.route_where(h, |i| i != first), Some(second));
            }
            assert_eq!(t.route_where(7, |_| false), None);
        }
        assert_eq!(table(&[], &RouteConfig::default()).route(1), None);
    }
}
