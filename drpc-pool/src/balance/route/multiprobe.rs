//! Multi-probe consistent hashing (Appleton and O'Reilly, arXiv:1505.00062): each endpoint
//! puts a few points on a 32-bit ring; a key hashes to `probes` positions and goes to the
//! point that follows one of them most closely.
//!
//! Like rendezvous hashing, a key's endpoint is the best-scoring one under a score that
//! depends only on the key and that endpoint's points, so when an endpoint comes or goes
//! only its own keys move: the minimum. Unlike a plain ring, the probes even out the shares:
//! with 32 probes and 4 points per endpoint the largest share is about 1.035× the mean and
//! the smallest about 0.55–0.65× at any N (computed exactly by [`MultiProbe::shares`]). A
//! pick costs `probes` lookups without a branch, each one multiply (the probe), one read of
//! a cell table (about four cells per point, each the index of its first point) and one read
//! of the three points from there; a rebuild sorts N·points values.

use super::super::hash::mix64;

/// The probe multipliers: the `i`-th probe of key `k` is the top 32 bits of
/// `k · MULTIPLIERS[i]` (odd constants; `k` is already a full-avalanche hash).
const MULTIPLIERS: [u64; MAX_PROBES] = multipliers();

/// The most probes a key may use.
pub(crate) const MAX_PROBES: usize = 64;

const fn multipliers() -> [u64; MAX_PROBES] {
    let mut s = [0u64; MAX_PROBES];
    let mut i = 0;
    while i < MAX_PROBES {
        s[i] = mix64(0x6d70_726f_6265 ^ (i as u64)) | 1;
        i += 1;
    }
    s
}

/// A multi-probe ring over one endpoint set.
///
/// A candidate (a probe's successor) is packed as `distance << RANK_BITS | rank`, where
/// `rank` is the owner's place among the endpoints sorted by name hash: the smallest packed
/// value is the closest point, ties going to the same endpoint on every client whatever the
/// order of its list.
#[derive(Debug, Clone)]
pub(crate) struct MultiProbe {
    /// Ring positions (32-bit), ascending.
    points: Vec<u32>,
    /// The rank of the endpoint owning each point.
    ranks: Vec<u32>,
    /// Rank → index in the list the ring was built from.
    index_of: Vec<u32>,
    /// Every point packed as `position << RANK_BITS | rank`, ascending, followed by the
    /// first [`CELL`] points again, 2³² further on (33-bit positions), so that [`CELL`]
    /// consecutive entries from any index up to the ring's length are the next points
    /// round the ring without a wrap test (for an empty ring, [`CELL`] times `u64::MAX`).
    packed: Vec<u64>,
    /// Cell `c` (the top bits of a position) → the index in `packed` of the first point at
    /// or after the cell's start: the cell's candidates are the [`CELL`] entries from there.
    /// Two bytes a cell while the ring fits (32 KiB plus 32 KiB of points at N = 1000,
    /// where three packed points per cell took 384 KiB and lived in L2, not L1).
    starts: Starts,
    shift: u32,
    probes: usize,
}

/// The low bits of a packed candidate holding the owner's rank (the other 33 hold a
/// position or distance on the ring, up to 2³²).
const RANK_BITS: u32 = 31;

/// Points per cell of the lookup table.
const CELL: usize = 3;

/// The cell table's start indices: `u16` while every index fits, else `u32`.
#[derive(Debug, Clone)]
enum Starts {
    Short(Vec<u16>),
    Long(Vec<u32>),
}

/// A start index as stored in [`Starts`].
trait Start: Copy {
    fn index(self) -> usize;
}

impl Start for u16 {
    #[inline(always)]
    fn index(self) -> usize {
        usize::from(self)
    }
}

