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
//! a cell table (about sixteen cells per point, each the index of its first point) and one
//! read of the two points from there (a probe past them, about 2 % of keys, takes an exact
//! pass); a rebuild sorts N·points values.

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
    /// Every point packed as `position << 32 | rank`, ascending, followed by the first
    /// [`WINDOW`] points again, so that [`WINDOW`] consecutive entries from any index up to
    /// the ring's length are the next points round the ring (for an empty ring, [`WINDOW`]
    /// times `u64::MAX`). A candidate's distance is `packed − (probe << 32)` with wrapping
    /// arithmetic: round the ring past 2³² without a test.
    packed: Vec<u64>,
    /// Cell `c` (the top bits of a position) → the index in `packed` of the first point at
    /// or after the cell's start: the probe's successor is one of the [`WINDOW`] entries
    /// from there unless the cell holds more points before the probe (rare). A power of two
    /// long; two bytes a cell while the ring fits.
    starts: Starts,
    /// `64 − log2(cells)`: a probe's product shifted by it is its cell.
    shift: u32,
    probes: usize,
}

/// Cells of the lookup table per ring point (rounded up to a power of two of cells). With
/// 16, a cell holds two points or more for about 0.2 % of probes and a probe falls past the
/// two points from its cell's start for about 0.07 % (2 % of keys with 32 probes); with 4
/// (three points a window, 64 KiB at N = 1000) or 8 (two), picks measured slower: the
/// exact pass for more keys cost more than the smaller table saved.
const CELLS_PER_POINT: usize = 16;

/// Points compared per probe: the first at or after the cell's start and the next.
const WINDOW: usize = 2;

/// Points past a window scanned for a probe's successor before a binary search.
const SCAN: usize = 8;

/// The most cells (2²⁰, 2 MiB of two-byte starts: past about 16 000 endpoints of four
/// points a cell holds more than 1/16 of a point on average, and the exact pass runs more
/// often).
const MAX_CELL_BITS: u32 = 20;

