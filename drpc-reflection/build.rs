//! Generates the reflection service's messages, client and server from
//! `proto/drpc/reflection/v1/reflection.proto` with drpc-codegen.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    drpc_codegen::configure().compile(&["drpc/reflection/v1/reflection.proto"], &["proto"])?;
    Ok(())
}
