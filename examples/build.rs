//! Generates the echo service's messages, client and server from `proto/echo.proto` with
//! drpc-codegen, and the tonic (gRPC) service and client for `echo-server --grpc` over the
//! same messages with tonic-prost-build and protox (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    drpc_codegen::configure().compile(&["echo.proto"], &["proto"])?;
    let grpc = std::path::Path::new(&std::env::var("OUT_DIR")?).join("grpc");
    std::fs::create_dir_all(&grpc)?;
    let fds = protox::compile(["echo.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .out_dir(&grpc)
        .extern_path(".echo.Msg", "crate::echo::Msg")
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
