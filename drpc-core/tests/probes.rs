//! Every probe of `docs/probes.md`, sent as hand-built bytes over loopback TCP to the real
//! `drpc_core::Server` serving the echo service, with the outcome docs/probes.md asks of drpc-rs:
//! Go's outcome on every row, except E and Q, where Go hangs and we answer.
//!
//! Connections are served by `Server::serve_one_with` from our own accept loop, so that the
//! typed error that ended the server's side of a connection can be asserted too. After every
//! probe a fresh connection must still be served.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{
    Msg, RawClient, RecordingServer, Reply, WITHIN, assert_served, decode, enc, frame, pkt, rpc,
    unary_req,
};
use drpc_core::wire::{Id, Kind, Packet, WireError, packet};
use drpc_core::{Error, Metadata, MetadataError, ProtocolError};

/// Go closes within a second; we assert with a 3x margin.
const CLOSE_WITHIN: Duration = WITHIN;

/// Asserts that the server closes the connection (without sending a packet first), that its
/// side ended with the protocol error `expected` names, and that a fresh connection is served.
async fn assert_closed_with(
    server: &RecordingServer,
    client: &mut RawClient,
    what: &str,
    expected: impl Fn(&ProtocolError) -> bool,
) {
    let peer = client.local_addr();
    let seen = client.expect_closed(CLOSE_WITHIN).await;
    assert!(
        seen.is_empty(),
        "{what}: the server answered before closing: {seen:?}"
    );
    match server.conn_result(peer, WITHIN).await {
        Some(Err(Error::Protocol(e))) if expected(&e) => {}
        other => {
            panic!("{what}: the server's side should end with the protocol error; got {other:?}")
        }
    }
    assert_served(server.addr).await;
}

fn monotonicity(got: Id, current: Id) -> impl Fn(&ProtocolError) -> bool {
    move |e| {
        matches!(e, ProtocolError::Wire(WireError::IdMonotonicity { got: g, current: c })
            if *g == got && *c == current)
    }
}

/// A packet as frames of at most `split` payload bytes (`0`: one frame).
fn split_packet(kind: Kind, stream: u64, message: u64, data: &[u8], split: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet::encode(&mut out, Id::new(stream, message), kind, false, data, split);
    out.to_vec()
}

#[tokio::test]
async fn probe_a_stream_id_gaps_are_answered() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    c.send(&unary_req(5, 1, rpc::UNARY, &Msg::new("five", 5)))
        .await
        .unwrap();
    assert_eq!(c.expect_unary_reply(5).await, Msg::new("echo:five", 6));
    c.send(&unary_req(9, 1, rpc::UNARY, &Msg::new("nine", 9)))
        .await
        .unwrap();
    assert_eq!(c.expect_unary_reply(9).await, Msg::new("echo:nine", 10));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_b_lower_stream_id_closes_after_answering_the_first() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    c.send(&unary_req(5, 1, rpc::UNARY, &Msg::new("five", 5)))
        .await
        .unwrap();
    assert_eq!(c.expect_unary_reply(5).await, Msg::new("echo:five", 6));
    let _ = c
        .send(&unary_req(3, 1, rpc::UNARY, &Msg::new("three", 3)))
        .await;
    assert_closed_with(&s, &mut c, "B", monotonicity(Id::new(3, 1), Id::new(5, 4))).await;
}

#[tokio::test]
async fn probe_c_reused_message_id_closes() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    bytes.extend(pkt(Kind::Message, 1, 1, &enc(&Msg::new("m1", 1))));
    bytes.extend(pkt(Kind::CloseSend, 1, 2, &[]));
    let _ = c.send(&bytes).await;
    assert_closed_with(&s, &mut c, "C", monotonicity(Id::new(1, 1), Id::new(1, 2))).await;
}

