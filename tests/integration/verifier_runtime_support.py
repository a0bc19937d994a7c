"""Shared harness of the scanner loop tests (test_verifier_runtime*.py, test_verifier_cli.py,
test_terminal_screen.py, test_live_codes.py).

:class:`World` (two provinces' keys, codes, a mirror, a synced cache), an injected
:class:`Clock`, :func:`runtime_for` and a real :class:`Pty`.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import pathlib
import sqlite3
import termios
import threading
import time

import pytest

import healthcode as hc
from verifier.audit import AuditLog
from verifier.config import AuditConfig, ScanConfig, VerifierConfig
from verifier.display import Display
from verifier.output import StreamSink
from verifier.runtime import Runtime
from verifier.trust_sources import DevBundleSource, dev_bundle_bytes


T0 = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)
H = dt.timedelta(hours=1)
WATCHDOG = 60.0  # no test may run the loop longer than this


class Clock:
    """An injected clock: stands still unless moved."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class World:
    """Two provinces' keys, codes signed with them, a mirror serving a dev bundle, a synced cache."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.mirror = root / "mirror"
        self.data_dir = root / "data"
        self.signers = {}
        keys = []
        for province in ("33", "44"):
            key = hc.generate_signing_key(hc.Algorithm.ES256)
            signer = hc.SoftwareSigner(key)
            self.signers[province] = signer
            keys.append(hc.TrustedKey(kid=signer.kid, province=province, public_key=key.public_key(),
                                      use_from=T0 - 30 * 24 * H, use_until=T0 + 60 * 24 * H,
                                      verify_until=T0 + 90 * 24 * H))
        self.keys = keys
        self.valid = [self.code("33", serial=i) for i in range(6)] + [self.code("44", serial=i) for i in range(4)]
        self.revoked = self.code("33", serial=1000)
        self.expired = self.code("44", serial=2000, issued=T0 - 10 * 24 * H, expires=T0 - 3 * 24 * H)
        self.publish(version=1)
        self.source().refresh(T0)

    def code(self, province: str, *, serial: int, issued: dt.datetime | None = None,
             expires: dt.datetime | None = None) -> str:
        issued = issued or T0 - H
        expires = expires or T0 + 30 * 24 * H  # outlives the trust-data limit, to test staleness
        claims = hc.CodeClaims(province=province, subject=hc.main_index_id_from_bytes(os.urandom(16)),
                               serial=serial, issued_at=issued, expires_at=expires)
        return hc.sign_code(claims, self.signers[province])

    def publish(self, *, version: int, extra_revoked: tuple[int, ...] = ()) -> None:
        self.mirror.mkdir(parents=True, exist_ok=True)
        revoked = {("33", self.signers["33"].kid): [1000, *extra_revoked]}
        (self.mirror / "bundle.json").write_bytes(dev_bundle_bytes(self.keys, version=version, revoked=revoked))

    def source(self) -> DevBundleSource:
        return DevBundleSource(self.data_dir / "trust", self.mirror)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("world"))


def runtime_for(world: World, clock: Clock, tmp_path: pathlib.Path, *, source=None, audit=True,
                config: VerifierConfig | None = None, background_sync=False, display_ansi=False):
    """A runtime writing JSON to a buffer, the display to a string and the audit log under tmp_path."""
    config = config or VerifierConfig(
        audit=AuditConfig(path=tmp_path / "audit.sqlite3"),
        scan=ScanConfig(frame_timeout=dt.timedelta(milliseconds=150), folder_poll=dt.timedelta(milliseconds=50)),
    )
    out = io.BytesIO()
    screen = io.StringIO()
    audit_log = AuditLog(config.audit, clock=clock).start() if audit else None
    runtime = Runtime(source or world.source(), config=config, clock=clock, sinks=[StreamSink(out)],
                      display=Display(screen, ansi=display_ansi), audit=audit_log,
                      background_sync=background_sync)
    runtime.load()
    watchdog = threading.Timer(WATCHDOG, runtime.stop)
    watchdog.daemon = True
    watchdog.start()
    return runtime, out, screen, audit_log


def lines_of(out: io.BytesIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().decode().splitlines()]


def audit_rows(path: pathlib.Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM audit ORDER BY id").fetchall()
    finally:
        conn.close()


class Pty:
    """A real pseudo-terminal: the test writes to the master as a scanner would type."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        self.path = os.ttyname(slave)
        os.close(slave)

    def wait_raw(self, timeout: float = 10.0) -> None:
        """Wait until the verifier has put the tty in byte mode (so nothing is echoed or edited)."""
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.master)[3] & termios.ICANON:
            assert time.monotonic() < deadline, "the verifier never configured the tty"
            time.sleep(0.01)

    def type(self, data: bytes, *, chunk: int = 0) -> None:
        if not chunk:
            os.write(self.master, data)
            return
        for i in range(0, len(data), chunk):
            os.write(self.master, data[i:i + chunk])

    def close(self) -> None:
        os.close(self.master)


def run_in_thread(runtime: Runtime) -> threading.Thread:
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    return thread


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _scan(text: str):
    from verifier.scan import Scan

    return Scan(text, "test", None, "newline")
