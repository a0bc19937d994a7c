"""The scanner loop end to end, in-process: a real pty as a keyboard wedge, a serial port,
real PNG/JPEG images in a watched folder, no network at all, aging trust data, garbage input,
and the loop answering as ``verify_scan``.

Every test uses an injected clock; real time is only spent on I/O timeouts (bounded).
A sync that fails mid-run, the audit log and the HIS socket are in
``test_verifier_runtime_sync_audit.py``; the shared helpers (:class:`World`,
:func:`runtime_for`) in ``verifier_runtime_support.py``.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import socket
import threading
import time

import pytest

from verifier.config import AuditConfig, SyncConfig, VerifierConfig
from verifier.scan import FdStream, FolderSource, SerialStream
from verifier.trust_sources import DevBundleSource
from .verifier_runtime_support import (
    Clock,
    H,
    Pty,
    T0,
    _scan,
    audit_rows,
    lines_of,
    run_in_thread,
    runtime_for,
    wait_for,
)
from .verifier_runtime_support import world  # noqa: F401 - fixtures


# --- the keyboard wedge on a real pty ---------------------------------------------------------------


def test_pty_keyboard_wedge(world, tmp_path):  # noqa: F811 - the imported fixture
    clock = Clock(T0 + H)
    runtime, out, screen, audit_log = runtime_for(world, clock, tmp_path)
    pty = Pty()
    runtime.add_stream(lambda: FdStream.open_tty(pty.path), name="wedge")

    def scanner():
        pty.wait_raw()
        for i, code in enumerate(world.valid):
            pty.type(code.encode() + b"\r\n", chunk=(1, 7, 64, 0)[i % 4])  # keystroke-sized and larger writes
        pty.type(world.revoked.encode() + b"\r\n" + world.expired.encode() + b"\r\n")
        pty.type(world.valid[0].encode())  # a scanner with no Enter suffix: the pause ends the scan
        time.sleep(0.4)
        pty.type(b"\r\n")
        wait_for(lambda: runtime.seq >= len(world.valid) + 3)
        pty.close()

    writer = threading.Thread(target=scanner)
    writer.start()
    assert runtime.run() == len(world.valid) + 3
    writer.join()
    audit_log.close()

    results = lines_of(out)
    assert [r["result"] for r in results] == ["valid"] * len(world.valid) + ["invalid", "invalid", "valid"]
    assert [r["reason"] for r in results[-3:]] == ["revoked", None, None][:1] + ["expired", None]
    assert results[-1]["ended_by"] == "timeout"
    assert {r["province"] for r in results[:-3]} == {"33", "44"}
    assert results[-3]["unverified"] == {"province": "33", "kid": world.signers["33"].kid.hex(), "serial": "1000"}
    assert all(r["source"] == f"tty:{pty.path}" and r["trust"]["freshness"] == "fresh" for r in results)
    assert [r["seq"] for r in results] == list(range(1, len(results) + 1))

    rows = audit_rows(tmp_path / "audit.sqlite3")
    assert [row["result"] for row in rows] == [r["result"] for r in results]
    assert rows[-3]["serial"] == "1000" and rows[-3]["claims_verified"] == 0 and rows[-3]["reason"] == "revoked"
    assert rows[0]["claims_verified"] == 1 and rows[0]["kid"] == world.signers["33"].kid.hex()
    assert all(row["subject"] is None and row["raw"] is None for row in rows)  # privacy by default
    db_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("audit.sqlite3*"))
    assert all(r["main_index_id"] is None or r["main_index_id"].encode() not in db_bytes for r in results)
    assert "VALID" in screen.getvalue() and "浙江 Zhejiang (33)" in screen.getvalue()


def test_serial_scanner_without_terminator(world, tmp_path):  # noqa: F811 - the imported fixture
    """pyserial on a pty: codes sent with no terminator are split by the inter-character timeout."""
    clock = Clock(T0 + H)
    runtime, out, _, audit_log = runtime_for(world, clock, tmp_path, audit=False)
    pty = Pty()
    runtime.add_stream(lambda: SerialStream(pty.path, 9600), name="serial", reopen=False)
    thread = run_in_thread(runtime)
    pty.wait_raw()  # pyserial puts the port in raw mode
    for code in world.valid[:3]:
        pty.type(code.encode())
        wait_for(lambda n=runtime.seq: runtime.seq > n)
    pty.type(b"EHC1:6BF")  # a partial scan, then silence
    wait_for(lambda: runtime.seq >= 4)
    runtime.stop()
    thread.join(10)
    pty.close()
    results = lines_of(out)
    assert [r["result"] for r in results] == ["valid"] * 3 + ["invalid"]
    assert all(r["ended_by"] == "timeout" for r in results)
    assert results[-1]["reason"] == "malformed"


# --- garbage ----------------------------------------------------------------------------------------

GARBAGE = [
    # name, bytes typed (terminator included), reason, words in the detail
    ("binary garbage", bytes(range(1, 256)) * 3 + b"\n", "malformed", "UTF-8"),
    ("1 MB line", b"A" * (1 << 20) + b"\r\n", "malformed", "too long"),
    ("partial scan", b"EHC1:6BFOXN*TS0\r\n", "malformed", ""),
    ("two codes run together", None, "malformed", "two codes"),
    ("EU DCC", b"HC1:NCFOXN%TS3DH3ZSUZK+.V0ETD%65NL-AH-R6IOOK.IR9B+9G4G50PHZF0AT4V22F/8X*G3M9JUPY0BX/KR96R/S09T./0LWTKD33236J3TA3M*4VV2 73-E3GG396B-43O058YIB73A*G3W19UEBY5:PI0EGSP4*2DN43U*0CEBQ/GXQFY73CIBC:G 7376BXBJBAJ UNFMJCRN0H3PQN*E33H3OA70M3FMJIJN523.K5QZ4A+2XEN QT QTHC31M3+E32R44$28A9H0D3ZCL4JMYAZ+S-A5$XKX6T2YC 35H/ITX8GL2-LH/CJTK96L6SR9MU9RFGJA6Q3QR$P2OIC0JVLA8J3ET3:H3A+2+33U SAAUOT3TPTO4UBZIC0JKQTL*QDKBO.AI9BVYTOCFOPS4IJCOT0$89NT2V457U8+9W2KQ-7LF9-DF07U$B97JJ1D7WKP/HLIJLRKF1MFHJP7NVDEBU1J*Z222E.GJF67Z JA6B.38O4BH*HB0EGLE2%V -3O+J3.PI2G:M1SSP2Y3D38-G9C+Q6 1H2V-8ZAU+J6QJ3/6BH7H/KM4LEVDBLP1RKJ.B.SRJB2PKHY+P3$5BSX6BL7G7E*L5OGK:*VBP8%EK1ORKKOBS9-A$3F36ULMTG32%95Y1K+UR0T73MA$NI1QFB/$2L7/2$+4%KJQ 3*N9PI8R6F8-F1MF4C2 QR01P5ZF.LJB:VKGU6IP9NS+EH*0U: OJ21L6CQ9JAT\r\n", "malformed", "EU Digital COVID"),  # noqa: E501 - a real EU DCC text, kept whole
    ("NUL bytes", b"EHC1:\x00\x00\x00ABC\r\n", "malformed", "NUL"),
    ("invalid UTF-8", b"EHC1:\xc3\x28\xa0\xa1\r\n", "malformed", "UTF-8"),
    ("CR LF and spaces", b"   \r\n", "malformed", ""),
    ("lower-case wedge", None, "malformed", "lower case"),
    ("no Enter, then silence", b"EHC1:6BFOXN", "malformed", ""),
]


@pytest.mark.parametrize("name,data,reason,words", GARBAGE, ids=[g[0] for g in GARBAGE])
def test_garbage_on_the_wedge(world, tmp_path, name, data, reason, words):  # noqa: F811 - the imported fixture
    """Garbage gives INVALID with a reason (one per line in it); a good code right after still verifies."""
    if name == "two codes run together":
        data = (world.valid[0] + world.valid[1]).encode() + b"\r\n"
    if name == "lower-case wedge":
        data = world.valid[0].lower().encode() + b"\r\n"
    clock = Clock(T0 + H)
    runtime, out, _, audit_log = runtime_for(world, clock, tmp_path, audit=False)
    pty = Pty()
    runtime.add_stream(lambda: FdStream.open_tty(pty.path), name="wedge")

    def scanner():
        pty.wait_raw()
        pty.type(data, chunk=4096)
        if not data.endswith(b"\n"):
            wait_for(lambda: runtime.seq >= 1)  # ended by the frame timeout
        done = runtime.seq
        pty.type(world.valid[2].encode() + b"\r\n")
        wait_for(lambda: runtime.valid_count >= 1 and runtime.seq > done)
        pty.close()

    writer = threading.Thread(target=scanner)
    writer.start()
    runtime.run()
    writer.join()
    results = lines_of(out)
    *refused, last = results
    assert last["result"] == "valid" and refused  # binary garbage holds CR/LF bytes: it may be several scans
    assert all(r["result"] == "invalid" and r["reason"] == reason for r in refused)
    assert any(words in r["detail"] for r in refused), refused


def test_garbage_through_a_pipe_never_stops_the_loop(world, tmp_path):  # noqa: F811 - the imported fixture
    """Everything at once through a pipe (no frame timeout on pipes): one result per line."""
    clock = Clock(T0 + H)
    runtime, out, _, _ = runtime_for(world, clock, tmp_path, audit=False)
    read_fd, write_fd = os.pipe()
    runtime.add_stream(lambda: FdStream(read_fd, "pipe", owns=True), name="pipe")
    payload = b"".join(g[1] for g in GARBAGE if g[1] is not None and g[1].endswith(b"\n"))
    payload += world.valid[3].encode() + b"\n" + os.urandom(5000).replace(b"\n", b"") + b"\n"
    payload += world.valid[4].encode()  # last line without terminator: ends at EOF

    def feed():
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)

    threading.Thread(target=feed).start()
    runtime.run()
    results = lines_of(out)
    assert results[-1]["result"] == "valid" and results[-1]["ended_by"] == "eof"
    assert [r["result"] for r in results].count("valid") == 2
    assert all(r["reason"] == "malformed" for r in results if r["result"] == "invalid")


# --- images in a watched folder -------------------------------------------------------------------


def _images(world) -> dict[str, bytes]:  # noqa: F811 - the imported fixture
    from PIL import Image, ImageFilter

    from issuer.render import render_png

    def jpeg(image: Image.Image, quality: int = 40) -> bytes:
        buffer = io.BytesIO()
        image.convert("L").save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()

    base = Image.open(io.BytesIO(render_png(world.valid[5], scale=6)))
    return {
        "plain.png": render_png(world.valid[0]),
        "q40.jpg": jpeg(Image.open(io.BytesIO(render_png(world.valid[1], scale=5)))),
        "blurred.jpg": jpeg(base.convert("L").filter(ImageFilter.GaussianBlur(1.5)), 60),
        "rotated.png": _png(Image.open(io.BytesIO(render_png(world.valid[6], scale=5))).convert("L").rotate(
            17, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)),
        "revoked.png": render_png(world.revoked),
        "not-an-image.png": b"\x89PNG\r\n\x1a\n" + os.urandom(200),
        "blank.png": _png(Image.new("L", (200, 200), 255)),
    }


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_folder_of_dropped_images(world, tmp_path):  # noqa: F811 - the imported fixture
    clock = Clock(T0 + H)
    runtime, out, _, audit_log = runtime_for(world, clock, tmp_path)
    folder = tmp_path / "drop"
    folder.mkdir()
    runtime.add_folder(FolderSource(folder))
    thread = run_in_thread(runtime)
    images = _images(world)
    for name, data in images.items():
        temp = folder / f".{name}.tmp"  # written aside, then renamed into place
        temp.write_bytes(data)
        os.replace(temp, folder / name)
    (folder / "still-writing.jpg.part").write_bytes(b"partial")
    wait_for(lambda: runtime.seq >= len(images))
    time.sleep(0.2)  # a few more polls: nothing is processed twice
    runtime.stop()
    thread.join(10)
    audit_log.close()

    by_file = {r["source"].removeprefix("folder:"): r for r in lines_of(out)}
    assert len(lines_of(out)) == len(images)
    for name in ("plain.png", "q40.jpg", "blurred.jpg", "rotated.png"):
        assert by_file[name]["result"] == "valid", (name, by_file[name])
    assert by_file["revoked.png"]["reason"] == "revoked"
    assert "image unreadable" in by_file["not-an-image.png"]["detail"]
    assert by_file["blank.png"]["detail"] == "no QR code found in the image"
    assert sorted(p.name for p in (folder / "processed").iterdir()) == sorted(images)
    assert sorted(p.name for p in folder.iterdir()) == ["processed", "still-writing.jpg.part"]
    assert len(audit_rows(tmp_path / "audit.sqlite3")) == len(images)


# --- offline, aging, clock ----------------------------------------------------------------------------


def test_verifies_with_no_network_at_all(world, tmp_path, monkeypatch):  # noqa: F811 - the imported fixture
    """Every way to reach the network raises; verification runs from the cached trust data."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network is unreachable (blocked by the test)")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    clock = Clock(T0 + 5 * H)
    source = DevBundleSource(world.data_dir / "trust", "https://mirror.invalid/bundle.json", timeout=2)
    config = VerifierConfig(audit=AuditConfig(path=tmp_path / "audit.sqlite3"),
                            sync=SyncConfig(interval=dt.timedelta(hours=1), retry=dt.timedelta(hours=1)))
    runtime, out, screen, audit_log = runtime_for(world, clock, tmp_path, source=source, config=config,
                                                  background_sync=True)
    read_fd, write_fd = os.pipe()
    runtime.add_stream(lambda: FdStream(read_fd, "pipe", owns=True), name="pipe")
    threading.Thread(target=lambda: os.write(write_fd, "\n".join(world.valid).encode() + b"\n") and None).start()
    thread = run_in_thread(runtime)
    wait_for(lambda: runtime.seq >= len(world.valid) and runtime.sync_error is not None)
    os.close(write_fd)
    thread.join(10)
    audit_log.close()
    results = lines_of(out)
    assert [r["result"] for r in results] == ["valid"] * len(world.valid)
    assert attempts, "the background sync did try the network (and was refused)"
    assert "trust sync failed" in screen.getvalue()