/// The cell table's start indices: `u16` while every index fits, else `u32`.
#[derive(Debug, Clone)]
enum Starts {
    Short(Box<[u16]>),
    Long(Box<[u32]>),
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

/// Packed distances at or above this are not successors: a point before the probe (in its
/// cell, so at least 2³² − 2³¹ round the ring), or one more than half the ring away.
const FAR: u64 = 1 << 63;

/// The position half of a packed value or a probe's product.
const POSITION: u64 = !0xffff_ffff;

/// The probe count (the default) whose lookups are written out, not looped (16 pairs).
const FIXED: usize = 32;
const _: () = assert!(FIXED == 2 * 16);

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
        let bits = (usize::BITS - (ring.len() * CELLS_PER_POINT).max(2).leading_zeros())
            .min(MAX_CELL_BITS);
        let packed: Vec<u64> = if ring.is_empty() {
            vec![u64::MAX; WINDOW]
        } else {
            (0..ring.len() + WINDOW)
                .map(|i| {
                    let (p, r) = ring[i % ring.len()];
                    u64::from(p) << 32 | u64::from(r)
                })
                .collect()
        };
        let mut starts = Vec::with_capacity(1 << bits);
        let mut next = 0usize;
        for c in 0..1u64 << bits {
            let start = (c << (32 - bits)) as u32;
            while next < ring.len() && ring[next].0 < start {
                next += 1;
            }
            starts.push(next as u32);
        }
        let starts = match u16::try_from(ring.len()) {
            Ok(_) => Starts::Short(starts.iter().map(|&s| s as u16).collect()),
            Err(_) => Starts::Long(starts.into_boxed_slice()),
        };
        MultiProbe {
            points: ring.iter().map(|&(p, _)| p).collect(),
            ranks: ring.iter().map(|&(_, r)| r).collect(),
            index_of,
            packed,
            starts,
            shift: 64 - bits,
            probes: probes.clamp(1, MAX_PROBES),
        }
    }

    /// The probe position of a key for one multiplier.
    #[inline(always)]
    fn probe(key: u64, multiplier: u64) -> u32 {
        (key.wrapping_mul(multiplier) >> 32) as u32
    }

    /// The point following position `x` (the first at or after it, wrapping), packed as
    /// `distance << 32 | rank`. The ring is not empty.
    fn successor(&self, x: u32) -> u64 {
        let product = u64::from(x) << 32;
        let s = match &self.starts {
            Starts::Short(v) => v[(product >> self.shift) as usize].index(),
            Starts::Long(v) => v[(product >> self.shift) as usize].index(),
        };
        match Self::closer(&self.packed, s, product) {
            d if d < FAR => d,
            _ => self.successor_past(s + WINDOW, x),
        }
    }

    /// [`MultiProbe::successor`] when the window from index `s − WINDOW` is before `x`:
    /// the next few points (the rest of a crowded cell), else a binary search.
    #[cold]
    fn successor_past(&self, from: usize, x: u32) -> u64 {
        let at = u64::from(x) << 32;
        self.packed
            .iter()
            .skip(from)
            .take(SCAN)
            .map(|&q| q.wrapping_sub(at))
            .find(|&d| d < FAR)
            .unwrap_or_else(|| self.successor_slow(x))
    }

    /// The smallest packed distance from the probe whose product is `product` to the
    /// [`WINDOW`] points from index `s`; at least [`FAR`] when all are before it.
    #[inline(always)]
    fn closer(packed: &[u64], s: usize, product: u64) -> u64 {
        let at = product & POSITION;
        packed[s..s + WINDOW]
            .iter()
            .fold(u64::MAX, |d, &q| d.min(q.wrapping_sub(at)))
    }

    /// [`MultiProbe::successor`] by binary search.
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
        let rank = match &self.starts {
            Starts::Short(v) => self.nearest(key, v),
            Starts::Long(v) => self.nearest(key, v),
        };
        Some(self.index_of[rank] as usize)
    }

    /// The rank of the key's closest point, through the cell table `starts`.
    #[inline(always)]
    fn nearest<S: Start>(&self, key: u64, starts: &[S]) -> usize {
        // The hot loop, without a branch: `far` collects whether some probe fell past its
        // window (rare), which the exact loop then handles. The table is a power of two
        // long, so the mask keeps the index in bounds without a check.
        let mut far = 0u64;
        let (shift, mask) = (self.shift, starts.len() - 1);
        let packed = &self.packed[..];
        let mut lookup = |m: u64| {
            let product = key.wrapping_mul(m);
            let s = starts[(product >> shift) as usize & mask].index();
            let d = Self::closer(packed, s, product);
            far |= d;
            d
        };
        let mut best = if self.probes == FIXED {
            // Written out: no loop counter, the multipliers as constants, fewer registers
            // spilled (about 5 % faster picks than the same loop rolled up).
            let (mut b0, mut b1) = (u64::MAX, u64::MAX);
            macro_rules! pairs {
                ($($i:literal)*) => {$(
                    b0 = b0.min(lookup(MULTIPLIERS[2 * $i]));
                    b1 = b1.min(lookup(MULTIPLIERS[2 * $i + 1]));
                )*};
            }
            pairs!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
            b0.min(b1)
        } else {
            Self::min_over(&MULTIPLIERS[..self.probes], lookup)
        };
        if far >= FAR {
            best = MULTIPLIERS[..self.probes]
                .iter()
                .map(|&m| self.successor(Self::probe(key, m)))
                .min()
                .unwrap_or(u64::MAX);
        }
        (best & 0xffff_ffff) as usize
    }

    /// The smallest `lookup(m)` over the multipliers, in two independent running minima
    /// (so that one compare does not wait for the previous one).
    #[inline(always)]
    fn min_over(multipliers: &[u64], mut lookup: impl FnMut(u64) -> u64) -> u64 {
        let mut best = [u64::MAX; 2];
        let mut pairs = multipliers.chunks_exact(2);
        for m in &mut pairs {
            best[0] = best[0].min(lookup(m[0]));
            best[1] = best[1].min(lookup(m[1]));
        }
        if let [m] = pairs.remainder() {
            best[0] = best[0].min(lookup(*m));
        }
        best[0].min(best[1])
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

    /// Whether a probe at `x` falls past its window (the exact pass runs for its key).
    fn past_window(r: &MultiProbe, x: u32) -> bool {
        let product = u64::from(x) << 32;
        let s = match &r.starts {
            Starts::Short(v) => v[(product >> r.shift) as usize].index(),
            Starts::Long(v) => v[(product >> r.shift) as usize].index(),
        };
        MultiProbe::closer(&r.packed, s, product) >= FAR
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
                far += usize::from(
                    MULTIPLIERS[..32]
                        .iter()
                        .any(|&m| past_window(&r, MultiProbe::probe(key, m))),
                );
            }
            // The exact pass runs for few keys (a probe past the two points from its
            // cell's start: about 0.07 % of probes), except on tiny rings, whose
            // successors are often more than half the ring away.
            if n * points >= 50 {
                assert!(far < 20_000 / 20, "N={n}: {far} keys took the exact pass");
            }
        }
    }

    /// The compact lookup routes every key as the definition does (binary searches), at
    /// the sizes the simulation prints; the same definition as the earlier 24-byte cells
    /// and the 33-bit packed table, so routing did not change.
    #[test]
    fn cell_lookups_route_like_the_definition() {
        for n in [10, 64, 100, 128, 300, 1000, 3000] {
            let r = ring(n, 4, 32);
            let mut rng = 0x5eed ^ n as u64;
            for _ in 0..60_000u64 {
                rng = mix64(rng);
                assert_eq!(
                    r.route(rng).unwrap(),
                    by_search(&r, rng),
                    "N={n} key {rng:#x}"
                );
            }
        }
        // Other probe counts take the loop that is not unrolled.
        for probes in [1, 7, 21, 64] {
            let r = ring(200, 4, probes);
            for k in 0..5_000u64 {
                let key = mix64(k);
                assert_eq!(r.route(key).unwrap(), by_search(&r, key), "probes={probes}");
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
