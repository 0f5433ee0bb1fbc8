//! [`Dial`]: how the pool opens a connection for a key. Any async closure `Fn(K) -> Future`
//! returning `Result<C, E>` is one.

use std::future::Future;
use std::sync::Arc;

use drpc_core::{BoxFuture, Error};

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

/// [`Dial`] with a boxed future, so that a dial function can be kept as a trait object.
trait DynDial<K, C>: Send + Sync {
    fn dial_boxed(&self, key: K) -> BoxFuture<'_, Result<C, BoxError>>;
}

impl<K: Send + 'static, C: 'static, D: Dial<K, C>> DynDial<K, C> for D {
    fn dial_boxed(&self, key: K) -> BoxFuture<'_, Result<C, BoxError>> {
        Box::pin(self.dial(key))
    }
}

/// Any [`Dial`] behind one type (an `Arc` of a trait object), so that what holds it needs no
/// type parameter for the dial function. Cheap to clone; one boxed future per dial.
pub struct SharedDial<K, C>(Arc<dyn DynDial<K, C>>);

impl<K, C> Clone for SharedDial<K, C> {
    fn clone(&self) -> Self {
        SharedDial(Arc::clone(&self.0))
    }
}

impl<K, C> std::fmt::Debug for SharedDial<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedDial")
    }
}

impl<K: Send + 'static, C: 'static> SharedDial<K, C> {
    /// Wraps `dial`.
    pub fn new(dial: impl Dial<K, C> + 'static) -> SharedDial<K, C> {
        SharedDial(Arc::new(dial))
    }
}

impl<K: Send + 'static, C: Send + 'static> Dial<K, C> for SharedDial<K, C> {
    fn dial(&self, key: K) -> impl Future<Output = Result<C, BoxError>> + Send {
        self.0.dial_boxed(key)
    }
}

/// A dial error as a [`drpc_core::Error`]: [`Error::Dial`] (nothing of the call was sent), except
/// a drpc error other than a transport error, which is kept as is (a deadline, a limit).
pub(crate) fn dial_error(e: BoxError) -> Error {
    match e.downcast::<Error>() {
        Ok(e) => match *e {
            Error::Io(io) => Error::Dial(io),
            e => e,
        },
        Err(e) => Error::Dial(Arc::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn dial_errors_are_unsent_and_keep_their_source() {
        let e = dial_error(Box::new(Error::Closed));
        assert!(matches!(e, Error::Closed));
        let e = dial_error(Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)));
        assert!(e.is_unsent(), "{e:?}");
        let io = match &e {
            Error::Dial(src) => src.downcast_ref::<io::Error>().expect("an io::Error"),
            other => panic!("not a dial error: {other:?}"),
        };
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        let e = dial_error(Box::new(Error::Io(Arc::new(io::Error::from(
            io::ErrorKind::ConnectionReset,
        )))));
        assert!(
            e.is_unsent(),
            "a transport error while dialling is a dial error"
        );
        let e = dial_error("no route".into());
        assert!(e.is_unsent());
        assert_eq!(e.to_string(), "dial failed: no route");
        let e = dial_error(Box::new(Error::DeadlineExceeded));
        assert!(matches!(e, Error::DeadlineExceeded));
    }
}