AGE_CASES = [
    ("fresh", 2 * H, "valid", None, "fresh"),
    ("aging: verifies, warns", 80 * H, "valid", None, "aging"),
    ("past the hard limit: refused", 7 * 24 * H + 60 * dt.timedelta(seconds=1), "invalid", "trust_data_stale", "stale"),
]


@pytest.mark.parametrize("name,age,result,reason,freshness", AGE_CASES, ids=[c[0] for c in AGE_CASES])
def test_trust_data_ages_honestly(world, tmp_path, name, age, result, reason, freshness):  # noqa: F811 - the imported fixture
    clock = Clock(T0 + age)
    runtime, out, screen, _ = runtime_for(world, clock, tmp_path, audit=False)
    outcome = runtime.process(_scan(world.valid[0]))
    runtime.sinks[0].flush()
    record = lines_of(out)[0]
    assert (record["result"], record["reason"], record["trust"]["freshness"]) == (result, reason, freshness)
    assert record["trust"]["age_s"] == int(age.total_seconds())
    if freshness == "fresh":
        assert "WARNING" not in screen.getvalue()
    else:
        assert "WARNING 警告: 信任数据已" in screen.getvalue() and "/ trust data" in screen.getvalue()
    assert outcome.trust.level.value == freshness


def test_clock_behind_the_last_refresh_is_floored_and_flagged(world, tmp_path):  # noqa: F811 - the imported fixture
    clock = Clock(T0 - 3 * 24 * H)  # the RTC lost three days
    runtime, out, screen, _ = runtime_for(world, clock, tmp_path, audit=False)
    runtime.process(_scan(world.valid[0]))
    runtime.process(_scan(world.expired))
    runtime.sinks[0].flush()
    first, second = lines_of(out)
    assert first["result"] == "valid" and first["time"].startswith("2026-11-22T08:00:00")
    assert first["trust"]["clock_behind_s"] == 3 * 24 * 3600
    assert second["reason"] == "expired"  # expired before the last refresh: winding back does not help
    assert "clock 3 d behind" in screen.getvalue()