#[tokio::test]
async fn probe_d_message_id_gaps_are_answered() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    bytes.extend(pkt(Kind::Message, 1, 5, &enc(&Msg::new("gaps", 1))));
    bytes.extend(pkt(Kind::CloseSend, 1, 9, &[]));
    c.send(&bytes).await.unwrap();
    assert_eq!(c.expect_unary_reply(1).await, Msg::new("echo:gaps", 2));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_e_unknown_control_packet_before_invoke_is_ignored_and_the_unary_answered() {
    let s = RecordingServer::start().await;
    // The unary that follows on the same stream id (Go hangs here; we must answer).
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = frame(Kind::Unknown(9), 1, 1, true, true, b"future");
    bytes.extend(unary_req(1, 2, rpc::UNARY, &Msg::new("e", 1)));
    c.send(&bytes).await.unwrap();
    assert_eq!(c.expect_unary_reply(1).await, Msg::new("echo:e", 2));
    // ... and on the next stream id.
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = frame(Kind::Unknown(9), 1, 1, true, true, b"future");
    bytes.extend(unary_req(2, 1, rpc::UNARY, &Msg::new("e", 2)));
    c.send(&bytes).await.unwrap();
    assert_eq!(c.expect_unary_reply(2).await, Msg::new("echo:e", 3));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_e2_unknown_control_packet_on_active_stream_is_ignored() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    bytes.extend(frame(Kind::Unknown(9), 1, 2, true, true, b"future"));
    bytes.extend(pkt(Kind::Message, 1, 3, &enc(&Msg::new("e2", 1))));
    bytes.extend(pkt(Kind::CloseSend, 1, 4, &[]));
    c.send(&bytes).await.unwrap();
    assert_eq!(c.expect_unary_reply(1).await, Msg::new("echo:e2", 2));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_f_unknown_kind_without_control_bit_closes() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    bytes.extend(pkt(Kind::Unknown(9), 1, 2, b"future"));
    bytes.extend(pkt(Kind::Message, 1, 3, &enc(&Msg::new("f", 1))));
    bytes.extend(pkt(Kind::CloseSend, 1, 4, &[]));
    let _ = c.send(&bytes).await;
    assert_closed_with(&s, &mut c, "F", |e| {
        matches!(e, ProtocolError::UnknownKind(Kind::Unknown(9)))
    })
    .await;
}

#[tokio::test]
async fn probe_g_message_split_over_three_frames_is_answered() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let body = enc(&Msg::new("split in three", 3));
    let (a, rest) = body.split_at(4);
    let (b, d) = rest.split_at(5);
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    bytes.extend(frame(Kind::Message, 1, 2, false, false, a));
    bytes.extend(frame(Kind::Message, 1, 2, false, false, b));
    bytes.extend(frame(Kind::Message, 1, 2, true, false, d));
    bytes.extend(pkt(Kind::CloseSend, 1, 3, &[]));
    c.send(&bytes).await.unwrap();
    assert_eq!(
        c.expect_unary_reply(1).await,
        Msg::new("echo:split in three", 4)
    );
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_h_partial_packet_is_dropped_by_a_newer_message_id() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let dropped = enc(&Msg::new("dropped", 1));
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    bytes.extend(frame(Kind::Message, 1, 2, false, false, &dropped[..4]));
    bytes.extend(pkt(Kind::Message, 1, 3, &enc(&Msg::new("kept", 2))));
    bytes.extend(pkt(Kind::CloseSend, 1, 4, &[]));
    c.send(&bytes).await.unwrap();
    assert_eq!(c.expect_unary_reply(1).await, Msg::new("echo:kept", 3));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_i_kind_change_inside_a_packet_closes() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let body = enc(&Msg::new("i", 1));
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    bytes.extend(frame(Kind::Message, 1, 2, false, false, &body[..2]));
    bytes.extend(frame(Kind::CloseSend, 1, 2, true, false, &[]));
    let _ = c.send(&bytes).await;
    assert_closed_with(&s, &mut c, "I", |e| {
        matches!(e, ProtocolError::Wire(WireError::KindChange { id, was: Kind::Message, now: Kind::CloseSend })
            if *id == Id::new(1, 2))
    })
    .await;
}

#[tokio::test]
async fn probe_j2_metadata_with_empty_value_is_answered() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let md = Metadata::new().with("b", "").with("a", "1");
    let mut bytes = pkt(Kind::InvokeMetadata, 1, 1, &md.encode_to_vec());
    bytes.extend(unary_req(1, 2, rpc::UNARY, &Msg::new("hi", 7)));
    c.send(&bytes).await.unwrap();
    assert_eq!(
        c.expect_unary_reply(1).await,
        Msg::new("echo:hi [md a=1,b=]", 8)
    );
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_k_metadata_entry_without_value_closes() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = pkt(Kind::InvokeMetadata, 1, 1, &[0x0a, 0x03, 0x0a, 0x01, b'k']);
    bytes.extend(unary_req(1, 2, rpc::UNARY, &Msg::new("hi", 7)));
    let _ = c.send(&bytes).await;
    assert_closed_with(&s, &mut c, "K", |e| {
        matches!(e, ProtocolError::Metadata(MetadataError::MalformedEntry))
    })
    .await;
}

