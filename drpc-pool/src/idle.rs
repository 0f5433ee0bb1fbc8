//! [`IdleList`]: which connections are idle, in the order they came back, over all keys. The
//! pool uses it to find the oldest idle connection of a key or of the whole pool when an idle
//! limit is passed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One idle connection: its key's sub-pool and its connection id.
#[derive(Debug)]
pub(crate) struct Entry<P> {
    /// The position in return order; the slot carries it too.
    pub(crate) seq: u64,
    /// The key's id.
    pub(crate) key: u64,
    /// The key's sub-pool, where the connection sits.
    pub(crate) pool: P,
}

/// Idle connections by return order (`seq`), over all keys and per key.
#[derive(Debug)]
pub(crate) struct IdleList<P> {
    next_seq: u64,
    all: BTreeMap<u64, Entry<P>>,
    per_key: HashMap<u64, BTreeSet<u64>>,
}

impl<P> Default for IdleList<P> {
    fn default() -> Self {
        IdleList {
            next_seq: 1,
            all: BTreeMap::new(),
            per_key: HashMap::new(),
        }
    }
}

impl<P> IdleList<P> {
    /// Records a connection of `key` coming back; returns its `seq` (never 0).
    pub(crate) fn push(&mut self, key: u64, pool: P) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.all.insert(seq, Entry { seq, key, pool });
        self.per_key.entry(key).or_default().insert(seq);
        seq
    }

    /// Forgets the connection at `seq` (checked out or closed). `0` and unknown seqs are
    /// ignored.
    pub(crate) fn remove(&mut self, seq: u64) -> Option<Entry<P>> {
        let entry = self.all.remove(&seq)?;
        if let Some(set) = self.per_key.get_mut(&entry.key) {
            set.remove(&seq);
            if set.is_empty() {
                self.per_key.remove(&entry.key);
            }
        }
        Some(entry)
    }

    /// Idle connections in all.
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// Idle connections of `key`.
    pub(crate) fn key_len(&self, key: u64) -> usize {
        self.per_key.get(&key).map_or(0, BTreeSet::len)
    }

    /// Takes out what must be closed, oldest first, so that `key` keeps at most `per_key` and
    /// the pool at most `total` idle connections; each with the limit it broke.
    pub(crate) fn over_limits(
        &mut self,
        key: u64,
        per_key: Option<usize>,
        total: Option<usize>,
    ) -> Vec<(Entry<P>, &'static str)> {
        let mut out = Vec::new();
        if let Some(cap) = per_key {
            while self.key_len(key) > cap {
                let Some(&seq) = self.per_key.get(&key).and_then(BTreeSet::first) else {
                    break;
                };
                out.extend(self.remove(seq).map(|e| (e, "idle limit per key")));
            }
        }
        if let Some(cap) = total {
            while self.all.len() > cap {
                let Some(&seq) = self.all.keys().next() else {
                    break;
                };
                out.extend(self.remove(seq).map(|e| (e, "idle limit")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_key_limit_takes_the_keys_oldest() {
        let mut l = IdleList::default();
        let a1 = l.push(1, ());
        let _b1 = l.push(2, ());
        let a2 = l.push(1, ());
        let out = l.over_limits(1, Some(1), None);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0.seq, out[0].1), (a1, "idle limit per key"));
        assert_eq!((l.len(), l.key_len(1), l.key_len(2)), (2, 1, 1));
        assert!(l.remove(a2).is_some());
        assert!(l.remove(a2).is_none());
        assert!(l.remove(0).is_none());
        assert_eq!(l.key_len(1), 0);
    }

    #[test]
    fn total_limit_takes_the_oldest_of_any_key() {
        let mut l = IdleList::default();
        let a1 = l.push(1, ());
        let b1 = l.push(2, ());
        let _b2 = l.push(2, ());
        let out = l.over_limits(2, Some(5), Some(1));
        let seqs: Vec<_> = out.iter().map(|(e, why)| (e.seq, e.key, *why)).collect();
        assert_eq!(seqs, [(a1, 1, "idle limit"), (b1, 2, "idle limit")]);
        assert_eq!((l.len(), l.key_len(1), l.key_len(2)), (1, 0, 1));
    }
}
