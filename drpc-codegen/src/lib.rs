//! Generates drpc clients and servers from `.proto` files in `build.rs`, with no `protoc` needed (coming in its own issue).
