//! Stable 64-bit hashing for routing and subsetting: the same string gives the same hash in
//! every process, build and version (never `std`'s randomly seeded hasher), so that every
//! client of a fleet agrees on where a key or a subset goes.
//!
//! FNV-1a over the bytes, finished with the SplitMix64 mixer (full avalanche); pairs are
//! combined by mixing again, which is what rendezvous scores need.

/// The SplitMix64 finalizer: a bijection on `u64` with full avalanche.
#[inline]
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The stable hash of a string (a routing key, an endpoint name, a client id).
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// The hash of the pair `(a, b)`, both already hashed: the rendezvous score of key `a` on
/// node `b` (not symmetric).
#[inline]
pub(crate) fn pair(a: u64, b: u64) -> u64 {
    mix64(a ^ node_mix(b))
}

/// The node half of [`pair`], to compute once per node: `pair(a, b) == mix64(a ^ node_mix(b))`.
#[inline]
pub(crate) fn node_mix(b: u64) -> u64 {
    mix64(b.rotate_left(17))
}

/// A one-multiply mixer for values that are already hashes (a key hash xored with a
/// per-endpoint seed): the high and low halves of the 128-bit product with an odd constant,
/// folded together (wyhash's "mum"). Every input bit reaches the high half through the
/// product's carries, which a plain 64-bit multiply would not give the low output bits.
#[inline(always)]
pub(crate) fn fold(x: u64) -> u64 {
    let p = u128::from(x) * 0x9e37_79b9_7f4a_7c15_u128;
    (p as u64) ^ ((p >> 64) as u64)
}

/// A hash as a number in the open interval (0, 1).
#[inline]
pub(crate) fn unit(h: u64) -> f64 {
    ((h >> 12) as f64 + 0.5) / (1u64 << 52) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_across_builds() {
        // Fixed values: a change here reroutes every key of every deployed fleet.
        assert_eq!(hash_str(""), mix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_str("pod-0"), 0xbc3c746fa6d63d82);
        assert_ne!(hash_str("pod-0"), hash_str("pod-1"));
        assert_ne!(pair(1, 2), pair(2, 1));
        let u = unit(u64::MAX);
        assert!(u < 1.0 && unit(0) > 0.0);
    }
}
