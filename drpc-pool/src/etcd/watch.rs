//! [`Watch`]: one watch as etcd's gateway streams it, one JSON object per line.

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::EtcdError;
use super::client::KeyValue;
use super::wire::{self, WatchEnvelope};

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or changed.
    Put,
    /// Deleted (or expired with its lease).
    Delete,
}

/// One change of a watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key, and its new value for a put.
    pub kv: KeyValue,
}

/// The changes of one revision range, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    /// The store revision after these changes.
    pub revision: i64,
    /// The changes.
    pub events: Vec<Event>,
}

/// A running watch: [`Watch::next`] returns its batches of changes. Dropping it closes the
/// watch's connection.
#[derive(Debug)]
pub struct Watch {
    body: Incoming,
    buf: BytesMut,
    endpoint: String,
}

const OP: &str = "/v3/watch";

impl Watch {
    pub(crate) fn new(body: Incoming, endpoint: String) -> Watch {
        Watch {
            body,
            buf: BytesMut::new(),
            endpoint,
        }
    }

    /// The next JSON line of the stream.
    async fn line(&mut self) -> Result<wire::WatchResponse, EtcdError> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(nl + 1);
                let text = line.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                let env: WatchEnvelope =
                    serde_json::from_slice(text).map_err(|e| EtcdError::Decode {
                        op: OP,
                        detail: format!("{e}: {}", String::from_utf8_lossy(text)),
                    })?;
                if let Some(e) = env.error {
                    return Err(EtcdError::Status {
                        op: OP,
                        code: e.code,
                        message: if e.message.is_empty() {
                            e.error
                        } else {
                            e.message
                        },
                    });
                }
                let Some(resp) = env.result else {
                    continue;
                };
                if resp.canceled {
                    return Err(if resp.compact_revision > 0 {
                        EtcdError::Compacted {
                            compact_revision: resp.compact_revision,
                        }
                    } else {
                        EtcdError::WatchCancelled {
                            reason: resp.cancel_reason,
                        }
                    });
                }
                return Ok(resp);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Some(Err(e)) => {
                    return Err(EtcdError::Unreachable {
                        endpoint: self.endpoint.clone(),
                        op: OP,
                        source: e.into(),
                    });
                }
                None => {
                    return Err(EtcdError::Unreachable {
                        endpoint: self.endpoint.clone(),
                        op: OP,
                        source: "the watch stream ended".into(),
                    });
                }
            }
        }
    }

    /// Waits for etcd's "created" answer.
    pub(crate) async fn created(&mut self) -> Result<(), EtcdError> {
        loop {
            let resp = self.line().await?;
            if resp.created {
                return Ok(());
            }
        }
    }

    /// The next batch of changes (progress notices without events are skipped).
    ///
    /// # Errors
    /// [`EtcdError::Compacted`] or [`EtcdError::WatchCancelled`] when etcd ends the watch;
    /// [`EtcdError::Unreachable`] when the stream breaks (etcd stopped or restarted).
    ///
    /// # Cancel safety
    /// Cancel safe: bytes already received stay buffered.
    pub async fn next(&mut self) -> Result<WatchBatch, EtcdError> {
        loop {
            let resp = self.line().await?;
            if resp.events.is_empty() {
                continue;
            }
            let events = resp
                .events
                .into_iter()
                .map(|e| {
                    Ok(Event {
                        kind: if e.kind == "DELETE" {
                            EventKind::Delete
                        } else {
                            EventKind::Put
                        },
                        kv: KeyValue::try_from(e.kv)?,
                    })
                })
                .collect::<Result<_, EtcdError>>()?;
            return Ok(WatchBatch {
                revision: resp.header.revision,
                events,
            });
        }
    }
}
