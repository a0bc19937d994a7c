"""Live codes at the terminal (issue 13, item 3): a phone's dynamic presentation typed by a real
keyboard wedge (a pty), the replay cache, the presentation window, a phone-bound credential shown on
its own, and the terminal's policy for static codes, as the display, the JSON line and the audit
row show them. Times are injected (the runtime's clock); the last test drives the real CLI on the
operator's own console.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading

import pytest

import healthcode as hc
from healthcode.algorithms import generate_signing_key
from healthcode.presentation import encode_presentation, holder_cnf, step_at
from tests.integration.verifier_runtime_support import (
    T0,
    H,
    Clock,
    Pty,
    World,
    audit_rows,
    lines_of,
    runtime_for,
    wait_for,
)
from verifier.audit import AuditEntry, AuditLog
from verifier.config import AuditConfig, CodePolicy, VerifierConfig
from verifier.scan import FdStream

NOW = T0 + H  # 2026-11-22 09:00:00 UTC = 17:00 Beijing time; a step boundary
SECOND = dt.timedelta(seconds=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("world"))


class Phone:
    """A phone: its device key and the credential the province's issuer bound to it."""

    def __init__(self, world: World, serial: int) -> None:
        self.key = generate_signing_key()
        point = self.key.public_key().spki_der()[-65:]
        claims = hc.CodeClaims(province="33", subject=hc.main_index_id_from_bytes(bytes(range(16))), serial=serial,
                               issued_at=T0 - H, expires_at=T0 + 7 * 24 * H, holder_key=holder_cnf(point))
        self.credential = hc.sign_code(claims, world.signers["33"])

    def show(self, at: dt.datetime) -> str:
        """The live code on the phone's screen at ``at``."""
        return encode_presentation(self.credential, step_at(at), self.key)


def wedge(world: World, tmp_path, scans: list[tuple[dt.datetime, str]], *, static_codes: str = "check-id"):
    """Type each text on a real pty at its (injected) time; the JSON records, the screen, the audit rows."""
    config = VerifierConfig(audit=AuditConfig(path=tmp_path / "audit.sqlite3"),
                            codes=CodePolicy(static_codes=static_codes))
    clock = Clock(NOW)
    runtime, out, screen, audit_log = runtime_for(world, clock, tmp_path, config=config)
    pty = Pty()
    runtime.add_stream(lambda: FdStream.open_tty(pty.path), name="wedge")

    def scanner():
        pty.wait_raw()
        for done, (at, text) in enumerate(scans):
            clock.now = at
            pty.type(text.encode() + b"\r\n")
            wait_for(lambda n=done: runtime.seq > n)
        pty.close()

    writer = threading.Thread(target=scanner)
    writer.start()
    runtime.run()
    writer.join()
    audit_log.close()
    shown = screen.getvalue().splitlines()  # the plain display: one line per result
    return lines_of(out), [line for line in shown if line.startswith("#")], audit_rows(tmp_path / "audit.sqlite3")


def test_a_live_code_is_valid_once_and_replayed_after(world, tmp_path):
    phone = Phone(world, serial=501)
    live = phone.show(NOW + 5 * SECOND)
    other = Phone(world, serial=502).show(NOW + 6 * SECOND)
    records, screens, rows = wedge(world, tmp_path, [
        (NOW + 10 * SECOND, live),
        (NOW + 20 * SECOND, live),   # the same presentation again (a screenshot passed on)
        (NOW + 25 * SECOND, other),  # another phone in the same step: its own presentation
        (NOW + 40 * SECOND, phone.show(NOW + 35 * SECOND)),  # the phone's next step: a new presentation
    ])
    first, again, second_phone, next_step = records
    assert (first["result"], first["reason"], first["kind"]) == ("valid", None, "dynamic")
    assert first["step"] == step_at(NOW) and first["step_time"] == "2026-11-22T09:00:00.000Z"
    assert first["serial"] == "501" and first["check_id"] is False and first["main_index_id"]
    assert (again["result"], again["reason"], again["kind"]) == ("invalid", "replayed", "dynamic")
    # verified before the replay cache refused it: its claims are the verified ones, not "unverified"
    assert again["serial"] == "501" and again["unverified"] is None and again["main_index_id"] is None
    assert [r["result"] for r in (second_phone, next_step)] == ["valid", "valid"]

    assert "VALID" in screens[0] and "动态码 live code (phone)" in screens[0]
    assert "生成于 / made at 2026-11-22 17:00:00 北京时间 (CST)" in screens[0]
    assert "INVALID" in screens[1] and "已扫描过" in screens[1] and "already scanned" in screens[1]
    assert "动态码 live code (phone)" in screens[1]

    assert [(r["result"], r["reason"], r["kind"], r["claims_verified"]) for r in rows[:2]] == [
        ("valid", None, "dynamic", 1), ("invalid", "replayed", "dynamic", 1)]
    assert rows[0]["step_time"] == rows[1]["step_time"] == "2026-11-22T09:00:00.000Z"
    assert rows[0]["serial"] == rows[1]["serial"] == "501"
    assert all(row["subject"] is None and row["raw"] is None for row in rows)  # privacy by default


