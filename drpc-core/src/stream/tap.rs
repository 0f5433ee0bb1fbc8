//! [`MessageTap`]: a copy of the messages of one server-side call (what a recording layer
//! keeps), bounded in bytes. Only calls that are tapped pay for it: the copies are `Bytes`
//! handles (the request's are shared, not copied; a protobuf reply is encoded once into its
//! own buffer instead of straight into the write buffer).

use std::sync::Mutex;

use bytes::Bytes;

/// The messages of one call, in and out, up to a byte budget.
#[derive(Debug)]
pub struct MessageTap {
    inner: Mutex<Tapped>,
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
            inner: Mutex::new(Tapped {
                budget,
                ..Tapped::default()
            }),
        }
    }

    pub(crate) fn request(&self, m: &Bytes) {
        self.keep(m, true);
    }

    pub(crate) fn reply(&self, m: &Bytes) {
        self.keep(m, false);
    }

    fn keep(&self, m: &Bytes, request: bool) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Takes what was tapped so far.
    pub fn take(&self) -> Tapped {
        std::mem::take(&mut *self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
