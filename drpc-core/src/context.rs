//! What a server handler knows about its call: the RPC, metadata, the peer, per-connection
//! extensions, and cancellation.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::metadata::Metadata;
use crate::stream::StreamShared;

/// A type map of values attached to a connection, such as the TLS peer identity, or to one
/// call by a server layer ([`crate::server::Request::extensions_mut`]). Cheap to clone: the
/// values are shared.
///
/// ```
/// use drpc_core::Extensions;
/// #[derive(Debug, PartialEq)]
/// struct Tenant(&'static str);
/// let mut ext = Extensions::new();
/// ext.insert(Tenant("a"));
/// assert_eq!(ext.get::<Tenant>(), Some(&Tenant("a")));
/// ```
#[derive(Default, Clone)]
pub struct Extensions {
    map: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.map.len())
            .finish()
    }
}

impl Extensions {
    /// No values.
    pub fn new() -> Extensions {
        Extensions::default()
    }

    /// Stores `value`, replacing a value of the same type.
    pub fn insert<V: Any + Send + Sync>(&mut self, value: V) {
        self.map.insert(TypeId::of::<V>(), Arc::new(value));
    }

    /// The value of type `V`, if one was stored.
    pub fn get<V: Any + Send + Sync>(&self) -> Option<&V> {
        self.map
            .get(&TypeId::of::<V>())
            .and_then(|v| (**v).downcast_ref())
    }
}

/// The context of one server-side RPC.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) rpc: Bytes,
    pub(crate) metadata: Metadata,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) extensions: Arc<Extensions>,
    pub(crate) stream: Arc<StreamShared>,
}

impl Context {
    /// The RPC name, such as `/echo.Echo/Unary`.
    pub fn rpc(&self) -> &str {
        std::str::from_utf8(&self.rpc).unwrap_or("")
    }

    /// The stream id on the wire.
    pub fn stream_id(&self) -> u64 {
        self.stream.id()
    }

    /// The metadata the client sent with the call (empty when none).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The peer's address, when the transport has one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Values attached to the connection (for example the TLS peer identity), and those a
    /// server layer attached to this call.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// Whether the call was canceled: by the client (Cancel, Close, Error), by the
    /// transport ending, or by a newer Invoke.
    pub fn is_cancelled(&self) -> bool {
        self.stream.is_cancelled()
    }

    /// Completes when the call is canceled.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn cancelled(&self) {
        self.stream.cancelled().await
    }
}
