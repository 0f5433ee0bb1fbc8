//! Maglev hashing (Eisenbud et al., NSDI 2016, §3.4): a lookup table of M slots (M prime,
//! M ≥ 100·N), filled by the endpoints taking turns, each claiming the next free slot of its
//! own permutation `offset + j·skip mod M`. Every endpoint gets ⌊M/N⌋ or ⌈M/N⌉ slots and a
//! pick is one array read, but the fill is not minimally disruptive: one endpoint more
//! shifts every later turn, and several times the minimum of keys move.

use super::super::hash::mix64;

/// The Maglev table of at least `min_size` slots (the next prime): each endpoint, in the
/// canonical order (by name), takes turns claiming the next free slot of its own
/// permutation `offset + j·skip mod M`.
pub(crate) fn maglev(names: &[&str], ids: &[u64], min_size: usize) -> Vec<u32> {
    let m = next_prime(min_size.max(ids.len()).max(3));
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|&a, &b| names[a].cmp(names[b]));
    let perms: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let offset = mix64(ids[i] ^ 0x6f66_6673) % m as u64;
            let skip = mix64(ids[i] ^ 0x736b_6970) % (m as u64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    // Each endpoint's current place in its permutation, stepped by addition (no division
    // in the loop).
    let mut pos: Vec<usize> = perms.iter().map(|&(o, _)| o as usize).collect();
    let skips: Vec<usize> = perms.iter().map(|&(_, s)| s as usize).collect();
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    'fill: loop {
        for (turn, &i) in order.iter().enumerate() {
            let (mut c, skip) = (pos[turn], skips[turn]);
            while table[c] != u32::MAX {
                c += skip;
                if c >= m {
                    c -= m;
                }
            }
            table[c] = i as u32;
            c += skip;
            if c >= m {
                c -= m;
            }
            pos[turn] = c;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table
}

/// The Maglev table size for `n` endpoints: the first prime ≥ `min` on a fixed ladder
/// (`min`, then doubling), stopping at the first ≥ 100·n. The size must not follow N
/// exactly: a new size remaps every key, so it changes only when N crosses a step.
pub(crate) fn table_size(min: usize, n: usize) -> usize {
    let mut size = min.max(3);
    while size < 100 * n {
        size *= 2;
    }
    next_prime(size)
}

fn next_prime(mut n: usize) -> usize {
    fn is_prime(n: usize) -> bool {
        if n < 2 {
            return false;
        }
        let mut d = 2;
        while d * d <= n {
            if n.is_multiple_of(d) {
                return false;
            }
            d += 1;
        }
        true
    }
    while !is_prime(n) {
        n += 1;
    }
    n
}