def test_a_live_code_older_than_the_window_is_stale(world, tmp_path):
    """Made at 17:00:05 Beijing time: valid at +80 s (the window is 60-90 s), stale at +2 min."""
    phone = Phone(world, serial=503)
    made = NOW + 5 * SECOND
    records, screens, rows = wedge(world, tmp_path, [
        (NOW + 80 * SECOND, phone.show(made)),
        (NOW + 120 * SECOND, phone.show(made)),   # the same picture, two minutes on: a forwarded screenshot
        (NOW + 121 * SECOND, phone.show(NOW + 200 * SECOND)),  # a phone clock 79 s ahead
    ])
    assert [(r["result"], r["reason"]) for r in records] == [
        ("valid", None), ("invalid", "stale_presentation"), ("invalid", "future_presentation")]
    stale = records[1]
    assert stale["kind"] == "dynamic" and stale["step"] is None
    assert stale["unverified"] == {"province": "33", "kid": world.signers["33"].kid.hex(), "serial": "503"}
    assert "动态码已过时" in screens[1] and "Live code too old" in screens[1]
    assert rows[1]["reason"] == "stale_presentation" and rows[1]["claims_verified"] == 0
    assert rows[1]["serial"] == "503"


def test_a_credential_shown_alone_needs_the_phone(world, tmp_path):
    """The credential's own EHC1: text (a screenshot of the app's data, a printout) is refused."""
    phone = Phone(world, serial=504)
    records, screens, rows = wedge(world, tmp_path, [(NOW, phone.credential)])
    (record,) = records
    assert (record["result"], record["reason"], record["kind"]) == ("invalid", "presentation_required", "static")
    assert "静态码 printed/static code" in screens[0]
    assert "此码须在持码人手机上动态出示" in screens[0] and "must be shown live on the holder's phone" in screens[0]
    assert rows[0]["reason"] == "presentation_required"


STATIC_POLICIES = [
    # policy, result, reason, check_id, words on the display, words not on it
    ("accept", "valid", None, False, "静态码 printed/static code", "请核验身份证件"),
    ("check-id", "valid", None, True, "CHECK ID 请核验身份证件 / check the holder's identity document", None),
    ("refuse", "invalid", "static_code_refused", False,
     "本终端不接受静态码，请出示手机上的动态码 / Static codes are not accepted here", "请核验身份证件"),
]


@pytest.mark.parametrize("policy,result,reason,check_id,shown,not_shown", STATIC_POLICIES,
                         ids=[p[0] for p in STATIC_POLICIES])
def test_static_codes_under_each_policy(world, tmp_path, policy, result, reason, check_id, shown, not_shown):
    live = Phone(world, serial=505).show(NOW)
    records, screens, rows = wedge(world, tmp_path, [(NOW, world.valid[0]), (NOW, world.revoked), (NOW, live)],
                                   static_codes=policy)
    static, revoked, dynamic = records
    assert (static["result"], static["reason"], static["kind"], static["check_id"]) == (
        result, reason, "static", check_id)
    assert static["serial"] == "0" and static["province"] == "33"  # verified, whatever the policy
    assert (static["main_index_id"] is not None) is (result == "valid")
    assert shown in screens[0] and "静态码 printed/static code" in screens[0]
    assert not_shown is None or not_shown not in screens[0]
    # the policy is about valid static codes: a revoked one is revoked, a live code is unaffected
    assert (revoked["reason"], revoked["check_id"]) == ("revoked", False)
    assert (dynamic["result"], dynamic["kind"], dynamic["check_id"]) == ("valid", "dynamic", False)
    assert "请核验身份证件" not in screens[2]
    assert [(r["result"], r["reason"], r["kind"], r["check_id"], r["claims_verified"]) for r in rows] == [
        (result, reason, "static", int(check_id), 1), ("invalid", "revoked", "static", 0, 0),
        ("valid", None, "dynamic", 0, 1)]


def test_an_audit_database_of_the_previous_version_gets_the_new_columns(tmp_path):
    path = tmp_path / "audit.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, time TEXT NOT NULL, result TEXT NOT NULL, reason TEXT,"
                 " province TEXT, kid TEXT, serial TEXT, claims_verified INTEGER NOT NULL DEFAULT 0,"
                 " source TEXT NOT NULL, trust_age_s INTEGER, clock_behind INTEGER NOT NULL DEFAULT 0,"
                 " subject TEXT, raw TEXT)")
    conn.execute("INSERT INTO audit (time, result, source) VALUES ('2026-11-01T00:00:00.000Z', 'valid', 'stdin')")
    conn.commit()
    conn.close()
    path.chmod(0o600)
    log = AuditLog(AuditConfig(path=path), clock=lambda: NOW).start()
    log.record(AuditEntry("2026-11-22T09:00:00.000Z", "valid", None, "33", "ab", "1", 1, "stdin", 0, 0,
                          kind="dynamic", step_time="2026-11-22T09:00:00.000Z"))
    assert log.flush()
    log.close()
    old, new = audit_rows(path)
    assert (old["kind"], old["step_time"], old["check_id"]) == (None, None, 0)
    assert (new["kind"], new["step_time"], new["check_id"]) == ("dynamic", "2026-11-22T09:00:00.000Z", 0)


def test_on_the_operators_console_a_live_code_then_its_replay(world, tmp_path):
    """The real CLI on a pty (its clock fixed at 17:00 Beijing time): a live code, the same again."""
    from tests.integration.test_terminal_screen import Console

    live = Phone(world, serial=506).show(NOW)
    console = Console(world, "--static-codes", "check-id", cwd=tmp_path)
    try:
        console.wait_raw()
        console.read_until("ready")
        console.type(live)
        console.read_until("有效期至")
        console.type(live)
        console.read_until("already scanned")
        console.type(world.valid[1])
        screen = console.read_until("check the holder's identity document")
    finally:
        assert console.close() == 0
    first, replay, static = screen.split("\x1b[2J\x1b[H")[-3:]
    assert "动态码 live code (phone)，生成于 / made at 2026-11-22 17:00:00 北京时间 (CST)" in first
    assert "有效：健康码有效" in first and "请核验身份证件" not in first
    assert "无效：此动态码已扫描过" in replay
    assert "静态码 printed/static code" in static
    assert ">>> 请核验身份证件 / check the holder's identity document" in static
