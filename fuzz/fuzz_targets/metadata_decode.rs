//! Metadata decoding: arbitrary bytes never panic, and whatever decodes re-encodes to a payload
//! that decodes to the same metadata.
#![no_main]

use drpc_core::Metadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(md) = Metadata::decode(data) {
        let again = Metadata::decode(&md.encode_to_vec()).expect("our own encoding decodes");
        assert_eq!(md, again);
        assert_eq!(md.encoded_len(), md.encode_to_vec().len());
    }
});
