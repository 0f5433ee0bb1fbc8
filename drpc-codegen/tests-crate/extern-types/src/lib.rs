//! Messages generated in a crate of their own, which `drpc-codegen-tests` uses through
//! `extern_path` instead of generating them again.

/// The `money` protobuf package.
pub mod money {
    include!(concat!(env!("OUT_DIR"), "/money.rs"));
}