def test_the_loop_answers_as_verify_scan(world, tmp_path):  # noqa: F811 - the imported fixture
    """process_batch (the loop, with its shortcuts) gives, scan by scan, the JSON line and the audit row
    of verify_scan's answer: valid codes, refused ones, garbage, a clock behind, a replay window or not."""
    from verifier.output import encode, result_record
    from verifier.runtime import judge_for, outcome_of, verify_scan
    from verifier.scan import Scan, ScanBatch

    texts = [world.valid[0], world.revoked, world.expired, world.valid[7], world.valid[0] + world.valid[1],
             world.valid[2].lower(), "EHC1:6BFOXN", world.valid[3][:-4] + "AAAA"]
    items = [*texts, Scan(None, "tty:/dev/x", "input contains NUL bytes: binary data, not a code", "timeout"),
             Scan(world.valid[4], "folder:a \"b\".png", None, "image")]
    for now, keep in ((T0 + H, None), (T0 - 3 * 24 * H, dt.timedelta(hours=1))):
        clock = Clock(now)
        config = VerifierConfig(audit=AuditConfig(path=tmp_path / f"audit-{bool(keep)}.sqlite3",
                                                  keep_subject_for=keep))
        runtime, out, _, audit_log = runtime_for(world, clock, tmp_path, config=config)
        runtime.display = None  # the direct path for valid codes
        runtime.process_batch(ScanBatch("stdin", "newline", list(items)))
        runtime.sinks[0].flush()
        audit_log.close()
        state = runtime.state
        expected_lines, expected_rows = [], []
        for seq, item in enumerate(items, 1):
            scan = Scan(item, "stdin", None, "newline") if isinstance(item, str) else item
            result, trust = verify_scan(scan, state, config.freshness, system_now=now,
                                        judge=judge_for(config, replay=False))
            outcome = outcome_of(result, scan, seq, trust, trust_warnings=state.warnings)
            expected_lines.append(encode(result_record(outcome)))
            code, claimed = result.code, outcome.claimed
            province, kid, serial = ((code.province, code.kid.hex(), str(code.serial)) if code else
                                     (claimed[0], claimed[1].hex(), str(claimed[2])) if claimed else (None,) * 3)
            expected_rows.append((seq, outcome.trust.now.isoformat(timespec="milliseconds")[:23] + "Z",
                                  "valid" if code else "invalid", result.reason.value if result.reason else None,
                                  province, kid, serial, 1 if code else 0, scan.source,
                                  int(trust.age.total_seconds()), 0 if trust.clock_behind is None else 1,
                                  code.subject if code and keep else None, scan.text if keep else None,
                                  result.kind, None, 1 if result.check_id else 0))
        assert out.getvalue() == b"".join(expected_lines)
        assert [tuple(row) for row in audit_rows(config.audit.path)] == expected_rows
        assert sum(r["result"] == "valid" for r in lines_of(out)) == runtime.valid_count == 3


