//! The interop echo service (shared by the example binaries).