#[tokio::test]
async fn probe_l_metadata_for_another_stream_is_dropped() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let md = Metadata::new().with("k", "v");
    let mut bytes = pkt(Kind::InvokeMetadata, 1, 1, &md.encode_to_vec());
    bytes.extend(unary_req(2, 1, rpc::UNARY, &Msg::new("hi", 7)));
    c.send(&bytes).await.unwrap();
    assert_eq!(c.expect_unary_reply(2).await, Msg::new("echo:hi", 8));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_m_newer_invoke_cancels_open_bidi_and_is_answered() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::BIDI.as_bytes());
    bytes.extend(pkt(Kind::Message, 1, 2, &enc(&Msg::new("b1", 1))));
    c.send(&bytes).await.unwrap();
    let echo = c.packet().await;
    assert_eq!(echo.id, Id::new(1, 1));
    assert_eq!(decode(&echo), Msg::new("echo:b1", 2));

    c.send(&unary_req(2, 1, rpc::UNARY, &Msg::new("two", 2)))
        .await
        .unwrap();
    // Exactly stream 2's reply comes next: nothing more for stream 1 (Go sends nothing for a
    // canceled stream).
    assert_eq!(c.expect_unary_reply(2).await, Msg::new("echo:two", 3));
    assert!(
        s.obs.bidi_finished.wait_for(1, WITHIN).await,
        "the Bidi handler of stream 1 must have been canceled"
    );
    for end in s.obs.bidi_ends.lock().unwrap().iter() {
        assert!(
            matches!(end, Err(Error::Canceled)),
            "stream 1 should end canceled, ended {end:?}"
        );
    }
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_n_client_error_packet_ends_the_stream_and_the_next_works() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::BIDI.as_bytes());
    bytes.extend(pkt(Kind::Message, 1, 2, &enc(&Msg::new("b1", 1))));
    c.send(&bytes).await.unwrap();
    assert_eq!(decode(&c.packet().await), Msg::new("echo:b1", 2));

    let payload = drpc_core::wire::error::to_bytes(7, "client gave up");
    c.send(&pkt(Kind::Error, 1, 3, &payload)).await.unwrap();
    assert!(
        s.obs.bidi_finished.wait_for(1, WITHIN).await,
        "stream 1 must end"
    );
    {
        let ends = s.obs.bidi_ends.lock().unwrap();
        assert!(
            matches!(&ends[..], [Err(Error::Remote { code: 7, message })] if message == "client gave up"),
            "the handler's recv should report the client's error, got {ends:?}"
        );
    }
    c.send(&unary_req(2, 1, rpc::UNARY, &Msg::new("two", 2)))
        .await
        .unwrap();
    assert_eq!(c.expect_unary_reply(2).await, Msg::new("echo:two", 3));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_o_unary_without_request_message_gets_eof_error() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    bytes.extend(pkt(Kind::CloseSend, 1, 2, &[]));
    c.send(&bytes).await.unwrap();
    let p = c.packet().await;
    assert_eq!((p.id, p.kind), (Id::new(1, 1), Kind::Error), "{p:?}");
    assert_eq!(
        drpc_core::wire::error::decode(&p.data),
        (0, "EOF".to_string())
    );
    // The error ends the stream, not the connection.
    c.send(&unary_req(2, 1, rpc::UNARY, &Msg::new("after", 1)))
        .await
        .unwrap();
    assert_eq!(c.expect_unary_reply(2).await, Msg::new("echo:after", 2));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_p_zero_length_message_is_answered() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    bytes.extend(pkt(Kind::Message, 1, 2, &[]));
    bytes.extend(pkt(Kind::CloseSend, 1, 3, &[]));
    c.send(&bytes).await.unwrap();
    assert_eq!(c.expect_unary_reply(1).await, Msg::new("echo:", 1));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_q_drpcmigrate_preface_is_skipped_and_answered() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = b"DRPC!!!1".to_vec();
    bytes.extend(unary_req(1, 1, rpc::UNARY, &Msg::new("q", 1)));
    c.send(&bytes).await.unwrap();
    assert_eq!(c.expect_unary_reply(1).await, Msg::new("echo:q", 2));
    // The preface may also arrive in pieces.
    let mut c = RawClient::connect(s.addr).await;
    c.send(b"DRPC").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut bytes = b"!!!1".to_vec();
    bytes.extend(unary_req(1, 1, rpc::UNARY, &Msg::new("q2", 1)));
    c.send(&bytes).await.unwrap();
    assert_eq!(c.expect_unary_reply(1).await, Msg::new("echo:q2", 2));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_r_stream_id_zero_closes() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let _ = c
        .send(&unary_req(0, 1, rpc::UNARY, &Msg::new("zero", 0)))
        .await;
    assert_closed_with(&s, &mut c, "R", monotonicity(Id::new(0, 1), Id::new(1, 1))).await;
}

