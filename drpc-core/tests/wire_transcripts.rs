//! Replays the Go captures in `tests/data/transcripts/*.hex` through the wire layer.
//!
//! For every frame line: `Frame::decode` must take exactly all its bytes, agree with what the
//! line's comment says, and `Frame::encode` must give the same bytes back. For every direction
//! of every capture: the frames, concatenated, must come out of a `PacketCodec` as the packets the
//! comments name, whatever the segmentation (all at once, per captured TCP read, one byte at a
//! time, odd chunk sizes).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use Dir::{ClientToServer as C2S, ServerToClient as S2C};
use Kind::{Cancel, Close, CloseSend, Error, Invoke, InvokeMetadata, Message};
use bytes::BytesMut;
use drpc_core::Metadata;
use drpc_core::wire::packet::{self, DEFAULT_SPLIT_SIZE};
use drpc_core::wire::{Assembler, Frame, FrameCodec, Id, Kind, Packet, PacketCodec};
use tokio_util::codec::Decoder;

fn transcripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/transcripts")
}

/// The direction of a frame line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

impl Dir {
    fn parse(s: &str) -> Option<Dir> {
        match s {
            "C>S" => Some(Dir::ClientToServer),
            "S>C" => Some(Dir::ServerToClient),
            _ => None,
        }
    }
}

/// What a line's `# ...` comment says about its frame.
#[derive(Debug, Clone)]
struct Expect {
    kind_name: String,
    kind_bits: u8,
    stream: u64,
    message: u64,
    done: bool,
    control: bool,
    len: usize,
    /// `rpc='...'` of an Invoke.
    rpc: Option<String>,
    /// `code=N text='...'` of an Error.
    error: Option<(u64, String)>,
    /// `metadata-entries {k=v,...}` of an InvokeMetadata.
    metadata: Option<Vec<(String, String)>>,
}

/// One frame line of a capture.
#[derive(Debug, Clone)]
struct FrameLine {
    dir: Dir,
    /// The frame's bytes, with elided payload bytes restored.
    bytes: Vec<u8>,
    expect: Expect,
    /// The index of the `# tcp read` group the line belongs to.
    read: usize,
    line_no: usize,
}

/// A `# tcp read N DIR M bytes` comment.
#[derive(Debug, Clone)]
struct TcpRead {
    dir: Dir,
    bytes: usize,
    /// Whether the read carried bytes of a frame over from an earlier read.
    carried_over: bool,
}

#[derive(Debug)]
struct Transcript {
    name: String,
    frames: Vec<FrameLine>,
    reads: Vec<TcpRead>,
    elided: bool,
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The value after `key` in `comment`, up to the next space.
fn field<'a>(comment: &'a str, key: &str) -> Option<&'a str> {
    let start = comment.find(key)? + key.len();
    let rest = &comment[start..];
    Some(rest.split(' ').next().unwrap_or(rest))
}

/// The text between `key'` and the last `'` of the comment.
fn quoted(comment: &str, key: &str) -> Option<String> {
    let start = comment.find(key)? + key.len();
    let rest = &comment[start..];
    let end = rest.rfind('\'')?;
    Some(rest[..end].to_string())
}

fn parse_expect(comment: &str, line_no: usize) -> Expect {
    let first = comment.split(' ').next().unwrap();
    let (kind_name, kind) = first
        .split_once("(kind=")
        .unwrap_or_else(|| panic!("line {line_no}: no kind in {comment:?}"));
    let num = |key: &str| -> u64 {
        field(comment, key)
            .unwrap_or_else(|| panic!("line {line_no}: no {key} in {comment:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("line {line_no}: bad {key} in {comment:?}"))
    };
    let flag = |key: &str| -> bool {
        match num(key) {
            0 => false,
            1 => true,
            other => panic!("line {line_no}: {key}{other}"),
        }
    };
    let error = comment.find(" code=").map(|_| {
        (
            num(" code="),
            quoted(comment, " text='").expect("error text"),
        )
    });
    let metadata = comment.find("metadata-entries {").map(|at| {
        let rest = &comment[at + "metadata-entries {".len()..];
        let body = &rest[..rest.find('}').expect("closing brace")];
        body.split(',')
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (k, v) = e.split_once('=').expect("k=v");
                (k.to_string(), v.to_string())
            })
            .collect()
    });
    Expect {
        kind_name: kind_name.to_string(),
        kind_bits: kind.trim_end_matches(')').parse().expect("kind number"),
        stream: num(" stream="),
        message: num(" msg="),
        done: flag(" done="),
        control: flag(" control="),
        len: num(" len=") as usize,
        rpc: quoted(comment, " rpc='"),
        error,
        metadata,
    }
}

