//! MessagePack through serde (rmp-serde): a schema-light encoding for services that have no
//! `.proto` files. Structs encode as MessagePack maps keyed by field name
//! (`rmp_serde::to_vec_named`), so adding an optional field stays compatible both ways.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Codec;
use crate::error::Error;

/// MessagePack for any `serde` type.
///
/// ```
/// use drpc_core::encoding::{Codec, MsgPack};
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Msg { text: String, n: i64 }
/// let bytes = MsgPack.encode(&Msg { text: "hi".into(), n: 1 }).unwrap();
/// let back: Msg = MsgPack.decode(bytes).unwrap();
/// assert_eq!(back, Msg { text: "hi".into(), n: 1 });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgPack;

impl<M: Serialize + DeserializeOwned + 'static> Codec<M> for MsgPack {
    const NAME: &'static str = "msgpack";

    fn encode(&self, message: &M) -> Result<Bytes, Error> {
        rmp_serde::to_vec_named(message)
            .map(Bytes::from)
            .map_err(|e| Error::codec(<MsgPack as Codec<M>>::NAME, e))
    }

    fn decode(&self, bytes: Bytes) -> Result<M, Error> {
        rmp_serde::from_slice(&bytes).map_err(|e| Error::codec(<MsgPack as Codec<M>>::NAME, e))
    }
}
