"""The scanner loop end to end: a sync that fails mid-run, the audit log, and JSON lines to the HIS.

Every test uses an injected clock; real time is only spent on I/O timeouts (bounded).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import socket
import sqlite3

import pytest

from verifier.audit import AuditEntry, AuditLog
from verifier.config import AuditConfig, SyncConfig, VerifierConfig
from verifier.display import Display
from verifier.output import SocketSink
from verifier.runtime import Runtime
from verifier.scan import FdStream
from verifier.trust import SyncFailed
from .verifier_runtime_support import (
    Clock,
    H,
    T0,
    World,
    _scan,
    audit_rows,
    lines_of,
    run_in_thread,
    runtime_for,
    wait_for,
)
from .verifier_runtime_support import world  # noqa: F401 - fixtures


# --- sync --------------------------------------------------------------------------------------------


class FlakySource:
    """Delegates to a real source; every refresh after the first ``good`` raises."""

    def __init__(self, inner, good: int) -> None:
        self.inner = inner
        self.good = good
        self.calls = 0
        self.done = 0  # refreshes finished (well or not)

    def refresh(self, now, *, progress=None):
        self.calls += 1
        try:
            if self.calls > self.good:
                raise SyncFailed("mirror unreachable (test)")
            return self.inner.refresh(now, progress=progress)
        finally:
            self.done += 1

    def load(self, now):
        return self.inner.load(now)


def test_sync_that_fails_mid_run_keeps_the_last_good_data(world, tmp_path):  # noqa: F811 - the imported fixture
    local = World(tmp_path / "w")  # its own mirror: this test publishes a new revocation
    clock = Clock(T0 + H)
    source = FlakySource(local.source(), good=2)
    config = VerifierConfig(sync=SyncConfig(interval=dt.timedelta(hours=1), retry=dt.timedelta(hours=1)),
                            audit=AuditConfig(path=tmp_path / "audit.sqlite3"))
    runtime, out, screen, audit_log = runtime_for(local, clock, tmp_path, source=source, config=config,
                                                  background_sync=True)
    read_fd, write_fd = os.pipe()
    runtime.add_stream(lambda: FdStream(read_fd, "pipe", owns=True), name="pipe")
    thread = run_in_thread(runtime)
    wait_for(lambda: source.done >= 1 and runtime.sync_error is None)  # the first sync, at start
    local.publish(version=2, extra_revoked=(2,))
    runtime.request_sync()
    wait_for(lambda: source.done >= 2 and runtime.last_sync is not None and runtime.last_sync.changed)
    os.write(write_fd, (local.valid[2] + "\n").encode())  # revoked by the second, good, sync
    wait_for(lambda: runtime.seq >= 1)
    runtime.request_sync()  # from here on the mirror is gone
    wait_for(lambda: source.done >= 3 and runtime.sync_error is not None)
    clock.now = T0 + 2 * H
    os.write(write_fd, "\n".join(local.valid).encode() + b"\n")
    runtime.request_sync()
    wait_for(lambda: runtime.seq >= 1 + len(local.valid) and source.done >= 4)
    os.close(write_fd)
    thread.join(10)
    audit_log.close()

    results = lines_of(out)
    assert results[0]["reason"] == "revoked"
    after = results[1:]
    assert [r["result"] for r in after] == ["invalid" if i == 2 else "valid" for i in range(len(local.valid))]
    failed = ("trust sync failed / 信任数据同步失败: 无法读取信任数据 / "
              "cannot fetch trust data: mirror unreachable (test)")
    assert all(r["trust"]["sync_error"] == failed for r in after)
    assert all(r["trust"]["age_s"] <= 3600 for r in after)  # the last good refresh is still in force
    assert failed in screen.getvalue()
    assert "上次有效的数据继续使用 / last good data in force" in screen.getvalue()


# --- audit log ---------------------------------------------------------------------------------------


def test_audit_log_survives_a_full_disk(world, tmp_path):  # noqa: F811 - the imported fixture
    """SQLITE_FULL (a page cap stands in for the disk) is reported; the loop goes on; rows follow later."""
    clock = Clock(T0 + H)
    config = AuditConfig(path=tmp_path / "audit.sqlite3", batch_interval=dt.timedelta(milliseconds=10))
    log = AuditLog(config, clock=clock).start()
    log.flush()
    log.close()
    full = AuditLog(config, clock=clock, pragmas=["PRAGMA max_page_count = 4"]).start()
    runtime = Runtime(world.source(), clock=clock, audit=full, display=Display(io.StringIO(), ansi=False),
                      config=VerifierConfig(audit=config))
    runtime.load()
    for _ in range(1000):
        assert runtime.process(_scan(world.valid[0])).valid
    wait_for(lambda: full.problem is not None)
    assert "full" in full.problem
    assert any("audit log not writable" in w for w in runtime.warnings())
    full._conn.execute("PRAGMA max_page_count = 100000")  # space freed
    assert full.flush(10)
    assert full.problem is None
    full.close()
    assert len(audit_rows(config.path)) == 1000


def test_audit_rows_in_both_forms_keep_their_order_and_privacy(tmp_path):
    """Full rows and the short form of valid rows, interleaved, land in order; outside a replay
    window a subject or a raw code handed over anyway is not stored."""
    from verifier.audit import AuditEntry, ValidEntry

    config = AuditConfig(path=tmp_path / "audit.sqlite3", batch_interval=dt.timedelta(milliseconds=10))
    log = AuditLog(config, clock=Clock(T0)).start()
    short = ValidEntry("2026-11-22T08:00:00.000Z", "33", "ab", "1", "stdin", 60, 0, 1)
    full = AuditEntry("2026-11-22T08:00:00.001Z", "invalid", "revoked", "33", "ab", "2", 0, "stdin", 60, 1,
                      "SUBJECTSUBJECTSUBJECTSUBJE", "EHC1:RAW", "dynamic", "2026-11-22T08:00:00.000Z")
    log.queue_rows([short, full, short, *[short] * 300, full])
    log.record(full)
    assert log.flush()
    log.close()
    rows = [tuple(r)[1:] for r in audit_rows(config.path)]
    as_full = ("2026-11-22T08:00:00.000Z", "valid", None, "33", "ab", "1", 1, "stdin", 60, 0, None, None,
               "static", None, 1)
    stored_full = (*full[:10], None, None, *full[12:])
    assert rows == [as_full, stored_full, as_full, *[as_full] * 300, stored_full, stored_full]


def test_audit_replay_window_rotation_and_cap(world, tmp_path):  # noqa: F811 - the imported fixture
    clock = Clock(T0)
    config = AuditConfig(path=tmp_path / "audit.sqlite3", keep_subject_for=dt.timedelta(hours=1),
                         retention=dt.timedelta(days=2), max_rows=5)
    log = AuditLog(config, clock=clock).start()
    runtime = Runtime(world.source(), clock=clock, audit=log, config=VerifierConfig(audit=config))
    runtime.load()
    for i, hours in enumerate((0, 1, 2, 30, 49, 50, 50.5)):
        clock.now = T0 + 72 * H + dt.timedelta(hours=hours)  # trust data aging, still usable
        runtime.process(_scan(world.valid[i]))
    assert log.flush()
    rows = audit_rows(config.path)
    assert len(rows) == 7 and all(r["subject"] for r in rows)  # inside the window they are kept
    log.maintain()
    rows = audit_rows(config.path)
    # now = T0+72h+50.5h: older than 2 d deleted, at most 5 rows, subjects older than 1 h cleared
    assert [r["time"][:16] for r in rows] == ["2026-11-26T14:00", "2026-11-27T09:00", "2026-11-27T10:00",
                                              "2026-11-27T10:30"]
    assert [bool(r["subject"]) for r in rows] == [False, False, True, True]
    log.close()


# --- JSON to the HIS over a local socket -------------------------------------------------------------


def test_json_lines_to_a_unix_socket_that_comes_late(world, tmp_path):  # noqa: F811 - the imported fixture
    path = str(tmp_path / "his.sock")
    sink = SocketSink(f"unix:{path}")
    clock = Clock(T0 + H)
    runtime = Runtime(world.source(), clock=clock, sinks=[sink])
    runtime.load()
    for code in world.valid[:3]:
        runtime.process(_scan(code))
    sink.flush()
    wait_for(lambda: sink.problem is not None)  # the HIS is not listening yet: kept, reported
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    server.settimeout(10)
    runtime.process(_scan(world.revoked))
    sink.flush()
    conn, _ = server.accept()
    conn.settimeout(10)
    data = b""
    while data.count(b"\n") < 4:
        data += conn.recv(65536)
    records = [json.loads(line) for line in data.splitlines()]
    assert [r["result"] for r in records] == ["valid"] * 3 + ["invalid"]
    sink.close()
    conn.close()
    server.close()


def test_tcp_output_only_to_loopback():
    with pytest.raises(ValueError, match="loopback"):
        SocketSink("tcp:10.0.0.5:9000")


def test_audit_rows_beyond_max_pending_drop_the_oldest_when_a_write_fails(tmp_path):
    # A failed batch goes back to the front of the queue; rows queued meanwhile (the scan loop
    # goes on) push it over max_pending: the oldest rows are the ones dropped, as documented.
    def row(n: int) -> AuditEntry:
        return AuditEntry(f"t{n}", "invalid", "bad_format", None, None, None, 0, "stdin", 0, 0)

    audit = AuditLog(AuditConfig(path=tmp_path / "audit.sqlite3", batch_rows=4, max_pending=4),
                     clock=lambda: dt.datetime.now(dt.timezone.utc))

    class FailingConnection:
        def execute(self, sql, *args):
            if sql == "BEGIN":
                audit.queue_rows([row(4), row(5)])  # arrive while the batch is being written
                raise sqlite3.OperationalError("disk I/O error")

    audit.queue_rows([row(n) for n in range(4)])
    audit._conn = FailingConnection()
    with pytest.raises(sqlite3.OperationalError):
        audit._write_pending()
    assert [entry.time for entry in audit._pending] == ["t2", "t3", "t4", "t5"]
    assert audit.dropped == 2
