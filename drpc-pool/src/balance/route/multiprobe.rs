//! Multi-probe consistent hashing (Appleton and O'Reilly, arXiv:1505.00062): each endpoint
//! puts a few points on a 64-bit ring; a key hashes to `probes` positions and goes to the
//! point that follows one of them most closely.
//!
//! Like rendezvous hashing, a key's endpoint is the best-scoring one under a score that
//! depends only on the key and that endpoint's points, so when an endpoint comes or goes
//! only its own keys move: the minimum. Unlike a plain ring, the probes even out the shares:
//! with 32 probes and 4 points per endpoint the largest share is about 1.035× the mean at
//! any N (computed exactly by [`MultiProbe::shares`]). A pick costs `probes` lookups in a
//! sorted array through a bucket index (O(1) each); a rebuild sorts N·points values.

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
#[derive(Debug, Clone)]
pub(crate) struct MultiProbe {
    /// Ring positions, ascending.
    points: Vec<u64>,
    /// The endpoint owning each point.
    owners: Vec<u32>,
    /// Bucket `b` (the top `64 - shift` bits of a position) → the first point at or after
    /// the bucket's start; one entry more at the end.
    index: Vec<u32>,
    shift: u32,
    probes: usize,
}

impl MultiProbe {
    /// The ring over endpoints with these name hashes, each with `points[i]` points.
    pub(crate) fn new(ids: &[u64], points: &[usize], probes: usize) -> MultiProbe {
        let mut ring: Vec<(u64, u32)> = Vec::with_capacity(points.iter().sum());
        for (i, (&id, &p)) in ids.iter().zip(points).enumerate() {
            for j in 0..p as u64 {
                ring.push((mix64(id ^ j.wrapping_mul(0x9e37_79b9)), i as u32));
            }
        }
        // Ties (equal positions) resolved by endpoint index would depend on list order:
        // by the owner's id instead.
        ring.sort_unstable_by_key(|&(p, i)| (p, ids[i as usize]));
        // About two buckets per point: a lookup scans one point or two.
        let bits = (usize::BITS - (ring.len() * 2).max(2).leading_zeros()).min(31);
        let shift = 64 - bits;
        let buckets = 1usize << bits;
        let mut index = Vec::with_capacity(buckets + 1);
        let mut next = 0usize;
        for b in 0..buckets as u64 {
            let start = b << shift;
            while next < ring.len() && ring[next].0 < start {
                next += 1;
            }
            index.push(next as u32);
        }
        index.push(ring.len() as u32);
        MultiProbe {
            points: ring.iter().map(|&(p, _)| p).collect(),
            owners: ring.iter().map(|&(_, i)| i).collect(),
            index,
            shift,
            probes: probes.clamp(1, MAX_PROBES),
        }
    }

    /// The point following position `x` (the first at or after it, wrapping) and the
    /// distance to it.
    #[inline(always)]
    fn successor(&self, x: u64) -> (usize, u64) {
        let mut i = self.index[(x >> self.shift) as usize] as usize;
        while i < self.points.len() && self.points[i] < x {
            i += 1;
        }
        if i == self.points.len() {
            i = 0;
        }
        (i, self.points[i].wrapping_sub(x))
    }

    /// The endpoint of the key whose hash is `key` (`None` for an empty ring).
    #[inline]
    pub(crate) fn route(&self, key: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let (mut best, mut best_d) = (0usize, u64::MAX);
        for seed in &SEEDS[..self.probes] {
            let (i, d) = self.successor(fold(key ^ seed));
            if d < best_d {
                best_d = d;
                best = i;
            }
        }
        Some(self.owners[best] as usize)
    }

    /// The key's endpoints in its order: by the distance from each probe to its point,
    /// closest first, each endpoint once.
    pub(crate) fn order(&self, key: u64) -> Vec<usize> {
        let mut found: Vec<(u64, u32)> = SEEDS[..self.probes]
            .iter()
            .filter(|_| !self.points.is_empty())
            .map(|seed| {
                let (i, d) = self.successor(fold(key ^ seed));
                (d, self.owners[i])
            })
            .collect();
        found.sort_unstable();
        let mut out: Vec<usize> = Vec::with_capacity(found.len());
        for (_, o) in found {
            if !out.contains(&(o as usize)) {
                out.push(o as usize);
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
        let scale = 2f64.powi(-64);
        let mut gaps: Vec<(f64, u32)> = (0..n)
            .map(|i| {
                let prev = self.points[(i + n - 1) % n];
                let g = self.points[i].wrapping_sub(prev);
                // A single point owns the whole ring.
                let g = if n == 1 { 1.0 } else { g as f64 * scale };
                (g, self.owners[i])
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
            assert!((sampled - e).abs() < 0.06 * e, "sampled {sampled}, exact {e}");
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
