//! Error payload decoding: arbitrary bytes never panic; a payload of 8 bytes or more with UTF-8
//! text re-encodes to the same bytes, and a shorter one gets Go's note.
#![no_main]

use drpc_core::wire::error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (code, text) = error::decode(data);
    if data.len() < 8 {
        assert_eq!(code, 0);
        assert!(text.ends_with(error::INVALID_ERROR_DATA_NOTE));
    } else if std::str::from_utf8(&data[8..]).is_ok() {
        assert_eq!(&error::to_bytes(code, &text)[..], data);
    }
});
