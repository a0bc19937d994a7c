"""The verifier's pure parts, as tables: framing scanner input into scans, and hints on what was scanned."""

from __future__ import annotations


import pytest

from verifier.scan import LineFramer, hint, to_items, to_scan


# --- framing -------------------------------------------------------------------------------------

FRAMING_CASES = [
    # name, chunks fed one after another, max_line, lines out (None = overlong), still pending
    ("LF", [b"ab\n"], 64, [b"ab"], False),
    ("CR LF is one end", [b"ab\r\ncd\r\n"], 64, [b"ab", b"cd"], False),
    ("CR alone ends a line", [b"ab\rcd\r"], 64, [b"ab", b"cd"], False),
    ("CR LF split across chunks", [b"ab\r", b"\ncd\n"], 64, [b"ab", b"cd"], False),
    ("empty lines ignored", [b"\n\n\r\n\rab\n\n"], 64, [b"ab"], False),
    ("a line over several chunks", [b"a", b"b", b"c\n"], 64, [b"abc"], False),
    ("held without terminator", [b"abc"], 64, [], True),
    ("exactly the cap", [b"x" * 64 + b"\n"], 64, [b"x" * 64], False),
    ("one over the cap, one chunk", [b"x" * 65 + b"\nok\n"], 64, [None, b"ok"], False),
    ("over the cap across chunks, reported once", [b"x" * 40, b"x" * 40, b"x" * 1000, b"x\r\nok\n"], 64,
     [None, b"ok"], False),
    ("over the cap, terminator not yet seen", [b"x" * 40, b"x" * 40], 64, [], True),
    ("two overlong lines, two reports", [b"x" * 100 + b"\n" + b"y" * 100 + b"\n"], 64, [None, None], False),
]


@pytest.mark.parametrize("name,chunks,cap,lines,pending", FRAMING_CASES, ids=[c[0] for c in FRAMING_CASES])
def test_framer(name, chunks, cap, lines, pending):
    framer = LineFramer(cap)
    out = []
    for chunk in chunks:
        out += framer.feed(chunk)
        assert len(framer._buffer) <= cap  # never accumulates past the cap
    assert out == lines
    assert framer.pending is pending


def test_framer_flush():
    framer = LineFramer(8)
    assert framer.flush() is False
    framer.feed(b"abc")
    assert framer.flush() == b"abc" and not framer.pending
    framer.feed(b"x" * 20)
    assert framer.pending and framer.flush() is None and not framer.pending


def test_framer_megabyte_line_in_small_chunks_stays_bounded():
    framer = LineFramer(4096)
    out = []
    for _ in range(256):
        out += framer.feed(b"A" * 4096)
        assert len(framer._buffer) <= 4096
    out += framer.feed(b"\nEHC1:X\n")
    assert out == [None, b"EHC1:X"]


def test_framer_items_equal_line_by_line_framing():
    """feed_items (chunks decoded and split in one go) answers as feed + to_scan on every line."""
    import random

    rng = random.Random(6)
    pieces = [b"A", b"EHC1:", b"\n", b"\r", b"\r\n", b"]Q1", b"\0", "健".encode(), b"\xff", b"x" * 30, b" "]
    for _ in range(3000):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        cap = rng.choice([64, 80, 4096])
        cuts = sorted(rng.sample(range(len(stream) + 1), min(len(stream) + 1, rng.randint(0, 6))))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        by_line, in_bulk = LineFramer(cap), LineFramer(cap)
        expected, got = [], []
        for chunk in chunks:
            expected += [to_scan(line, "s", "newline", cap) for line in by_line.feed(chunk)]
            got += in_bulk.feed_items(chunk, "s")
            assert (in_bulk._buffer, in_bulk._discarding) == (by_line._buffer, by_line._discarding), chunks
        # a str item stands for a clean scan of that text
        assert [to_scan(g.encode(), "s", "newline", cap) if isinstance(g, str) else g for g in got] == expected, chunks


def test_to_items():
    assert to_items([], "s", "newline", 64) == []
    assert to_items([b"EHC1:AB", b"EHC1:CD"], "s", "newline", 64) == ["EHC1:AB", "EHC1:CD"]
    mixed = to_items([b"EHC1:AB", None, b"]Q1EHC1:CD"], "s", "newline", 64)
    assert [m.text for m in mixed] == ["EHC1:AB", None, "EHC1:CD"] and "too long" in mixed[1].problem
    from verifier.scan import Scan, ScanBatch

    assert ScanBatch("s", "timeout", ["EHC1:AB", mixed[1]]).scans() == [Scan("EHC1:AB", "s", None, "timeout"),
                                                                        mixed[1]]


SCAN_CASES = [
    ("text", b"EHC1:ABC", "EHC1:ABC", None),
    ("AIM identifier removed", b"]Q1EHC1:ABC", "EHC1:ABC", None),
    ("NUL bytes", b"EHC1:\x00AB", None, "NUL"),
    ("invalid UTF-8", b"EHC1:\xff\xfe", None, "UTF-8"),
    ("overlong", None, None, "too long"),
    ("UTF-8 other text", "健康码".encode(), "健康码", None),
]


@pytest.mark.parametrize("name,line,text,problem", SCAN_CASES, ids=[c[0] for c in SCAN_CASES])
def test_to_scan(name, line, text, problem):
    scan = to_scan(line, "test", "newline", 4096)
    assert scan.text == text
    assert (scan.problem is None) if problem is None else (problem in scan.problem)


HINT_CASES = [
    ("our prefix", "EHC1:6BFOXN", None),
    ("two codes", "EHC1:6BFOXNEHC1:6BFOXN", "two codes"),
    ("EU DCC", "HC1:NCFOXN%TS3DH", "EU Digital COVID"),
    ("SMART Health Card", "shc:/56762909524320603460", "SMART Health Card"),
    ("web link", "https://example.org/x", "web link"),
    ("lower case wedge", "ehc1:6bfoxn", "lower case"),
    ("partial", "EHC", "partial"),
    ("other text", "hello world, not a code", None),
    ("a live code", "EHCD:6BFOXN", None),
    ("two live codes", "EHCD:6BFOXNEHCD:6BFOXN", "two codes"),
    ("a live code and a static code", "EHCD:6BFOXNEHC1:6BFOXN", "two codes"),
    ("a live code typed in lower case", "ehcd:6bfoxn", "lower case"),
]


@pytest.mark.parametrize("name,text,expected", HINT_CASES, ids=[c[0] for c in HINT_CASES])
def test_hint(name, text, expected):
    got = hint(text)
    assert (got is None) if expected is None else (expected in got)