/// Restores a frame whose payload the capture elided (`<hex>...[N more payload bytes elided]`).
///
/// `11-large-split.hex` says: "elided bytes are all 0x78 = 'x' except the final 2 bytes 10 01 /
/// 10 02 of the protobuf" (10 01 for the request, C>S; 10 02 for the response, S>C). Those two
/// bytes end the last (`done=1`) frame of the packet.
fn restore_elided(visible: &str, more: usize, dir: Dir, done: bool) -> Vec<u8> {
    let mut bytes = hex(visible);
    let start = bytes.len();
    bytes.resize(start + more, b'x');
    if done {
        let n = bytes.len();
        bytes[n - 2] = 0x10;
        bytes[n - 1] = match dir {
            Dir::ClientToServer => 0x01,
            Dir::ServerToClient => 0x02,
        };
    }
    bytes
}

fn parse_transcript(name: &str) -> Transcript {
    let path = transcripts_dir().join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut frames = Vec::new();
    let mut reads = Vec::new();
    let mut elided = false;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("# tcp read ") {
            // "<n> <dir> <bytes> bytes[ (... carried over)]"
            let mut words = rest.split(' ');
            let _n = words.next();
            let dir = Dir::parse(words.next().unwrap()).expect("tcp read direction");
            let bytes = words.next().unwrap().parse().expect("tcp read size");
            reads.push(TcpRead {
                dir,
                bytes,
                carried_over: rest.contains("carried over"),
            });
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (data, comment) = line
            .split_once("  # ")
            .unwrap_or_else(|| panic!("{name}:{line_no}: no comment"));
        let (dir, hex_part) = data
            .split_once(' ')
            .unwrap_or_else(|| panic!("{name}:{line_no}: no direction"));
        let dir = Dir::parse(dir).unwrap_or_else(|| panic!("{name}:{line_no}: bad direction"));
        let expect = parse_expect(comment, line_no);
        let bytes = match hex_part.trim().split_once("...[") {
            None => hex(hex_part.trim()),
            Some((visible, tail)) => {
                elided = true;
                let more: usize = tail
                    .strip_suffix(" more payload bytes elided]")
                    .unwrap_or_else(|| panic!("{name}:{line_no}: bad elision {tail:?}"))
                    .parse()
                    .expect("elided count");
                restore_elided(visible, more, dir, expect.done)
            }
        };
        assert!(
            !reads.is_empty(),
            "{name}:{line_no}: frame before any tcp read"
        );
        frames.push(FrameLine {
            dir,
            bytes,
            expect,
            read: reads.len() - 1,
            line_no,
        });
    }
    assert!(!frames.is_empty(), "{name}: no frames");
    Transcript {
        name: name.to_string(),
        frames,
        reads,
        elided,
    }
}

/// Go's `Kind.String()` names.
fn go_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Invoke => "Invoke",
        Kind::Message => "Message",
        Kind::Error => "Error",
        Kind::Cancel => "Cancel",
        Kind::Close => "Close",
        Kind::CloseSend => "CloseSend",
        Kind::InvokeMetadata => "InvokeMetadata",
        Kind::Unknown(_) => "Unknown",
    }
}

/// Per-line checks: decode takes exactly all bytes, matches the comment, re-encodes identically,
/// and no strict prefix decodes.
fn check_frame_line(t: &Transcript, line: &FrameLine) -> Frame {
    let at = format!("{}:{}", t.name, line.line_no);
    let e = &line.expect;
    let (frame, used) = Frame::decode(&line.bytes)
        .unwrap_or_else(|err| panic!("{at}: {err}"))
        .unwrap_or_else(|| panic!("{at}: incomplete frame"));
    assert_eq!(used, line.bytes.len(), "{at}: bytes consumed");
    assert_eq!(frame.kind, Kind::from_bits(e.kind_bits), "{at}: kind");
    assert_eq!(frame.kind.bits(), e.kind_bits, "{at}: kind bits");
    assert_eq!(go_name(frame.kind), e.kind_name, "{at}: kind name");
    assert_eq!(frame.id, Id::new(e.stream, e.message), "{at}: id");
    assert_eq!(frame.done, e.done, "{at}: done");
    assert_eq!(frame.control, e.control, "{at}: control");
    assert_eq!(frame.data.len(), e.len, "{at}: payload length");

    let mut out = Vec::new();
    frame.encode(&mut out);
    assert_eq!(out, line.bytes, "{at}: re-encoding differs");
    assert_eq!(frame.encoded_len(), line.bytes.len(), "{at}: encoded_len");

    for cut in 0..line.bytes.len() {
        assert_eq!(
            Frame::decode(&line.bytes[..cut]).unwrap(),
            None,
            "{at}: a {cut}-byte prefix decoded"
        );
    }

    if let Some(rpc) = &e.rpc {
        assert_eq!(frame.kind, Kind::Invoke, "{at}");
        assert_eq!(&frame.data[..], rpc.as_bytes(), "{at}: rpc name");
    }
    frame
}

