//! Many concurrent RPCs on one connection over yamux or QUIC, behind a `NewStream` transport trait (coming in its own issue).
