//! Generates the echo service's messages, client and server from `proto/echo.proto` with
//! drpc-codegen (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    drpc_codegen::configure().compile(&["echo.proto"], &["proto"])?;
    Ok(())
}