/// The packets one direction's comments name, with payloads from the decoded frames.
fn expected_packets(frames: &[(Frame, &FrameLine)]) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut building: Option<Packet> = None;
    for (frame, line) in frames {
        let e = &line.expect;
        let id = Id::new(e.stream, e.message);
        let kind = Kind::from_bits(e.kind_bits);
        match &mut building {
            Some(p) if p.id == id => {
                assert_eq!(
                    p.kind, kind,
                    "line {}: kind changes in a packet",
                    line.line_no
                );
                let mut data = BytesMut::from(&p.data[..]);
                data.extend_from_slice(&frame.data);
                p.data = data.freeze();
                p.control |= e.control;
            }
            _ => {
                building = Some(Packet {
                    id,
                    kind,
                    control: e.control,
                    data: frame.data.clone(),
                });
            }
        }
        if e.done {
            out.push(building.take().unwrap());
        }
    }
    assert!(building.is_none(), "a direction ends inside a packet");
    out
}

/// Runs `bytes` through a fresh `PacketCodec`, handing it `chunks` one after the other.
fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Packet> {
    let mut codec = PacketCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(p) = codec.decode(&mut buf).expect("decode") {
            out.push(p);
        }
    }
    assert_eq!(codec.decode_eof(&mut buf).expect("decode_eof"), None);
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