@pytest.mark.parametrize(("name", "keep", "valid_type"), [
    ("outside a replay window: valid codes in the short form", None, "ValidEntry"),
    ("inside a replay window: every row in full", dt.timedelta(hours=1), "AuditEntry"),
])
def test_the_loop_queues_typed_audit_entries(world, tmp_path, name, keep, valid_type):  # noqa: F811 - the imported fixture
    """Every row the loop hands the audit log is a named entry (AuditEntry, or ValidEntry for a valid
    static code outside a replay window), never a bare positional tuple."""
    from verifier import audit as audit_module
    from verifier.scan import ScanBatch

    queued = []

    class RecordingAudit:
        keep_subject = keep is not None
        problem = None

        def queue_rows(self, rows):
            queued.extend(rows)

    runtime, _, _, audit_log = runtime_for(world, Clock(T0 + H), tmp_path)
    audit_log.close()
    runtime.audit = RecordingAudit()
    runtime.display = None
    runtime.process_batch(ScanBatch("stdin", "newline", [world.valid[0], world.revoked, "EHC1:6BFOXN", "junk"]))
    assert [type(row).__name__ for row in queued] == [valid_type, "AuditEntry", "AuditEntry", "AuditEntry"], name
    assert all(isinstance(row, audit_module.AuditRow) for row in queued), name
    assert {row.source for row in queued} == {"stdin"}, name
    assert queued[1].reason == "revoked" and queued[1].claims_verified == 0, name
