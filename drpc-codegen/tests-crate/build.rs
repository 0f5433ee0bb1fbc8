//! Compiles the test protos with drpc-codegen: nested packages and imports, well-known
//! types, several services in one file, a file without a package, keywords, comments, and
//! messages from another crate through `extern_path`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    drpc_codegen::configure()
        .extern_path(".money", "::drpc_codegen_tests_extern::money")
        .type_attribute(".demo.common.v1.Thing", "#[doc(alias = \"Item\")]")
        .compile(
            &["demo/echo/v1/echo.proto", "bare.proto"],
            &["proto", "extern-types/proto"],
        )?;
    Ok(())
}