fn check_transcript(name: &str) -> Transcript {
    let t = parse_transcript(name);
    let decoded: Vec<(Frame, &FrameLine)> = t
        .frames
        .iter()
        .map(|line| (check_frame_line(&t, line), line))
        .collect();

    // Every captured TCP read holds exactly the frames listed under it (the capture with elided
    // payloads has reads that cut frames, so only its frame bytes can be checked).
    if !t.elided {
        for (i, read) in t.reads.iter().enumerate() {
            assert!(!read.carried_over, "{name}: read {} carried over", i + 1);
            let lines: Vec<&FrameLine> = t.frames.iter().filter(|l| l.read == i).collect();
            assert!(
                lines.iter().all(|l| l.dir == read.dir),
                "{name}: read {} mixes directions",
                i + 1
            );
            let total: usize = lines.iter().map(|l| l.bytes.len()).sum();
            assert_eq!(total, read.bytes, "{name}: size of tcp read {}", i + 1);
        }
    }

    for dir in [Dir::ClientToServer, Dir::ServerToClient] {
        let frames: Vec<(Frame, &FrameLine)> = decoded
            .iter()
            .filter(|(_, l)| l.dir == dir)
            .cloned()
            .collect();
        if frames.is_empty() {
            continue;
        }
        let at = format!("{name} {dir:?}");
        let expected = expected_packets(&frames);
        let stream: Vec<u8> = frames
            .iter()
            .flat_map(|(_, l)| l.bytes.iter().copied())
            .collect();

        // All at once.
        let got = decode_chunks([&stream[..]]);
        assert_eq!(got, expected, "{at}: all at once");
        // As the proxy read it: one chunk per `tcp read` group.
        let mut groups: Vec<Vec<u8>> = Vec::new();
        let mut last_read = None;
        for (_, l) in &frames {
            if last_read != Some(l.read) {
                groups.push(Vec::new());
                last_read = Some(l.read);
            }
            groups.last_mut().unwrap().extend_from_slice(&l.bytes);
        }
        assert_eq!(
            decode_chunks(groups.iter().map(Vec::as_slice)),
            expected,
            "{at}: per tcp read"
        );
        // One byte at a time, and a few odd chunk sizes.
        assert_eq!(
            decode_chunks(stream.chunks(1)),
            expected,
            "{at}: one byte at a time"
        );
        for size in [2, 3, 5, 7, 13, 4096, 65_537] {
            assert_eq!(
                decode_chunks(stream.chunks(size)),
                expected,
                "{at}: chunks of {size}"
            );
        }

        // A FrameCodec over the same bytes gives the same frames.
        let mut frame_codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut frames_out = Vec::new();
        for byte in stream.chunks(3) {
            buf.extend_from_slice(byte);
            while let Some(f) = frame_codec.decode(&mut buf).unwrap() {
                frames_out.push(f);
            }
        }
        assert!(buf.is_empty());
        let want: Vec<Frame> = frames.iter().map(|(f, _)| f.clone()).collect();
        assert_eq!(frames_out, want, "{at}: FrameCodec");

        // An Assembler fed the decoded frames agrees.
        let mut asm = Assembler::default();
        let assembled: Vec<Packet> = frames
            .iter()
            .filter_map(|(f, _)| asm.handle_frame(f.clone()).expect("assemble"))
            .collect();
        assert_eq!(assembled, expected, "{at}: Assembler");

        // Payloads the comments describe.
        for (frame, line) in &frames {
            let e = &line.expect;
            if let Some((code, text)) = &e.error {
                assert!(e.done, "{at}: a split Error");
                let got = drpc_core::wire::error::decode(&frame.data);
                assert_eq!(got, (*code, text.clone()), "{at}: error payload");
                assert_eq!(
                    &drpc_core::wire::error::to_bytes(*code, text)[..],
                    &frame.data[..],
                    "{at}: error payload re-encoding"
                );
            }
            if let Some(entries) = &e.metadata {
                let md = Metadata::decode(&frame.data).expect("metadata");
                let want: Metadata = entries.iter().cloned().collect();
                assert_eq!(md, want, "{at}: metadata");
                assert_eq!(md.encode_to_vec(), frame.data, "{at}: metadata re-encoding");
            }
        }

        // Re-encoding each packet with Go's default split size gives the captured bytes back.
        let mut out = BytesMut::new();
        for p in &expected {
            packet::encode(
                &mut out,
                p.id,
                p.kind,
                p.control,
                &p.data,
                DEFAULT_SPLIT_SIZE,
            );
        }
        assert_eq!(&out[..], &stream[..], "{at}: packet re-encoding");
    }
    t
}

/// (kind, stream, message, control) of each packet of one direction.
fn shape(t: &Transcript, dir: Dir) -> Vec<(Kind, u64, u64, bool)> {
    let frames: Vec<(Frame, &FrameLine)> = t
        .frames
        .iter()
        .filter(|l| l.dir == dir)
        .map(|l| (Frame::decode(&l.bytes).unwrap().unwrap().0, l))
        .collect();
    expected_packets(&frames)
        .iter()
        .map(|p| (p.kind, p.id.stream, p.id.message, p.control))
        .collect()
}

const KNOWN: &[&str] = &[
    "01-unary.hex",
    "02-unary-metadata.hex",
    "03-unary-twice-same-conn.hex",
    "04-server-stream.hex",
    "05-client-stream.hex",
    "06-bidi.hex",
    "07-error-with-code.hex",
    "08-unknown-rpc.hex",
    "09-soft-cancel.hex",
    "10-hard-cancel.hex",
    "11-large-split.hex",
    "12-concurrent-serialized.hex",
];

#[test]
fn every_transcript_file_has_a_test() {
    let on_disk: BTreeSet<String> = fs::read_dir(transcripts_dir())
        .expect("transcripts directory")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".hex"))
        .collect();
    let known: BTreeSet<String> = KNOWN.iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, known, "add a test for each new capture");
}

#[test]
fn every_transcript_file_replays() {
    // Also covers any capture added later; the named tests below check each one's packets.
    for entry in fs::read_dir(transcripts_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".hex") {
            check_transcript(&name);
        }
    }
}

#[test]
fn transcript_01_unary() {
    let t = check_transcript("01-unary.hex");
    assert_eq!(
        shape(&t, C2S),
        [
            (Invoke, 1, 1, false),
            (Message, 1, 2, false),
            (CloseSend, 1, 3, false),
            (Close, 1, 4, false),
        ]
    );
    assert_eq!(
        shape(&t, S2C),
        [(Message, 1, 1, false), (CloseSend, 1, 2, false)]
    );
}

