//! Multi-probe consistent hashing (Appleton and O'Reilly, arXiv:1505.00062): each endpoint
//! puts a few points on a 32-bit ring; a key hashes to `probes` positions and goes to the
//! point that follows one of them most closely.
//!
//! Like rendezvous hashing, a key's endpoint is the best-scoring one under a score that
//! depends only on the key and that endpoint's points, so when an endpoint comes or goes
//! only its own keys move: the minimum. Unlike a plain ring, the probes even out the shares:
//! with 32 probes and 4 points per endpoint the largest share is about 1.035× the mean and
//! the smallest about 0.55–0.65× at any N (computed exactly by [`MultiProbe::shares`]). A
//! pick costs `probes` lookups, each one read of a cell table with about two cells per
//! point; a rebuild sorts N·points values.

use super::super::hash::{fold, mix64};

/// The probe seeds: the `i`-th probe of key `k` is at `fold(k ^ SEEDS[i])`.
const SEEDS: [u64; MAX_PROBES] = seeds();

/// The most probes a key may use.
pub(crate) const MAX_PROBES: usize = 64;

const fn seeds() -> [u64; MAX_PROBES] {
    let mut s = [0u64; MAX_PROBES];
    let mut i = 0;
    while i < MAX_PROBES {
        s[i] = mix64(0x6d70_726f_6265 ^ (i as u64));
        i += 1;
    }
    s
}

/// A multi-probe ring over one endpoint set.
///
/// A candidate (a probe's successor) is packed as `distance << 32 | rank`, where `rank` is
/// the owner's place among the endpoints sorted by name hash: the smallest packed value is
/// the closest point, ties going to the same endpoint on every client whatever the order of
/// its list.
#[derive(Debug, Clone)]
pub(crate) struct MultiProbe {
    /// Ring positions (32-bit), ascending.
    points: Vec<u32>,
    /// The rank of the endpoint owning each point.
    ranks: Vec<u32>,
    /// Rank → index in the list the ring was built from.
    index_of: Vec<u32>,
    /// Cell `c` (the top bits of a position) → the first two points at or after the cell's
    /// start, each as `position << 32 | rank` (`u64::MAX` past the last point): one memory
    /// read answers almost every lookup.
    cells: Vec<[u64; 2]>,
    shift: u32,
    probes: usize,
}

impl MultiProbe {
    /// The ring over endpoints with these name hashes, each with `points[i]` points.
    pub(crate) fn new(ids: &[u64], points: &[usize], probes: usize) -> MultiProbe {
        let mut index_of: Vec<u32> = (0..ids.len() as u32).collect();
        index_of.sort_unstable_by_key(|&i| (ids[i as usize], i));
        let mut ring: Vec<(u32, u32)> = Vec::with_capacity(points.iter().sum());
        for (rank, &i) in index_of.iter().enumerate() {
            let id = ids[i as usize];
            for j in 0..points[i as usize] as u64 {
                let pos = (mix64(id ^ j.wrapping_mul(0x9e37_79b9)) >> 32) as u32;
                ring.push((pos, rank as u32));
            }
        }
        // Equal positions are ordered by rank, not by list order, so that every client
        // agrees; the second of two equal points never wins a key.
        ring.sort_unstable();
        // About two cells per point.
        let bits = (usize::BITS - (ring.len() * 2).max(2).leading_zeros()).min(24);
        let shift = 32 - bits;
        let packed = |i: usize| {
            ring.get(i)
                .map_or(u64::MAX, |&(p, r)| u64::from(p) << 32 | u64::from(r))
        };
        let mut cells = Vec::with_capacity(1 << bits);
        let mut next = 0usize;
        for c in 0..1u64 << bits {
            let start = (c << shift) as u32;
            while next < ring.len() && ring[next].0 < start {
                next += 1;
            }
            cells.push([packed(next), packed(next + 1)]);
        }
        MultiProbe {
            points: ring.iter().map(|&(p, _)| p).collect(),
            ranks: ring.iter().map(|&(_, r)| r).collect(),
            index_of,
            cells,
            shift,
            probes: probes.clamp(1, MAX_PROBES),
        }
    }

    /// The probe positions of a key.
    #[inline(always)]
    fn probe(key: u64, seed: u64) -> u32 {
        (fold(key ^ seed) >> 32) as u32
    }

    /// The point following position `x` (the first at or after it, wrapping), packed as
    /// `distance << 32 | rank`. The ring is not empty.
    #[inline(always)]
    fn successor(&self, x: u32) -> u64 {
        let [first, second] = self.cells[(x >> self.shift) as usize];
        let at = u64::from(x) << 32;
        // `first >= at` exactly when the first point's position is at or after x.
        let p = if first >= at { first } else { second };
        if p >= at && p >> 32 != u64::from(u32::MAX) {
            return p - at;
        }
        self.successor_slow(x)
    }

