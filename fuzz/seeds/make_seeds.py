#!/usr/bin/env python3
"""Writes fuzz seeds from the Go captures in drpc-core/tests/data/transcripts (run from fuzz/seeds).

frame_decode and server_conn get each capture's client-to-server bytes; packet_assembly gets
the same bytes (libFuzzer's arbitrary decoding turns them into frame lists); metadata_decode
and error_decode get the InvokeMetadata and Error payloads found in the captures.
"""
import glob, os, re

here = os.path.dirname(os.path.abspath(__file__))
captures = os.path.join(here, "..", "..", "drpc-core", "tests", "data", "transcripts")

def varint(b, i):
    v, s = 0, 0
    while True:
        x = b[i]; i += 1
        v |= (x & 0x7F) << s; s += 7
        if x < 0x80:
            return v, i

def frames(hexline):
    b = bytes.fromhex(hexline)
    kind = (b[0] >> 1) & 0x3F
    _, i = varint(b, 1); _, i = varint(b, i); n, i = varint(b, i)
    return kind, b, b[i:i + n]

for target in ["frame_decode", "server_conn", "packet_assembly", "metadata_decode", "error_decode"]:
    os.makedirs(os.path.join(here, target), exist_ok=True)

for path in sorted(glob.glob(os.path.join(captures, "*.hex"))):
    name = os.path.basename(path)[:-4]
    c2s, md, errs = b"", [], []
    for line in open(path):
        m = re.match(r"^(C>S|S>C) ([0-9a-f]+)", line)
        if not m:
            continue
        kind, raw, payload = frames(m.group(2))
        if m.group(1) == "C>S":
            c2s += raw
        if kind == 7:
            md.append(payload)
        if kind == 3:
            errs.append(payload)
    for target in ["frame_decode", "server_conn", "packet_assembly"]:
        with open(os.path.join(here, target, name), "wb") as f:
            f.write(c2s)
    for i, p in enumerate(md):
        open(os.path.join(here, "metadata_decode", f"{name}-{i}"), "wb").write(p)
    for i, p in enumerate(errs):
        open(os.path.join(here, "error_decode", f"{name}-{i}"), "wb").write(p)
# The drpcmigrate preface followed by a unary call (probe Q).
unary = open(os.path.join(here, "server_conn", "01-unary"), "rb").read()
open(os.path.join(here, "server_conn", "preface-unary"), "wb").write(b"DRPC!!!1" + unary)
