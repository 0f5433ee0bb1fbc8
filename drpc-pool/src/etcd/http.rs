//! A small HTTP/1.1 client for etcd's gateway on hyper's connection API: POSTs of JSON,
//! with a few kept-alive connections reused between requests, and streamed bodies for
//! watches.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::EtcdError;

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 4;

/// One etcd endpoint (`HOST:PORT`) spoken to over HTTP/1.1.
#[derive(Debug)]
pub(crate) struct Http {
    pub(crate) authority: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    pub(crate) timeout: Duration,
}

impl Http {
    pub(crate) fn new(authority: String, timeout: Duration) -> Http {
        Http {
            authority,
            idle: Mutex::new(Vec::new()),
            timeout,
        }
    }

    fn unreachable(
        &self,
        op: &'static str,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> EtcdError {
        EtcdError::Unreachable {
            endpoint: self.authority.clone(),
            op,
            source: e.into(),
        }
    }

    async fn connect(&self, op: &'static str) -> Result<SendRequest<Full<Bytes>>, EtcdError> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| self.unreachable(op, e))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| self.unreachable(op, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push(sender);
        }
    }

    fn request(&self, path: &'static str, body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
        hyper::Request::post(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a POST with a static path is a valid request")
    }

    /// POSTs `body` to `path` and returns the whole answer, within the request timeout.
    pub(crate) async fn post(
        &self,
        path: &'static str,
        body: Vec<u8>,
    ) -> Result<(hyper::StatusCode, Bytes), EtcdError> {
        match tokio::time::timeout(self.timeout, self.post_inner(path, body)).await {
            Ok(r) => r,
            Err(_) => Err(EtcdError::Timeout {
                endpoint: self.authority.clone(),
                op: path,
                after: self.timeout,
            }),
        }
    }

    async fn post_inner(
        &self,
        path: &'static str,
        body: Vec<u8>,
    ) -> Result<(hyper::StatusCode, Bytes), EtcdError> {
        // A reused connection may have been closed by etcd meanwhile: then try a fresh one.
        let mut sender = match self.take_idle() {
            Some(s) => s,
            None => self.connect(path).await?,
        };
        let response = match sender.send_request(self.request(path, body.clone())).await {
            Ok(r) => r,
            Err(e) if e.is_canceled() || e.is_closed() || e.is_incomplete_message() => {
                sender = self.connect(path).await?;
                sender
                    .send_request(self.request(path, body))
                    .await
                    .map_err(|e| self.unreachable(path, e))?
            }
            Err(e) => return Err(self.unreachable(path, e)),
        };
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(path, e))?
            .to_bytes();
        self.put_idle(sender);
        Ok((status, bytes))
    }

    /// POSTs `body` to `path` on a connection of its own and returns the streamed answer
    /// (connecting and the headers within the request timeout).
    pub(crate) async fn post_stream(
        &self,
        path: &'static str,
        body: Vec<u8>,
    ) -> Result<(hyper::StatusCode, Incoming), EtcdError> {
        let start = async {
            let mut sender = self.connect(path).await?;
            let response = sender
                .send_request(self.request(path, body))
                .await
                .map_err(|e| self.unreachable(path, e))?;
            Ok::<_, EtcdError>((response.status(), response.into_body()))
        };
        match tokio::time::timeout(self.timeout, start).await {
            Ok(r) => r,
            Err(_) => Err(EtcdError::Timeout {
                endpoint: self.authority.clone(),
                op: path,
                after: self.timeout,
            }),
        }
    }
}
