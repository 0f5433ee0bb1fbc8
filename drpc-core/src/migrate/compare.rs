//! Comparing replies (replay and shadow): a [`Comparator`] decides whether two replies of one
//! RPC are the same; [`DiffStats`] counts the outcomes per RPC and keeps the first
//! mismatches.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use bytes::Bytes;

use crate::error::Error;

/// Decides whether the reply `actual` of `rpc` stands for the same answer as `expected`. The
/// default is byte equality ([`ByteEqual`]); a comparator can decode the messages and ignore
/// fields that may differ (timestamps, server names). Closures
/// `Fn(&str, &Bytes, &Bytes) -> bool` are comparators.
pub trait Comparator: Send + Sync + 'static {
    /// Whether the replies match.
    fn same(&self, rpc: &str, expected: &Bytes, actual: &Bytes) -> bool;
}

impl<F: Fn(&str, &Bytes, &Bytes) -> bool + Send + Sync + 'static> Comparator for F {
    fn same(&self, rpc: &str, expected: &Bytes, actual: &Bytes) -> bool {
        self(rpc, expected, actual)
    }
}

/// Replies match when their bytes are equal.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByteEqual;

impl Comparator for ByteEqual {
    fn same(&self, _rpc: &str, expected: &Bytes, actual: &Bytes) -> bool {
        expected == actual
    }
}

/// What one call gave: its reply messages, or the error (code and text) it ended with.
pub type CallResult = Result<Vec<Bytes>, Error>;

/// How one compared call came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The same answer.
    Matched,
    /// A different answer: other replies, or another error code or text.
    Mismatched,
    /// The call could not be made or did not finish (a transport error, a timeout).
    Error,
}

/// Compares the call `actual` with `expected` (what the recording or the primary got).
///
/// A remote error matches a remote error of the same code and text; a reply list matches one
/// of the same length whose messages match pairwise under `comparator`. An `actual` failure
/// that is not a remote error (transport, timeout) is [`Outcome::Error`].
pub fn compare(
    comparator: &dyn Comparator,
    rpc: &str,
    expected: &CallResult,
    actual: &CallResult,
) -> Outcome {
    compare_answers(comparator, rpc, expected.as_deref(), actual.as_deref())
}

/// A borrowed [`CallResult`]: reply messages, or the error. A single reply `r` is
/// `Ok(std::slice::from_ref(&r))`, without building a `Vec`.
pub type Answer<'a> = Result<&'a [Bytes], &'a Error>;

/// [`compare`] on borrowed answers.
pub fn compare_answers(
    comparator: &dyn Comparator,
    rpc: &str,
    expected: Answer<'_>,
    actual: Answer<'_>,
) -> Outcome {
    match (expected, actual) {
        (_, Err(e)) if !matches!(e, Error::Remote { .. }) => Outcome::Error,
        (Ok(want), Ok(got)) => {
            if want.len() == got.len()
                && want
                    .iter()
                    .zip(got)
                    .all(|(w, g)| comparator.same(rpc, w, g))
            {
                Outcome::Matched
            } else {
                Outcome::Mismatched
            }
        }
        (Err(want), Err(got))
            if want.code() == got.code() && want.to_string() == got.to_string() =>
        {
            Outcome::Matched
        }
        _ => Outcome::Mismatched,
    }
}

/// Counts of compared calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls compared.
    pub calls: u64,
    /// Same answer.
    pub matched: u64,
    /// Different answer.
    pub mismatched: u64,
    /// No answer to compare (transport errors, timeouts).
    pub errors: u64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome) {
        self.calls += 1;
        match outcome {
            Outcome::Matched => self.matched += 1,
            Outcome::Mismatched => self.mismatched += 1,
            Outcome::Error => self.errors += 1,
        }
    }
}

/// One mismatch (or error), for people to read: the RPC and both answers, abbreviated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The RPC name.
    pub rpc: String,
    /// The expected answer (recorded, or the primary's).
    pub expected: String,
    /// The answer compared with it.
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mismatch {}: expected {} got {}",
            self.rpc, self.expected, self.actual
        )
    }
}

