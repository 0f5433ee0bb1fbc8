//! Compiles the test protos with drpc-codegen: nested packages and imports, well-known
//! types, several services in one file, a file without a package, keywords, comments, and
//! messages from another crate through `extern_path`; then a set of packages that import each
//! other (`proto-multi/`) through the default module tree, once more with
//! `require_all_methods`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Its own include file: the default one belongs to the multi-package set below.
    drpc_codegen::configure()
        .include_file("_demo_include.rs")
        .extern_path(".money", "::drpc_codegen_tests_extern::money")
        .type_attribute(".demo.common.v1.Thing", "#[doc(alias = \"Item\")]")
        .compile(
            &["demo/echo/v1/echo.proto", "bare.proto"],
            &["proto", "extern-types/proto"],
        )?;

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let multi = ["acme/store/v1/store.proto", "acme/admin/admin.proto"];
    // The documented default: everything in the module tree of `_include.rs`.
    drpc_codegen::configure().compile(&multi, &["proto-multi"])?;
    // The same set with every server method required, in a directory of its own.
    let strict = out.join("strict");
    std::fs::create_dir_all(&strict)?;
    drpc_codegen::configure()
        .out_dir(&strict)
        .require_all_methods(true)
        .build_client(false)
        .compile(&multi, &["proto-multi"])?;
    Ok(())
}
