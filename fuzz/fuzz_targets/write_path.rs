//! The write path: arbitrary packet sequences, each through one of the three ways in (copy,
//! zero-copy `Bytes`, encode in place), flushed at arbitrary points into a transport that takes
//! an arbitrary number of bytes per call (vectored or plain). The bytes written must equal the
//! plain one-buffer encoding and decode back to the same packets.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use drpc_core::transport::fuzzing::{FrameWriter, Path, ScheduledWriter, flush_all};
use drpc_core::wire::{Id, Kind, PacketCodec, packet};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

#[derive(Debug, Arbitrary)]
struct Op {
    path: u8,
    kind: u8,
    control: bool,
    /// Payload length: small values mostly; `big` scales it up to the 4 MiB limit.
    len: u16,
    big: u8,
    flush_after: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    split: u32,
    vectored: bool,
    sizes: Vec<u32>,
    ops: Vec<Op>,
}

/// 4 MiB and a little of bytes that differ from their neighbours, made once; payloads are
/// slices of it at different offsets (so each packet's bytes differ).
fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Bytes::from(
            (0..(4 << 20) + 64)
                .map(|i: u32| i.wrapping_mul(2_654_435_761).to_be_bytes()[0])
                .collect::<Vec<u8>>(),
        )
    })
}

fuzz_target!(|input: Input| {
    let split = match input.split % 5 {
        0 => 0,
        1 => 64 << 10,
        2 => (64 << 10) + 3,
        _ => (input.split as usize % 200_000).max(1),
    };
    let ops: Vec<_> = input.ops.iter().take(8).collect();
    let mut total = 0usize;
    let packets: Vec<(Path, Id, Kind, bool, Bytes)> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let path = match op.path % 4 {
                0 => Path::Copy,
                1 => Path::Bytes,
                2 => Path::EncodeInPlace,
                _ => Path::Parts,
            };
            let kind = Kind::from_bits(op.kind % 16);
            // Megabyte payloads only on a rare marker (zero bytes are common in inputs), and
            // at most 6 MiB per input, so that the run stays fast.
            let len = if op.big == 0xa5 {
                (op.len as usize * 64).min(4 << 20)
            } else if op.big % 8 == 1 {
                op.len as usize * 2
            } else {
                op.len as usize % 4096
            };
            let len = len.min((6usize << 20).saturating_sub(total));
            // Keep tiny split sizes from making millions of frames.
            let len = if split != 0 && len / split > 2_000 { split * 2_000 } else { len };
            total += len;
            let data = pattern().slice(i..i + len);
            (path, Id::new(1, i as u64 + 1), kind, op.control, data)
        })
        .collect();
    let floor = total / 256;
    let sizes: Vec<usize> = input
        .sizes
        .iter()
        .take(16)
        .map(|&s| match s as usize {
            0 => 0,
            s => s.max(floor),
        })
        .collect();

    let mut w = FrameWriter::new(split);
    let mut io = ScheduledWriter::new(sizes, input.vectored);
    let mut want = BytesMut::new();
    for ((path, id, kind, control, data), op) in packets.iter().zip(&ops) {
        w.push(*path, *id, *kind, *control, data);
        let control = *control && *path == Path::Copy;
        packet::encode(&mut want, *id, *kind, control, data, split);
        if op.flush_after {
            flush_all(&mut w, &mut io);
        }
    }
    flush_all(&mut w, &mut io);
    assert!(w.is_empty());
    assert!(io.out == want[..], "written bytes differ from the plain encoding");

    let mut codec = PacketCodec::new(usize::MAX >> 1, split);
    let mut buf = BytesMut::from(&io.out[..]);
    for (_, id, kind, _, data) in &packets {
        let p = codec.decode(&mut buf).expect("valid").expect("a whole packet");
        assert_eq!((p.id, p.kind), (*id, *kind));
        assert!(p.data == *data);
    }
    assert!(buf.is_empty());
});
