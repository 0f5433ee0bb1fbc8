//! What tower middleware on either side shares: the boxed error tower layers return, and how
//! it turns back into an [`Error`] for the wire or the caller.
//!
//! The server side ([`crate::server::Request`], [`crate::server::ServiceHandler`]) and the
//! client side ([`crate::conn::LayeredConn`]) both use it; it knows only [`crate::error`].

use crate::error::Error;

/// The error type at tower boundaries (tower's own `BoxError`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The [`Error`] a layer's boxed error stands for.
///
/// | Boxed error | Becomes |
/// |---|---|
/// | an [`Error`] (what drpc services and layers return) | itself |
/// | `tower::timeout::error::Elapsed` | [`Error::DeadlineExceeded`] |
/// | `tower::load_shed::error::Overloaded` | [`Error::ResourceExhausted`] (`what`: [`OVERLOADED`]) |
/// | anything else | [`Error::Remote`] with code 0 and the error's text |
///
/// ```
/// use drpc_core::{Error, middleware::{BoxError, into_error}};
/// let e: BoxError = Box::new(Error::remote(16, "unauthenticated"));
/// assert_eq!(into_error(e).code(), 16);
/// ```
pub fn into_error(e: BoxError) -> Error {
    let e = match e.downcast::<Error>() {
        Ok(e) => return *e,
        Err(e) => e,
    };
    if e.is::<tower::timeout::error::Elapsed>() {
        return Error::DeadlineExceeded;
    }
    if e.is::<tower::load_shed::error::Overloaded>() {
        return Error::ResourceExhausted {
            what: OVERLOADED,
            limit: 0,
        };
    }
    Error::remote(0, e.to_string())
}

/// What ran out when a load-shedding layer refused a call: `Error::ResourceExhausted`'s `what`.
pub const OVERLOADED: &str = "service overloaded (load shed)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tower_errors_map_to_drpc_errors() {
        let elapsed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert!(matches!(into_error(elapsed), Error::DeadlineExceeded));
        let shed: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        assert!(matches!(
            into_error(shed),
            Error::ResourceExhausted {
                what: OVERLOADED,
                ..
            }
        ));
        let other: BoxError = "nope".into();
        let e = into_error(other);
        assert_eq!((e.code(), e.to_string().as_str()), (0, "nope"));
    }
}
