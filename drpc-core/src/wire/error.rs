//! The KindError payload: an 8-byte big-endian code, then the error text (`docs/wire.md` §6.1).

use bytes::{BufMut, Bytes};

/// The note Go appends to the text of an Error payload shorter than 8 bytes.
pub const INVALID_ERROR_DATA_NOTE: &str = " (drpcwire note: invalid error data)";

/// Appends an Error payload for `code` and `message` to `dst`.
pub fn encode(dst: &mut impl BufMut, code: u64, message: &str) {
    dst.put_u64(code);
    dst.put_slice(message.as_bytes());
}

/// An Error payload of its own, for `code` and `message`.
pub fn to_bytes(code: u64, message: &str) -> Bytes {
    let mut out = Vec::with_capacity(8 + message.len());
    encode(&mut out, code, message);
    Bytes::from(out)
}

/// Decodes an Error payload into `(code, text)` exactly as Go does: a payload shorter than 8
/// bytes is code 0 with the text `"<payload> (drpcwire note: invalid error data)"`. Text that is
/// not UTF-8 is decoded lossily.
pub fn decode(payload: &[u8]) -> (u64, String) {
    if payload.len() < 8 {
        let mut text = String::from_utf8_lossy(payload).into_owned();
        text.push_str(INVALID_ERROR_DATA_NOTE);
        return (0, text);
    }
    let (code, text) = payload.split_at(8);
    let code = u64::from_be_bytes(code.try_into().expect("split at 8"));
    (code, String::from_utf8_lossy(text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_capture_of_code_42() {
        let payload = [
            0, 0, 0, 0, 0, 0, 0, 0x2a, b'b', b'o', b'o', b'm', b':', b' ', b'b', b'a', b'd',
        ];
        assert_eq!(decode(&payload), (42, "boom: bad".to_string()));
        assert_eq!(&to_bytes(42, "boom: bad")[..], &payload[..]);
    }

    #[test]
    fn short_payload_gets_go_note() {
        assert_eq!(
            decode(b"oops"),
            (0, "oops (drpcwire note: invalid error data)".into())
        );
        assert_eq!(
            decode(b""),
            (0, " (drpcwire note: invalid error data)".into())
        );
    }
}
