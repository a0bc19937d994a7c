"""The terminal's one scan path (``verifier/check.py``): ``verify`` and the run loop take the same steps.

Real keys, real codes and a live code from a real device key, a real dev trust bundle on disk
with a revoked serial, real SQLite audit logs and a real ``healthcode-verifier verify`` process.
The loop is checked to call :func:`verifier.check.check` and :func:`verifier.check.audit_row`
once per scan, in every mode (display or not, outcomes or not, audit or not), and to answer
as ``verify``'s path does, outcome by outcome; :func:`~verifier.check.audit_row` is table-tested.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import pathlib
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import healthcode as hc
from healthcode import generate_signing_key
from healthcode.presentation import encode_presentation, holder_cnf, step_at
from verifier import check as check_module
from verifier import runtime as runtime_module
from verifier.audit import AuditEntry, AuditLog, ValidEntry
from verifier.check import audit_row, check, instant_of, judge_for
from verifier.config import AuditConfig, CodePolicy, VerifierConfig
from verifier.display import Display
from verifier.output import StreamSink
from verifier.runtime import Runtime
from verifier.scan import Scan, ScanBatch
from verifier.trust_sources import DevBundleSource, dev_bundle_bytes

T0 = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.timezone.utc)  # a step boundary
H = dt.timedelta(hours=1)
ROOT = pathlib.Path(__file__).resolve().parents[2]


class World:
    """One province's key, static codes (one revoked, one expired), a phone's live code, a synced cache."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        key = hc.generate_signing_key(hc.Algorithm.ES256)
        self.signer = hc.SoftwareSigner(key)
        trusted = hc.TrustedKey(kid=self.signer.kid, province="33", public_key=key.public_key(),
                                use_from=T0 - 30 * 24 * H, use_until=T0 + 60 * 24 * H,
                                verify_until=T0 + 90 * 24 * H)
        self.valid = [self.code(serial=i) for i in range(3)]
        self.revoked = self.code(serial=1000)
        self.expired = self.code(serial=2000, issued=T0 - 10 * 24 * H, expires=T0 - 3 * 24 * H)
        device = generate_signing_key()
        claims = hc.CodeClaims(province="33", subject=hc.main_index_id_from_bytes(os.urandom(16)), serial=77,
                               issued_at=T0 - H, expires_at=T0 + 7 * 24 * H,
                               holder_key=holder_cnf(device.public_key().spki_der()[-65:]))
        self.live = encode_presentation(hc.sign_code(claims, self.signer), step_at(T0), device)
        (root / "mirror").mkdir()
        (root / "mirror" / "bundle.json").write_bytes(
            dev_bundle_bytes([trusted], version=1, revoked={("33", self.signer.kid): [1000]}))
        self.source().refresh(T0)

    def code(self, *, serial: int, issued: dt.datetime | None = None, expires: dt.datetime | None = None) -> str:
        claims = hc.CodeClaims(province="33", subject=hc.main_index_id_from_bytes(os.urandom(16)), serial=serial,
                               issued_at=issued or T0 - H, expires_at=expires or T0 + 30 * 24 * H)
        return hc.sign_code(claims, self.signer)

    def source(self) -> DevBundleSource:
        return DevBundleSource(self.root / "data" / "trust", self.root / "mirror")

    def scans(self) -> list:
        """A batch's items: valid, revoked, expired, a live code (then replayed), garbage, a framing problem."""
        return [self.valid[0], self.revoked, self.expired, self.live, self.live, "EHC1:6BFOXN",
                "not a code at all", self.valid[0] + self.valid[1],
                Scan(None, "tty:/dev/x", "input contains NUL bytes: binary data, not a code", "timeout"),
                Scan(self.valid[2], "folder:a.png", None, "image")]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("scan-path"))


def _runtime(world: World, tmp_path: pathlib.Path, *, display: bool, audit: bool, keep: dt.timedelta | None = None,
             static_codes: str = "check-id"):
    config = VerifierConfig(audit=AuditConfig(path=tmp_path / "audit.sqlite3", keep_subject_for=keep),
                            codes=CodePolicy(static_codes=static_codes))
    clock = lambda: T0  # noqa: E731 - an injected clock that stands still
    audit_log = AuditLog(config.audit, clock=clock).start() if audit else None
    out = io.BytesIO()
    runtime = Runtime(world.source(), config=config, clock=clock, sinks=[StreamSink(out)],
                      display=Display(io.StringIO()) if display else None, audit=audit_log)
    runtime.load()
    return runtime, out, audit_log


@pytest.mark.parametrize(("name", "display", "outcomes", "audit"), [
    ("no display, no outcomes (the benchmark's run)", False, False, True),
    ("display on", True, False, True),
    ("outcomes kept (Runtime.process)", False, True, True),
    ("no audit log", False, False, False),
])
def test_the_loop_takes_every_scan_through_check_and_audit_row(world, tmp_path, monkeypatch, name, display,
                                                               outcomes, audit):
    checked, rowed = [], []

    def counting_check(judge, at, seq, text, problem, source, ended_by):
        checked.append(seq)
        return check(judge, at, seq, text, problem, source, ended_by)

    def counting_audit_row(result, at, keep_subject):
        rowed.append(result.seq)
        return audit_row(result, at, keep_subject)

    monkeypatch.setattr(runtime_module, "check", counting_check)
    monkeypatch.setattr(runtime_module, "audit_row", counting_audit_row)
    runtime, out, audit_log = _runtime(world, tmp_path, display=display, audit=audit)
    items = world.scans()
    runtime.process_batch(ScanBatch("stdin", "newline", items), outcomes=outcomes)
    runtime.sinks[0].flush()
    if audit_log is not None:
        audit_log.close()
    assert checked == list(range(1, len(items) + 1)), name
    assert rowed == (checked if audit else []), name
    assert out.getvalue().count(b"\n") == len(items), name


