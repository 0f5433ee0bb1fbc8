//! Unsigned LEB128 varints, as storj/drpc writes them (`docs/wire.md` §2.2).
//!
//! Below: nothing. Above: [`super::frame`], which reads the three varints of a frame header.

use bytes::BufMut;

use super::WireError;

/// The longest varint the reader accepts, in bytes (`docs/wire.md` §2.2, §12).
pub const MAX_LEN: usize = 10;

/// Reads one varint from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` ends before the varint does (more bytes are needed),
/// `Ok(Some((value, consumed)))` otherwise. Padded (non-minimal) encodings are accepted, as Go
/// accepts them; bits beyond 64 in the tenth byte are dropped, as Go drops them.
///
/// # Errors
/// [`WireError::VarintTooLong`] when the tenth byte still has its continuation bit set.
pub fn decode(buf: &[u8]) -> Result<Option<(u64, usize)>, WireError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_LEN) {
        value |= u64::from(byte & 0x7f).wrapping_shl(7 * i as u32);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_LEN {
        Err(WireError::VarintTooLong)
    } else {
        Ok(None)
    }
}

/// Appends the minimal encoding of `value` to `dst`.
pub fn encode(mut value: u64, dst: &mut impl BufMut) {
    while value >= 0x80 {
        dst.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// The number of bytes [`encode`] writes for `value`.
pub const fn encoded_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_encodings_round_trip() {
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, u64::MAX / 3, u64::MAX] {
            let mut out = Vec::new();
            encode(v, &mut out);
            assert_eq!(out.len(), encoded_len(v), "length of {v}");
            assert_eq!(decode(&out).unwrap(), Some((v, out.len())));
        }
    }

    #[test]
    fn short_input_needs_more_bytes() {
        assert_eq!(decode(&[]).unwrap(), None);
        assert_eq!(decode(&[0x80, 0x80]).unwrap(), None);
    }

    #[test]
    fn padded_varint_is_accepted() {
        assert_eq!(decode(&[0x81, 0x80, 0x00]).unwrap(), Some((1, 3)));
    }

    #[test]
    fn ten_byte_varint_is_accepted_and_eleven_rejected() {
        let ten = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(decode(&ten).unwrap(), Some((u64::MAX, 10)));
        let eleven = [0x80; 11];
        assert_eq!(decode(&eleven), Err(WireError::VarintTooLong));
        // Ten continuation bytes are already too long, even before the eleventh arrives.
        assert_eq!(decode(&[0x80; 10]), Err(WireError::VarintTooLong));
    }
}