#[test]
fn transcript_02_unary_metadata() {
    let t = check_transcript("02-unary-metadata.hex");
    assert_eq!(
        shape(&t, C2S),
        [
            (InvokeMetadata, 1, 1, false),
            (Invoke, 1, 2, false),
            (Message, 1, 3, false),
            (CloseSend, 1, 4, false),
            (Close, 1, 5, false),
        ]
    );
    assert_eq!(
        shape(&t, S2C),
        [(Message, 1, 1, false), (CloseSend, 1, 2, false)]
    );
    let md = Metadata::decode(&t.frames[0].bytes[4..]).unwrap();
    assert_eq!(md, Metadata::new().with("k", "v"));
}

#[test]
fn transcript_03_unary_twice_same_conn() {
    let t = check_transcript("03-unary-twice-same-conn.hex");
    assert_eq!(
        shape(&t, C2S),
        [
            (Invoke, 1, 1, false),
            (Message, 1, 2, false),
            (CloseSend, 1, 3, false),
            (Close, 1, 4, false),
            (Invoke, 2, 1, false),
            (Message, 2, 2, false),
            (CloseSend, 2, 3, false),
            (Close, 2, 4, false),
        ]
    );
    assert_eq!(
        shape(&t, S2C),
        [
            (Message, 1, 1, false),
            (CloseSend, 1, 2, false),
            (Message, 2, 1, false),
            (CloseSend, 2, 2, false),
        ]
    );
}

#[test]
fn transcript_04_server_stream() {
    let t = check_transcript("04-server-stream.hex");
    assert_eq!(
        shape(&t, C2S),
        [
            (Invoke, 1, 1, false),
            (Message, 1, 2, false),
            (CloseSend, 1, 3, false),
        ]
    );
    assert_eq!(
        shape(&t, S2C),
        [
            (Message, 1, 1, false),
            (Message, 1, 2, false),
            (Message, 1, 3, false),
            (CloseSend, 1, 4, false),
        ]
    );
}

#[test]
fn transcript_05_client_stream() {
    let t = check_transcript("05-client-stream.hex");
    assert_eq!(
        shape(&t, C2S),
        [
            (Invoke, 1, 1, false),
            (Message, 1, 2, false),
            (Message, 1, 3, false),
            (Message, 1, 4, false),
            (CloseSend, 1, 5, false),
        ]
    );
    assert_eq!(
        shape(&t, S2C),
        [(Message, 1, 1, false), (CloseSend, 1, 2, false)]
    );
}

#[test]
fn transcript_06_bidi() {
    let t = check_transcript("06-bidi.hex");
    assert_eq!(
        shape(&t, C2S),
        [
            (Invoke, 1, 1, false),
            (Message, 1, 2, false),
            (Message, 1, 3, false),
            (CloseSend, 1, 4, false),
        ]
    );
    assert_eq!(
        shape(&t, S2C),
        [
            (Message, 1, 1, false),
            (Message, 1, 2, false),
            (CloseSend, 1, 3, false),
        ]
    );
}

#[test]
fn transcript_07_error_with_code() {
    let t = check_transcript("07-error-with-code.hex");
    assert_eq!(
        shape(&t, S2C),
        [
            (Error, 1, 1, false),
            (Message, 2, 1, false),
            (CloseSend, 2, 2, false),
        ]
    );
    let error = t.frames.iter().find(|l| l.expect.kind_bits == 3).unwrap();
    let (frame, _) = Frame::decode(&error.bytes).unwrap().unwrap();
    assert_eq!(
        drpc_core::wire::error::decode(&frame.data),
        (42, "boom: bad".to_string())
    );
}

#[test]
fn transcript_08_unknown_rpc() {
    let t = check_transcript("08-unknown-rpc.hex");
    assert_eq!(shape(&t, S2C), [(Error, 1, 1, false)]);
    let error = t.frames.iter().find(|l| l.dir == S2C).unwrap();
    let (frame, _) = Frame::decode(&error.bytes).unwrap().unwrap();
    let (code, text) = drpc_core::wire::error::decode(&frame.data);
    assert_eq!(code, 0);
    assert_eq!(
        text,
        drpc_core::Error::unknown_rpc(b"/echo.Echo/Nope").to_string()
    );
}

