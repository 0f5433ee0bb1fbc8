//! Ring subsetting by client ordinal: clients and backends on one ring at fixed positions,
//! each client taking the `k` backends that follow its own position (its window), and, when
//! the client count is known, a per-backend cap that sheds the overflow of the few backends
//! whose windows collect too many clients.
//!
//! A backend's load under plain windows is the number of client positions in the `k` ring
//! gaps before it. Bit-reversed (van der Corput) positions keep those gaps within a factor of
//! two of each other, but when N is not a power of two a window of `k` gaps can still hold
//! 1.2× the mean (M = 100, N = 300, k = 20). With the client count M known, every client
//! computes the same whole assignment and caps each backend at
//! `max(⌈μ⌉, ⌊1.1·μ⌋)` connections, μ = M·k/N: a backend over the cap keeps the clients for
//! which it is nearest (lowest offset in their window; the highest ordinals go first among
//! equals) and the others each extend their window to the next backend with room. Only the
//! overflow moves, so the windows (and with them the churn when a backend or client comes or
//! goes) stay the plain ring's except next to the few overloaded backends.

use super::super::hash::{hash_str, mix64};
use super::ordinal_of;

/// The van der Corput position of index `i`: its bits reversed, as a fraction of 2^64.
fn vdc(i: u64) -> u64 {
    i.reverse_bits()
}

/// A backend's position on the subsetting ring: its ordinal's van der Corput position, else
/// its name's hash (odd, so it never equals an ordinal's position exactly).
fn position(name: &str) -> u64 {
    match ordinal_of(name) {
        Some(o) => vdc(o),
        None => mix64(hash_str(name)) | 1,
    }
}

/// The backends in ring order: indices into `names`, sorted by position (ties by name hash,
/// then list index, so that every client builds the same ring).
fn ring<S: AsRef<str>>(names: &[S]) -> (Vec<u64>, Vec<usize>) {
    let mut ring: Vec<(u64, u64, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.as_ref();
            (position(s), hash_str(s), i)
        })
        .collect();
    ring.sort_unstable();
    (
        ring.iter().map(|&(p, _, _)| p).collect(),
        ring.iter().map(|&(_, _, i)| i).collect(),
    )
}

/// The ring index of the first backend at or after client `ordinal`'s position.
fn start(positions: &[u64], ordinal: u64) -> usize {
    let me = vdc(ordinal);
    positions.partition_point(|&p| p < me) % positions.len()
}

/// The plain window of client `ordinal`: the `k` backends that follow its position, as
/// indices into `names`. `k` < `names.len()`.
pub(crate) fn window<S: AsRef<str>>(names: &[S], ordinal: u64, k: usize) -> Vec<usize> {
    let (positions, order) = ring(names);
    let s = start(&positions, ordinal);
    (0..k).map(|j| order[(s + j) % order.len()]).collect()
}

/// The most connections a backend takes when `clients` clients each connect to `k` of `n`
/// backends: 1.1× the mean, or the mean rounded up where that is more (integer counts).
pub(crate) fn cap(clients: u64, k: usize, n: usize) -> u64 {
    let total = u128::from(clients) * k as u128;
    let n = n as u128;
    let ceil = total.div_ceil(n);
    let tenth = total * 11 / (n * 10);
    ceil.max(tenth).min(u128::from(u64::MAX)) as u64
}

/// Client `ordinal`'s subset when clients `0..clients` each take `k` of `names` (`k` <
/// `names.len()`, `ordinal` < `clients`), capped as the module describes: indices into
/// `names`. Every client computes the whole assignment, O(M·k + N log N).
pub(crate) fn bounded<S: AsRef<str>>(
    names: &[S],
    ordinal: u64,
    clients: u64,
    k: usize,
) -> Vec<usize> {
    bounded_all(names, clients, k).swap_remove(ordinal as usize)
}

/// Every client's subset (indices into `names`) under [`bounded`], by ordinal.
pub(crate) fn bounded_all<S: AsRef<str>>(names: &[S], clients: u64, k: usize) -> Vec<Vec<usize>> {
    let (positions, order) = ring(names);
    let n = order.len();
    let cap = cap(clients, k, n);
    let m = clients as usize;
    let starts: Vec<usize> = (0..clients).map(|c| start(&positions, c)).collect();
    // Each backend's clients as (offset in the client's window, client), and each client's
    // backends (ring indices) and the farthest offset it has walked.
    let mut members: Vec<Vec<(usize, u32)>> = vec![Vec::new(); n];
    let mut chosen: Vec<Vec<usize>> = Vec::with_capacity(m);
    for (c, &s) in starts.iter().enumerate() {
        let mine: Vec<usize> = (0..k).map(|j| (s + j) % n).collect();
        for (j, &r) in mine.iter().enumerate() {
            members[r].push((j, c as u32));
        }
        chosen.push(mine);
    }
    let mut far = vec![k - 1; m];
    let mut load: Vec<u64> = members.iter().map(|v| v.len() as u64).collect();
    for r in 0..n {
        if load[r] <= cap {
            continue;
        }
        // Keep the clients nearest the backend; among equals, the lowest ordinals (a client
        // that joins last is the first to move).
        let list = &mut members[r];
        list.sort_unstable_by(|a, b| b.cmp(a));
        let excess = (load[r] - cap) as usize;
        let mut bumped: Vec<u32> = list.drain(..excess).map(|(_, c)| c).collect();
        load[r] = cap;
        bumped.sort_unstable();
        for c in bumped {
            let c = c as usize;
            let mine = &mut chosen[c];
            mine.retain(|&x| x != r);
            let s = starts[c];
            let found = (far[c] + 1..n)
                .map(|f| (f, (s + f) % n))
                .find(|&(_, x)| load[x] < cap && !mine.contains(&x));
            let (f, x) = match found {
                Some(found) => found,
                // Every other backend is full or already chosen: the least loaded one.
                None => {
                    let x = (0..n)
                        .filter(|x| !mine.contains(x))
                        .min_by_key(|&x| (load[x], x))
                        .unwrap_or(r);
                    (n, x)
                }
            };
            far[c] = far[c].max(f);
            mine.push(x);
            load[x] += 1;
            members[x].push((f, c as u32));
        }
    }
    chosen
        .into_iter()
        .map(|mine| mine.into_iter().map(|r| order[r]).collect())
        .collect()
}
