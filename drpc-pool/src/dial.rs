//! [`Dial`]: how the pool opens a connection for a key. Any async closure `Fn(K) -> Future`
//! returning `Result<C, E>` is one.

use std::future::Future;
use std::io;
use std::sync::Arc;

use drpc_core::Error;

/// A boxed error from a dial function.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens a new connection for a key: plain TCP, TLS, a mux session, anything that yields a
/// [`Conn`](drpc_core::Conn).
///
/// Implemented by every `Fn(K) -> impl Future<Output = Result<C, E>>` whose error converts
/// into a [`BoxError`] (`std::io::Error`, [`drpc_core::Error`], `anyhow::Error`…):
///
/// ```
/// # fn f() -> impl drpc_pool::Dial<String, drpc_core::TransportConn<tokio::net::TcpStream>> {
/// |addr: String| async move { drpc_core::dial(addr).await }
/// # }
/// ```
pub trait Dial<K, C>: Send + Sync {
    /// Opens a connection for `key`.
    fn dial(&self, key: K) -> impl Future<Output = Result<C, BoxError>> + Send;
}

impl<K, C, F, Fut, E> Dial<K, C> for F
where
    F: Fn(K) -> Fut + Send + Sync,
    Fut: Future<Output = Result<C, E>> + Send,
    E: Into<BoxError>,
{
    fn dial(&self, key: K) -> impl Future<Output = Result<C, BoxError>> + Send {
        let fut = self(key);
        async move { fut.await.map_err(Into::into) }
    }
}

/// A dial error as a [`drpc_core::Error`]: kept as is when it is one, an `io::Error` becomes
/// [`Error::Io`], anything else an [`Error::Io`] of kind `Other`.
pub(crate) fn dial_error(e: BoxError) -> Error {
    let e = match e.downcast::<Error>() {
        Ok(e) => return *e,
        Err(e) => e,
    };
    match e.downcast::<io::Error>() {
        Ok(io) => Error::Io(Arc::new(*io)),
        Err(other) => Error::Io(Arc::new(io::Error::other(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_errors_keep_their_kind() {
        let e = dial_error(Box::new(Error::Closed));
        assert!(matches!(e, Error::Closed));
        let e = dial_error(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert!(matches!(&e, Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused));
        let e = dial_error("no route".into());
        assert!(matches!(&e, Error::Io(io) if io.to_string() == "no route"));
    }
}