#[test]
fn transcript_09_soft_cancel() {
    let t = check_transcript("09-soft-cancel.hex");
    assert_eq!(
        shape(&t, C2S),
        [
            (Invoke, 1, 1, false),
            (Message, 1, 2, false),
            (CloseSend, 1, 3, false),
            (Cancel, 1, 4, true),
            (Invoke, 2, 1, false),
            (Message, 2, 2, false),
            (CloseSend, 2, 3, false),
            (Close, 2, 4, false),
        ]
    );
    let cancel = t.frames.iter().find(|l| l.expect.kind_bits == 4).unwrap();
    assert_eq!(cancel.bytes, [0x89, 0x01, 0x04, 0x00]);
}

#[test]
fn transcript_10_hard_cancel() {
    let t = check_transcript("10-hard-cancel.hex");
    assert_eq!(
        shape(&t, C2S),
        [
            (Invoke, 1, 1, false),
            (Message, 1, 2, false),
            (CloseSend, 1, 3, false),
        ]
    );
    assert!(shape(&t, S2C).is_empty());
}

#[test]
fn transcript_11_large_split_reassembles_to_one_packet() {
    let t = check_transcript("11-large-split.hex");
    assert!(t.elided);
    for (dir, message, last) in [(C2S, 2, 0x01), (S2C, 1, 0x02)] {
        let lines: Vec<&FrameLine> = t.frames.iter().filter(|l| l.dir == dir).collect();
        let bytes: Vec<u8> = lines.iter().flat_map(|l| l.bytes.clone()).collect();
        // The two frames of the split message, exactly as Go wrote their headers.
        let split: Vec<&FrameLine> = lines
            .iter()
            .copied()
            .filter(|l| l.expect.kind_bits == 2)
            .collect();
        assert_eq!(split.len(), 2, "{dir:?}");
        assert_eq!(split[0].bytes[..6], [0x04, 0x01, message, 0x80, 0x80, 0x04]);
        assert_eq!(split[1].bytes[..5], [0x05, 0x01, message, 0xf6, 0x22]);

        let whole = decode_chunks([&bytes[..]]);
        let bytewise = decode_chunks(bytes.chunks(1));
        assert_eq!(whole, bytewise);
        let messages: Vec<&Packet> = whole.iter().filter(|p| p.kind == Message).collect();
        assert_eq!(messages.len(), 1, "{dir:?}: one reassembled Message");
        let m = messages[0];
        assert_eq!(m.id, Id::new(1, u64::from(message)));
        assert!(!m.control);
        assert_eq!(m.data.len(), 70_006);
        assert_eq!(m.data[..4], [0x0a, 0xf0, 0xa2, 0x04]);
        assert!(m.data[4..70_004].iter().all(|&b| b == b'x'));
        assert_eq!(m.data[70_004..], [0x10, last]);

        // Splitting the packet again gives Go's two frames, byte for byte.
        let frames = packet::split(m, DEFAULT_SPLIT_SIZE);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].data.len(), 65_536);
        assert_eq!(frames[1].data.len(), 4_470);
        assert!(!frames[0].done && frames[1].done);
        let mut again = Vec::new();
        frames[0].encode(&mut again);
        assert_eq!(again, split[0].bytes);
        again.clear();
        frames[1].encode(&mut again);
        assert_eq!(again, split[1].bytes);
    }
    assert_eq!(
        shape(&t, C2S),
        [
            (Invoke, 1, 1, false),
            (Message, 1, 2, false),
            (CloseSend, 1, 3, false),
            (Close, 1, 4, false),
        ]
    );
    assert_eq!(
        shape(&t, S2C),
        [(Message, 1, 1, false), (CloseSend, 1, 2, false)]
    );
}

#[test]
fn transcript_12_concurrent_serialized() {
    let t = check_transcript("12-concurrent-serialized.hex");
    assert_eq!(
        shape(&t, C2S),
        [
            (Invoke, 1, 1, false),
            (Message, 1, 2, false),
            (CloseSend, 1, 3, false),
            (Close, 1, 4, false),
            (Invoke, 2, 1, false),
            (Message, 2, 2, false),
            (CloseSend, 2, 3, false),
            (Close, 2, 4, false),
        ]
    );
    assert_eq!(
        shape(&t, S2C),
        [
            (Message, 1, 1, false),
            (CloseSend, 1, 2, false),
            (Message, 2, 1, false),
            (CloseSend, 2, 2, false),
        ]
    );
}
