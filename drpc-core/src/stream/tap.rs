//! [`MessageTap`]: a copy of the messages of one server-side call (what a recording layer
//! keeps), bounded in bytes. Only calls that are tapped pay for it: the copies are `Bytes`
//! handles (the request's are shared, not copied; a protobuf reply is encoded once into its
//! own buffer instead of straight into the write buffer).

use std::sync::Mutex;

use bytes::Bytes;

/// The messages of one call, in and out, up to a byte budget.
#[derive(Debug)]
pub struct MessageTap {
    inner: Mutex<Sink>,
}

#[derive(Debug)]
enum Sink {
    /// `Bytes` handles ([`MessageTap::new`]).
    Handles(Tapped),
    /// Protobuf `Record` fields 3 and 4 appended to a buffer ([`MessageTap::encoding`]).
    #[cfg(feature = "migrate")]
    Encoded(Encoded),
}

/// What an encoding tap holds: the buffer, where its messages start, what is left of the
/// budget and whether messages were left out.
#[cfg(feature = "migrate")]
#[derive(Debug)]
pub(crate) struct Encoded {
    pub(crate) buf: Vec<u8>,
    start: usize,
    budget: usize,
    pub(crate) truncated: bool,
}

#[cfg(feature = "migrate")]
impl Encoded {
    fn reserve(&mut self, len: usize) -> bool {
        if self.truncated || len > self.budget {
            // Over the budget: no messages at all (the record says `truncated`).
            self.truncated = true;
            self.buf.truncate(self.start);
            return false;
        }
        self.budget -= len;
        true
    }
}

/// What a [`MessageTap`] holds.
#[derive(Debug, Default, Clone)]
pub struct Tapped {
    /// The messages the client sent, in order.
    pub requests: Vec<Bytes>,
    /// The messages the handler sent, in order.
    pub replies: Vec<Bytes>,
    /// Whether messages were left out because the budget ran out.
    pub truncated: bool,
    budget: usize,
}

impl MessageTap {
    /// A tap keeping at most `budget` message bytes (in and out together).
    pub fn new(budget: usize) -> MessageTap {
        MessageTap {
            inner: Mutex::new(Sink::Handles(Tapped {
                budget,
                ..Tapped::default()
            })),
        }
    }

    /// A tap writing each message, as it passes, into `buf` as a `Record`'s `requests` (3)
    /// and `replies` (4) fields: the copy is made at once and no handle is kept.
    #[cfg(feature = "migrate")]
    pub(crate) fn encoding(budget: usize, buf: Vec<u8>) -> MessageTap {
        MessageTap {
            inner: Mutex::new(Sink::Encoded(Encoded {
                start: buf.len(),
                buf,
                budget,
                truncated: false,
            })),
        }
    }

    fn sink(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn request(&self, m: &Bytes) {
        self.keep(m, true);
    }

    pub(crate) fn reply(&self, m: &Bytes) {
        self.keep(m, false);
    }

    /// Whether this tap encodes messages itself (then a protobuf reply need not be encoded
    /// into bytes of its own first: [`MessageTap::reply_encoded`]).
    pub(crate) fn encodes(&self) -> bool {
        #[cfg(feature = "migrate")]
        {
            matches!(*self.sink(), Sink::Encoded(_))
        }
        #[cfg(not(feature = "migrate"))]
        {
            false
        }
    }

    /// A reply of `len` bytes that `fill` encodes (an encoding tap only).
    #[cfg_attr(not(feature = "migrate"), allow(unused_variables))]
    pub(crate) fn reply_encoded(&self, len: usize, fill: impl FnOnce(&mut Vec<u8>)) {
        #[cfg(feature = "migrate")]
        if let Sink::Encoded(e) = &mut *self.sink()
            && e.reserve(len)
        {
            super::record_encode::put_with(
                &mut e.buf,
                super::record_encode::tag::REPLIES,
                len,
                fill,
            );
        }
    }

    fn keep(&self, m: &Bytes, request: bool) {
        match &mut *self.sink() {
            Sink::Handles(t) => {
                if t.truncated || m.len() > t.budget {
                    t.truncated = true;
                    return;
                }
                t.budget -= m.len();
                if request {
                    t.requests.push(m.clone());
                } else {
                    t.replies.push(m.clone());
                }
            }
            #[cfg(feature = "migrate")]
            Sink::Encoded(e) => {
                if e.reserve(m.len()) {
                    use super::record_encode::{put_bytes, tag};
                    let tag = if request { tag::REQUESTS } else { tag::REPLIES };
                    put_bytes(&mut e.buf, tag, m);
                }
            }
        }
    }

    /// Takes what was tapped so far (empty for an encoding tap).
    pub fn take(&self) -> Tapped {
        match &mut *self.sink() {
            Sink::Handles(t) => std::mem::take(t),
            #[cfg(feature = "migrate")]
            Sink::Encoded(_) => Tapped::default(),
        }
    }

    /// Takes the buffer of an encoding tap, with whether messages were left out.
    #[cfg(feature = "migrate")]
    pub(crate) fn take_encoded(&self) -> Option<(Vec<u8>, bool)> {
        match &mut *self.sink() {
            Sink::Encoded(e) => Some((std::mem::take(&mut e.buf), e.truncated)),
            Sink::Handles(_) => None,
        }
    }
}
