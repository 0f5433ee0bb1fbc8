//! Generates the `money` messages (no services) with drpc-codegen.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    drpc_codegen::configure().compile(&["money/money.proto"], &["proto"])?;
    Ok(())
}
