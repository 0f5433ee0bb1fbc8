//! The go-away packet (a drpc-rs extension, `docs/wire.md` appendix B): a server that is draining or
//! closing an idle connection tells the client which streams it started before it closes its
//! side. It is a control packet of a kind storj/drpc does not assign, so a Go peer ignores it
//! (§9).
//!
//! Payload: one uvarint, the id of the last stream the server started on the connection (0 when
//! none). A stream with a higher id was not and will not be started: its call is unsent and may
//! be retried elsewhere. The frame carries the stream id `max(last invoked, 1)` and message id
//! [`GO_AWAY_MESSAGE`], above any message id a reply uses, so that it passes every reader's id
//! check.

use bytes::{Bytes, BytesMut};

use super::frame::{Id, Kind};
use super::packet::Packet;
use super::varint;

/// The kind bits of the go-away packet (unassigned upstream; sent with the control bit).
pub const GO_AWAY_KIND: u8 = 40;

/// The message id the go-away packet is sent with.
pub const GO_AWAY_MESSAGE: u64 = 1 << 62;

/// The go-away packet of a server that started streams up to `last_started` and saw Invokes
/// up to `last_invoked`.
pub fn packet(last_invoked: u64, last_started: u64) -> Packet {
    let mut data = BytesMut::with_capacity(10);
    varint::encode(last_started, &mut data);
    Packet {
        id: Id::new(last_invoked.max(1), GO_AWAY_MESSAGE),
        kind: Kind::Unknown(GO_AWAY_KIND),
        control: true,
        data: data.freeze(),
    }
}

/// The last started stream a go-away packet announces; `None` when `p` is no go-away packet
/// (or its payload does not decode).
pub fn parse(p: &Packet) -> Option<u64> {
    if !p.control || p.kind != Kind::Unknown(GO_AWAY_KIND) {
        return None;
    }
    parse_payload(&p.data)
}

fn parse_payload(data: &Bytes) -> Option<u64> {
    match varint::decode(data) {
        Ok(Some((v, _))) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_other_packets_are_not_go_away() {
        let p = packet(7, 6);
        assert_eq!(p.id, Id::new(7, GO_AWAY_MESSAGE));
        assert_eq!(parse(&p), Some(6));
        let first = packet(0, 0);
        assert_eq!(first.id.stream, 1);
        assert_eq!(parse(&first), Some(0));
        let mut not_control = packet(3, 3);
        not_control.control = false;
        assert_eq!(parse(&not_control), None);
        let cancel = Packet {
            id: Id::new(1, 2),
            kind: Kind::Cancel,
            control: true,
            data: Bytes::new(),
        };
        assert_eq!(parse(&cancel), None);
    }
}