#[tokio::test]
async fn probe_s_two_pipelined_unaries_are_both_answered() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = unary_req(1, 1, rpc::UNARY, &Msg::new("one", 1));
    bytes.extend(unary_req(2, 1, rpc::UNARY, &Msg::new("two", 2)));
    c.send(&bytes).await.unwrap();
    assert_eq!(c.expect_unary_reply(1).await, Msg::new("echo:one", 2));
    assert_eq!(c.expect_unary_reply(2).await, Msg::new("echo:two", 3));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_t_client_close_after_request_then_next_stream_works() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    bytes.extend(pkt(Kind::Message, 1, 2, &enc(&Msg::new("t", 1))));
    bytes.extend(pkt(Kind::Close, 1, 3, &[]));
    c.send(&bytes).await.unwrap();
    // The server had already answered the request.
    let m = c.packet().await;
    assert_eq!(m.id, Id::new(1, 1));
    assert_eq!(decode(&m), Msg::new("echo:t", 2));

    c.send(&unary_req(2, 1, rpc::UNARY, &Msg::new("two", 2)))
        .await
        .unwrap();
    // Whether stream 1's CloseSend went out before the Close arrived is a race (Go's capture
    // had none); anything else for stream 1 is wrong.
    let mut next: Packet = c.packet().await;
    if next.id == Id::new(1, 2) {
        assert_eq!(next.kind, Kind::CloseSend, "{next:?}");
        next = c.packet().await;
    }
    assert_eq!((next.id, next.kind), (Id::new(2, 1), Kind::Message));
    assert_eq!(decode(&next), Msg::new("echo:two", 3));
    let close = c.packet().await;
    assert_eq!((close.id, close.kind), (Id::new(2, 2), Kind::CloseSend));
    assert_served(s.addr).await;
}

const MAX: usize = 4 * 1024 * 1024;

/// Invoke `Len`, one Message of `len` bytes in frames of `split` bytes, CloseSend.
fn len_request(len: usize, split: usize) -> Vec<u8> {
    let mut bytes = pkt(Kind::Invoke, 1, 1, rpc::LEN.as_bytes());
    bytes.extend(split_packet(Kind::Message, 1, 2, &vec![0x5a; len], split));
    bytes.extend(pkt(Kind::CloseSend, 1, 3, &[]));
    bytes
}

#[tokio::test]
async fn probe_size_4mib_request_is_answered() {
    let s = RecordingServer::start().await;
    for split in [64 * 1024, 0] {
        let mut c = RawClient::connect(s.addr).await;
        c.send(&len_request(MAX, split)).await.unwrap();
        assert_eq!(
            c.expect_unary_reply(1).await,
            Msg::new("len", MAX as i64),
            "split {split}"
        );
    }
    assert_served(s.addr).await;
}

#[tokio::test]
async fn probe_size_plus_1_request_closes_with_data_overflow() {
    let s = RecordingServer::start().await;
    for split in [64 * 1024, 0] {
        let mut c = RawClient::connect(s.addr).await;
        let _ = c.send(&len_request(MAX + 1, split)).await;
        assert_closed_with(&s, &mut c, "size+1", |e| {
            matches!(e, ProtocolError::Wire(WireError::DataOverflow { len, max })
                if *len == MAX as u64 + 1 && *max == MAX)
        })
        .await;
    }
}

/// The raw client itself: silence is reported as silence, not as a close (so that the close
/// assertions above cannot pass on a server that merely hangs).
#[tokio::test]
async fn raw_client_tells_silence_from_close() {
    let s = RecordingServer::start().await;
    let mut c = RawClient::connect(s.addr).await;
    c.send(&pkt(Kind::Invoke, 1, 1, rpc::BIDI.as_bytes()))
        .await
        .unwrap();
    assert!(matches!(
        c.next(Duration::from_millis(100)).await,
        Reply::Silent
    ));
}