/// A summary: totals, counts per RPC, the first mismatches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// All calls together.
    pub total: Counts,
    /// Per RPC name.
    pub per_rpc: BTreeMap<String, Counts>,
    /// The first mismatches and errors, in the order they were found.
    pub first_mismatches: Vec<Mismatch>,
}

/// Thread-safe counting of compared calls (a lock per compared call, off the caller's path).
#[derive(Debug)]
pub struct DiffStats {
    keep: usize,
    inner: Mutex<DiffReport>,
}

impl DiffStats {
    /// Counts that keep the first `keep` mismatches.
    pub fn new(keep: usize) -> DiffStats {
        DiffStats {
            keep,
            inner: Mutex::new(DiffReport::default()),
        }
    }

    /// Counts one compared call.
    pub fn add(&self, rpc: &str, outcome: Outcome, expected: &CallResult, actual: &CallResult) {
        self.add_answers(rpc, outcome, expected.as_deref(), actual.as_deref());
    }

    /// [`DiffStats::add`] on borrowed answers.
    pub fn add_answers(
        &self,
        rpc: &str,
        outcome: Outcome,
        expected: Answer<'_>,
        actual: Answer<'_>,
    ) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.total.add(outcome);
        match r.per_rpc.get_mut(rpc) {
            Some(c) => c.add(outcome),
            None => {
                let mut c = Counts::default();
                c.add(outcome);
                r.per_rpc.insert(rpc.to_owned(), c);
            }
        }
        if outcome != Outcome::Matched && r.first_mismatches.len() < self.keep {
            r.first_mismatches.push(Mismatch {
                rpc: rpc.to_owned(),
                expected: show(expected),
                actual: show(actual),
            });
        }
    }

    /// The counts so far.
    pub fn report(&self) -> DiffReport {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Bytes shown as text: printable ASCII as is, other bytes as `\xNN`, at most 80 of them.
fn show(r: Answer<'_>) -> String {
    match r {
        Err(e) => format!("error code={} {:?}", e.code(), e.to_string()),
        Ok(msgs) => {
            let parts: Vec<String> = msgs.iter().map(show_bytes).collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

fn show_bytes(b: &Bytes) -> String {
    let mut s = String::from("\"");
    for &c in b.iter().take(80) {
        if (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    if b.len() > 80 {
        s.push_str("...");
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        let ok = |s: &'static str| -> CallResult { Ok(vec![Bytes::from_static(s.as_bytes())]) };
        let cmp = &ByteEqual;
        assert_eq!(compare(cmp, "r", &ok("a"), &ok("a")), Outcome::Matched);
        assert_eq!(compare(cmp, "r", &ok("a"), &ok("b")), Outcome::Mismatched);
        let boom: CallResult = Err(Error::remote(3, "boom"));
        assert_eq!(
            compare(cmp, "r", &boom, &Err(Error::remote(3, "boom"))),
            Outcome::Matched
        );
        assert_eq!(
            compare(cmp, "r", &boom, &Err(Error::remote(4, "boom"))),
            Outcome::Mismatched
        );
        assert_eq!(
            compare(cmp, "r", &ok("a"), &Err(Error::Closed)),
            Outcome::Error
        );
        let loose = |_: &str, _: &Bytes, _: &Bytes| true;
        assert_eq!(compare(&loose, "r", &ok("a"), &ok("b")), Outcome::Matched);
        let stats = DiffStats::new(1);
        stats.add("r", Outcome::Mismatched, &ok("a\u{1}"), &ok("b"));
        stats.add("r", Outcome::Matched, &ok("a"), &ok("a"));
        let r = stats.report();
        assert_eq!(
            (r.total.calls, r.total.matched, r.total.mismatched),
            (2, 1, 1)
        );
        assert_eq!(
            r.first_mismatches[0].to_string(),
            r#"mismatch r: expected ["a\x01"] got ["b"]"#
        );
    }
}