impl Start for u32 {
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

/// Packed distances at or above this are not distances (a point before the probe).
const FAR: u64 = 1 << 63;

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
        // About four cells per point: a cell rarely holds three (0.2 %). At most 2²⁰ cells
        // (4 MiB of starts; past about 65 000 endpoints a probe takes the exact pass more
        // often).
        let bits = (usize::BITS - (ring.len() * 4).max(2).leading_zeros()).min(20);
        let shift = 32 - bits;
        let packed = |i: usize| {
            if ring.is_empty() {
                return u64::MAX;
            }
            let (p, r) = ring[i % ring.len()];
            let wrap = if i >= ring.len() { 1u64 << 32 } else { 0 };
            (u64::from(p) + wrap) << RANK_BITS | u64::from(r)
        };
        let packed: Vec<u64> = (0..ring.len() + CELL).map(packed).collect();
        let mut starts = Vec::with_capacity(1 << bits);
        let mut next = 0usize;
        for c in 0..1u64 << bits {
            let start = (c << shift) as u32;
            while next < ring.len() && ring[next].0 < start {
                next += 1;
            }
            starts.push(next as u32);
        }
        let starts = if ring.len() <= usize::from(u16::MAX) {
            Starts::Short(starts.iter().map(|&s| s as u16).collect())
        } else {
            Starts::Long(starts)
        };
        MultiProbe {
            points: ring.iter().map(|&(p, _)| p).collect(),
            ranks: ring.iter().map(|&(_, r)| r).collect(),
            index_of,
            packed,
            starts,
            shift,
            probes: probes.clamp(1, MAX_PROBES),
        }
    }

    /// The probe position of a key for one multiplier.
    #[inline(always)]
    fn probe(key: u64, multiplier: u64) -> u32 {
        (key.wrapping_mul(multiplier) >> 32) as u32
    }

    /// The point following position `x` (the first at or after it, wrapping), packed as
    /// `distance << RANK_BITS | rank`. The ring is not empty.
    fn successor(&self, x: u32) -> u64 {
        let at = u64::from(x) << RANK_BITS;
        match Self::closer(&self.cell(x), at) {
            d if d < FAR => d,
            _ => self.successor_slow(x),
        }
    }

    /// The candidates of the cell holding position `x`.
    fn cell(&self, x: u32) -> [u64; CELL] {
        let c = (x >> self.shift) as usize;
        let s = match &self.starts {
            Starts::Short(v) => v[c].index(),
            Starts::Long(v) => v[c].index(),
        };
        Self::window(&self.packed, s)
    }

    /// The [`CELL`] packed points from index `s`.
    #[inline(always)]
    fn window(packed: &[u64], s: usize) -> [u64; CELL] {
        let w = &packed[s..s + CELL];
        [w[0], w[1], w[2]]
    }

    /// The distance from `at` to the first of a cell's points at or after it; at least
    /// [`FAR`] when all are before it. Without a branch: a point before `at` wraps to a
    /// distance of at least 2⁶³, and a real distance is below 2³² (packed, below 2⁶³).
    #[inline(always)]
    fn closer(cell: &[u64; CELL], at: u64) -> u64 {
        let [a, b, c] = *cell;
        a.wrapping_sub(at)
            .min(b.wrapping_sub(at))
            .min(c.wrapping_sub(at))
    }

    /// [`MultiProbe::successor`] past the cell's points.
    #[cold]
    fn successor_slow(&self, x: u32) -> u64 {
        let i = self.points.partition_point(|&p| p < x);
        let i = if i == self.points.len() { 0 } else { i };
        u64::from(self.points[i].wrapping_sub(x)) << RANK_BITS | u64::from(self.ranks[i])
    }

    /// The endpoint of the key whose hash is `key` (`None` for an empty ring).
    #[inline]
    pub(crate) fn route(&self, key: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let rank = match &self.starts {
            Starts::Short(v) => self.nearest(key, v),
            Starts::Long(v) => self.nearest(key, v),
        };
        Some(self.index_of[rank] as usize)
    }

    /// The rank of the key's closest point, through the cell table `starts`.
    #[inline(always)]
    fn nearest<S: Start>(&self, key: u64, starts: &[S]) -> usize {
        // The hot loop: no branch but the bounds checks. Two independent running minima,
        // so that one compare does not wait for the previous one; `far` collects whether
        // some probe fell past its cell's points (rare), which the exact loop then handles.
        let mut best = [u64::MAX; 2];
        let mut far = 0u64;
        let shift = self.shift;
        let packed = &self.packed[..];
        let mut lookup = |m: u64| {
            let product = key.wrapping_mul(m);
            let s = starts[(product >> 32 >> shift) as usize].index();
            let at = (product >> (32 - RANK_BITS)) & !((1 << RANK_BITS) - 1);
            let d = Self::closer(&Self::window(packed, s), at);
            far |= d;
            d
        };
        let multipliers = &MULTIPLIERS[..self.probes];
        let mut pairs = multipliers.chunks_exact(2);
        for m in &mut pairs {
            best[0] = best[0].min(lookup(m[0]));
            best[1] = best[1].min(lookup(m[1]));
        }
        if let [m] = pairs.remainder() {
            best[0] = best[0].min(lookup(*m));
        }
        let mut best = best[0].min(best[1]);
        if far >= FAR {
            best = multipliers
                .iter()
                .map(|&m| self.successor(Self::probe(key, m)))
                .min()
                .unwrap_or(u64::MAX);
        }
        (best & ((1 << RANK_BITS) - 1)) as usize
    }

    /// The key's endpoints in its order: by the distance from each probe to its point,
    /// closest first, each endpoint once.
    pub(crate) fn order(&self, key: u64) -> Vec<usize> {
        if self.points.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<u64> = MULTIPLIERS[..self.probes]
            .iter()
            .map(|&m| self.successor(Self::probe(key, m)))
            .collect();
        found.sort_unstable();
        let mut out: Vec<usize> = Vec::with_capacity(found.len());
        for c in found {
            let i = self.index_of[(c & ((1 << RANK_BITS) - 1)) as usize] as usize;
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

    /// The endpoint of a key by binary searches alone: the closest successor over all
    /// probes, ties to the lower rank.
    fn by_search(r: &MultiProbe, key: u64) -> usize {
        let best = MULTIPLIERS[..r.probes]
            .iter()
            .map(|&m| {
                let x = MultiProbe::probe(key, m);
                let i = r.points.partition_point(|&p| p < x) % r.points.len();
                (r.points[i].wrapping_sub(x), r.ranks[i])
            })
            .min()
            .unwrap();
        r.index_of[best.1 as usize] as usize
    }

    #[test]
    fn cell_lookups_agree_with_binary_searches() {
        for (n, points) in [(1, 1), (2, 1), (3, 4), (50, 4), (1000, 4), (300, 16)] {
            let r = ring(n, points, 32);
            let mut far = 0;
            for k in 0..20_000u64 {
                let key = mix64(k ^ 0xc0ffee);
                let fast = r.route(key).unwrap();
                assert_eq!(fast, by_search(&r, key), "N={n} key {k}");
                far += usize::from(MULTIPLIERS[..32].iter().any(|&m| {
                    r.successor(MultiProbe::probe(key, m)) != {
                        let x = MultiProbe::probe(key, m);
                        MultiProbe::closer(&r.cell(x), u64::from(x) << RANK_BITS)
                    }
                }));
            }
            // The exact pass runs for few keys (a probe past its cell's three points).
            assert!(far < 20_000 / 20, "N={n}: {far} keys took the exact pass");
        }
    }

    /// The endpoint of a key through the earlier table (three packed points in each cell,
    /// 24 bytes a cell): the compact table must route every key the same.
    fn by_wide_cells(r: &MultiProbe) -> impl Fn(u64) -> usize + '_ {
        let n = r.points.len();
        let packed = |i: usize| {
            let wrap = if i >= n { 1u64 << 32 } else { 0 };
            (u64::from(r.points[i % n]) + wrap) << RANK_BITS | u64::from(r.ranks[i % n])
        };
        let bits = 32 - r.shift;
        let mut cells: Vec<[u64; CELL]> = Vec::with_capacity(1 << bits);
        let mut next = 0usize;
        for c in 0..1u64 << bits {
            let start = (c << r.shift) as u32;
            while next < n && r.points[next] < start {
                next += 1;
            }
            cells.push([packed(next), packed(next + 1), packed(next + 2)]);
        }
        move |key| {
            let mut far = 0u64;
            let mut best = MULTIPLIERS[..r.probes]
                .iter()
                .map(|&m| {
                    let x = MultiProbe::probe(key, m);
                    let d = MultiProbe::closer(
                        &cells[(x >> r.shift) as usize],
                        u64::from(x) << RANK_BITS,
                    );
                    far |= d;
                    d
                })
                .min()
                .unwrap();
            if far >= FAR {
                best = MULTIPLIERS[..r.probes]
                    .iter()
                    .map(|&m| r.successor_slow(MultiProbe::probe(key, m)))
                    .min()
                    .unwrap();
            }
            r.index_of[(best & ((1 << RANK_BITS) - 1)) as usize] as usize
        }
    }

    #[test]
    fn compact_cells_route_like_wide_cells() {
        // Half a million keys at each size (3.5 million in all); the exact definition
        // (binary searches) on a sample.
        for n in [10, 64, 100, 128, 300, 1000, 3000] {
            let r = ring(n, 4, 32);
            let wide = by_wide_cells(&r);
            let mut rng = 0x5eed ^ n as u64;
            for k in 0..500_000u64 {
                rng = mix64(rng);
                let fast = r.route(rng).unwrap();
                assert_eq!(fast, wide(rng), "N={n} key {rng:#x}");
                if k % 128 == 0 {
                    assert_eq!(fast, by_search(&r, rng), "N={n} key {rng:#x}");
                }
            }
        }
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