@pytest.mark.parametrize(("name", "static_codes", "keep"), [
    ("check-id, outside a replay window", "check-id", None),
    ("accept, inside a replay window", "accept", dt.timedelta(hours=1)),
    ("refuse", "refuse", None),
])
def test_the_loop_answers_as_the_single_scan_path(world, tmp_path, name, static_codes, keep):
    """Runtime.process_batch's outcomes and audit rows equal instant_of + check + audit_row called one scan
    at a time with a judge of the same policy (its own replay cache: the second live code is replayed)."""
    runtime, _, audit_log = _runtime(world, tmp_path, display=True, audit=True, keep=keep, static_codes=static_codes)
    items = world.scans()
    got = runtime.process_batch(ScanBatch("stdin", "newline", items), outcomes=True)
    audit_log.close()
    config = runtime.config
    judge = judge_for(config, replay=True)
    at = instant_of(config.freshness, T0, runtime.state)
    want = []
    for seq, item in enumerate(items, 1):
        scan = Scan(item, "stdin", None, "newline") if isinstance(item, str) else item
        want.append(check(judge, at, seq, scan.text, scan.problem, scan.source, scan.ended_by))
    assert got == want, name
    assert [o.reason.value if o.reason else "valid" for o in got][:5] == (
        ["valid" if static_codes != "refuse" else "static_code_refused", "revoked", "expired", "valid", "replayed"])
    conn = sqlite3.connect(config.audit.path)
    try:
        rows = conn.execute("SELECT time, result, reason, province, kid, serial, claims_verified, source, "
                            "trust_age_s, clock_behind, subject, raw, kind, step_time, check_id "
                            "FROM audit ORDER BY id").fetchall()
    finally:
        conn.close()
    expected = []
    for outcome in want:
        row = audit_row(outcome, at, keep is not None)
        if isinstance(row, ValidEntry):
            row = AuditEntry(row.time, "valid", None, row.province, row.kid, row.serial, 1, row.source,
                             row.trust_age_s, row.clock_behind, None, None, "static", None, row.check_id)
        expected.append(tuple(row))
    assert rows == expected, name


def test_audit_row_forms(world):
    """The one row builder: the short form only for a valid static code outside a replay window."""
    config = VerifierConfig()
    state = world.source().load(T0)
    at = instant_of(config.freshness, T0, state)
    judge = judge_for(config, replay=False)

    def outcome(text):
        return check(judge, at, 1, text, None, "stdin", "newline")

    valid, revoked, live, garbage = (outcome(world.valid[0]), outcome(world.revoked), outcome(world.live),
                                     outcome("not a code at all"))
    stamp = "2026-11-22T09:00:00.000Z"
    kid = world.signer.kid.hex()
    short = audit_row(valid, at, False)
    assert type(short) is ValidEntry
    assert short == ValidEntry(stamp, "33", kid, "0", "stdin", 0, 0, 1)
    full = audit_row(valid, at, True)
    assert type(full) is AuditEntry
    assert full == AuditEntry(stamp, "valid", None, "33", kid, "0", 1, "stdin", 0, 0, valid.code.subject,
                              world.valid[0], "static", None, 1)
    assert audit_row(revoked, at, False) == AuditEntry(stamp, "invalid", "revoked", "33", kid, "1000", 0, "stdin",
                                                       0, 0, None, None, "static", None, 0)
    row = audit_row(live, at, False)
    assert type(row) is AuditEntry and row.kind == "dynamic" and row.serial == "77" and row.claims_verified == 1
    assert row.step_time == stamp and row.subject is None and row.raw is None
    assert audit_row(live, at, True).raw == world.live
    assert audit_row(garbage, at, True) == AuditEntry(stamp, "invalid", "malformed", None, None, None, 0, "stdin",
                                                      0, 0, None, "not a code at all", None, None, 0)


def test_instant_without_trust_data_refuses_every_code(world):
    config = VerifierConfig()
    at = instant_of(config.freshness, T0, None, "sync failed")
    assert at.hook is at.assessment and at.age_s is None and at.trust_warnings == () and at.sync_error == "sync failed"
    result = check(judge_for(config, replay=False), at, 1, world.valid[0], None, "stdin", "newline")
    assert result.reason is hc.Reason.TRUST_DATA_STALE and result.code is None


# The CLI's verify, in its own process, with check() counted: one call per scan, the same outcome.
_COUNTED = textwrap.dedent(
    """
    import atexit, sys
    from verifier import check as module
    calls = []
    original = module.check
    def counting(*args):
        calls.append(args[2])
        return original(*args)
    module.check = counting
    atexit.register(lambda: sys.stderr.write(f"check calls: {calls}\\n"))
    from verifier.__main__ import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize(("name", "text", "status", "reason"), [
    ("valid", 0, 0, None),
    ("revoked", 1, 1, "revoked"),
    ("live code", 2, 0, None),
])
def test_verify_goes_through_check(world, name, text, status, reason):
    texts = [world.valid[0], world.revoked, world.live]
    proc = subprocess.run(
        [sys.executable, "-c", _COUNTED, "--data-dir", str(world.root / "data"), "--dev-trust",
         "--source", str(world.root / "mirror"), "--now", T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
         "verify", "--json", texts[text]], capture_output=True, timeout=120, cwd=ROOT)
    assert proc.returncode == status, (name, proc.stderr.decode()[-800:])
    assert "check calls: [1]" in proc.stderr.decode(), name
    assert (f'"reason":"{reason}"' if reason else '"reason":null').encode() in proc.stdout, name
    assert check_module.check is check  # the process patched its own copy, not ours