    /// [`MultiProbe::successor`] past the cell's two points or past the last point.
    #[cold]
    fn successor_slow(&self, x: u32) -> u64 {
        let i = self.points.partition_point(|&p| p < x);
        let i = if i == self.points.len() { 0 } else { i };
        u64::from(self.points[i].wrapping_sub(x)) << 32 | u64::from(self.ranks[i])
    }

    /// The endpoint of the key whose hash is `key` (`None` for an empty ring).
    #[inline]
    pub(crate) fn route(&self, key: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        // Two independent running minima, so that one compare does not wait for the
        // previous one.
        let mut best = [u64::MAX; 2];
        for (n, &seed) in SEEDS[..self.probes].iter().enumerate() {
            let c = self.successor(Self::probe(key, seed));
            best[n & 1] = best[n & 1].min(c);
        }
        Some(self.index_of[(best[0].min(best[1]) & 0xffff_ffff) as usize] as usize)
    }

    /// The key's endpoints in its order: by the distance from each probe to its point,
    /// closest first, each endpoint once.
    pub(crate) fn order(&self, key: u64) -> Vec<usize> {
        if self.points.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<u64> = SEEDS[..self.probes]
            .iter()
            .map(|&seed| self.successor(Self::probe(key, seed)))
            .collect();
        found.sort_unstable();
        let mut out: Vec<usize> = Vec::with_capacity(found.len());
        for c in found {
            let i = self.index_of[(c & 0xffff_ffff) as usize] as usize;
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }

    /// Each endpoint's share of the key space, exactly, with the probes taken as
    /// independent uniform positions: a probe landing in the gap of length g before a point
    /// is at a distance uniform in [0, g), so with F(d) = Σ min(d, g_j) the chance that a
    /// given point wins is ∫₀^g P·(1 − F(d))^(P−1) dd, integrated piece by piece over the
    /// sorted gaps.
    pub(crate) fn shares(&self, endpoints: usize) -> Vec<f64> {
        let n = self.points.len();
        let mut out = vec![0.0; endpoints];
        if n == 0 {
            return out;
        }
        let scale = 2f64.powi(-32);
        let mut gaps: Vec<(f64, u32)> = (0..n)
            .map(|i| {
                let prev = self.points[(i + n - 1) % n];
                let g = self.points[i].wrapping_sub(prev);
                // Wrapping: the gap before the first point runs from the last one.
                // A single point owns the whole ring.
                let g = if n == 1 { 1.0 } else { f64::from(g) * scale };
                (g, self.index_of[self.ranks[i] as usize])
            })
            .collect();
        gaps.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let p = self.probes as i32;
        let (mut below, mut from, mut integral) = (0.0f64, 0.0f64, 0.0f64);
        for (j, &(g, owner)) in gaps.iter().enumerate() {
            // On [from, g] the gaps longer than d number n − j: F(d) = below + (n − j)·d.
            let longer = (n - j) as f64;
            let at = |d: f64| (1.0 - (below + longer * d)).max(0.0).powi(p);
            integral += (at(from) - at(g)) / longer;
            out[owner as usize] += integral;
            below += g;
            from = g;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize, points: usize, probes: usize) -> MultiProbe {
        let ids: Vec<u64> = (0..n).map(|i| mix64(i as u64 + 1)).collect();
        MultiProbe::new(&ids, &vec![points; n], probes)
    }

    #[test]
    fn exact_shares_sum_to_one_and_match_sampled_keys() {
        let r = ring(50, 4, 32);
        let exact = r.shares(50);
        assert!((exact.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let keys = 400_000u64;
        let mut counts = [0u64; 50];
        for k in 0..keys {
            counts[r.route(mix64(k ^ 0xfeed)).unwrap()] += 1;
        }
        for (e, c) in exact.iter().zip(counts) {
            let sampled = c as f64 / keys as f64;
            // 8000 keys per endpoint: a standard deviation of about 1.1 % of the share.
            assert!(
                (sampled - e).abs() < 0.06 * e,
                "sampled {sampled}, exact {e}"
            );
        }
    }

    #[test]
    fn shares_are_even_with_enough_probes() {
        for n in [10, 300, 1000] {
            let s = ring(n, 4, 32).shares(n);
            let max = s.iter().cloned().fold(0.0, f64::max) * n as f64;
            let min = s.iter().cloned().fold(1.0, f64::min) * n as f64;
            assert!(max <= 1.05, "N={n}: max/mean {max}");
            assert!(min >= 0.4, "N={n}: min/mean {min}");
        }
        // One probe is a plain ring: far from even.
        let s = ring(300, 1, 1).shares(300);
        assert!(s.iter().cloned().fold(0.0, f64::max) * 300.0 > 3.0);
    }

    #[test]
    fn order_starts_with_the_routed_endpoint_and_lists_each_once() {
        let r = ring(20, 4, 32);
        for k in 0..1000u64 {
            let o = r.order(mix64(k));
            assert_eq!(Some(o[0]), r.route(mix64(k)));
            let mut d = o.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), o.len());
        }
        assert_eq!(ring(0, 4, 32).route(1), None);
        assert_eq!(ring(1, 4, 32).shares(1), vec![1.0]);
    }
}
