"""What the verifier writes and shows: the JSON line, the operator display, the clock, and messages
in Chinese and English with Beijing time.
"""

from __future__ import annotations

import datetime as dt

import pytest

import healthcode as hc
from verifier.config import FreshnessPolicy
from verifier.trust import assess


T0 = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)
H = dt.timedelta(hours=1)
POLICY = FreshnessPolicy()  # warn 72 h, refuse 7 d, skew 5 min


# --- the JSON line: the fast encoder equals the documented record --------------------------------------


def _outcomes():
    from verifier.runtime import Outcome
    from verifier.verdict import TerminalReason

    verified = hc.VerifiedCode("33", hc.main_index_id_from_bytes(bytes(range(16))), 2**64 - 1, 1_790_000_000,
                               1_790_600_000, b"\x01\x02\xff", "ES256", None, 3, {})
    fresh = assess(POLICY, system_now=T0 + H, last_verified=T0)
    behind = assess(POLICY, system_now=T0 - 2 * H, last_verified=T0)
    missing = assess(POLICY, system_now=T0, last_verified=None)
    return [
        ("valid", Outcome(1, "tty:/dev/pts/3", "newline", verified, None, "valid", fresh)),
        ("valid, status none, clock behind, sync error, warnings",
         Outcome(2, "stdin", "timeout", verified._replace(status=None), None, "valid", behind,
                 "trust sync failed: \"quoted\" \\ path", None, None, ("revocation 未同步", "b"))),
        ("revoked with unverified claims", Outcome(3, "folder:a b.png", "image", None, hc.Reason.REVOKED,
                                                   "code has been revoked", fresh, None, "EHC1:X",
                                                   ("44", b"\xab", 12))),
        ("malformed, control characters in the detail", Outcome(4, "serial:/dev/ttyUSB0", "eof", None,
                                                                hc.Reason.MALFORMED, "bad\x00\n\t\u2028 ✓", missing)),
        ("valid static code, check the identity document",
         Outcome(5, "stdin", "newline", verified, None, "valid", fresh, None, None, None, (), "static", None, True)),
        ("valid live code", Outcome(6, "stdin", "newline", verified, None, "valid", fresh, None, None, None, (),
                                    "dynamic", 59_666_666, False)),
        ("live code scanned again", Outcome(7, "stdin", "newline", verified, hc.Reason.REPLAYED,
                                            "this live code was already scanned", fresh, None, None, None, (),
                                            "dynamic", 0, False)),
        ("static code refused by the policy",
         Outcome(8, "stdin", "newline", verified, TerminalReason.STATIC_CODE_REFUSED,
                 "static codes are not accepted at this terminal", fresh, None, None, None, (), "static")),
        ("stale live code, unverified claims", Outcome(9, "stdin", "newline", None, hc.Reason.STALE_PRESENTATION,
                                                       "presentation is 120 s old", fresh, None, "EHCD:X",
                                                       ("44", b"\xab", 12), (), "dynamic")),
    ]


@pytest.mark.parametrize("include_subject", [True, False])
@pytest.mark.parametrize("name,outcome", _outcomes(), ids=[o[0] for o in _outcomes()])
def test_fast_json_line_is_the_documented_record(name, outcome, include_subject):
    import json

    from verifier.output import encode, encode_result, result_record

    fast = encode_result(outcome, include_subject=include_subject)
    reference = encode(result_record(outcome, include_subject=include_subject))
    assert fast == reference
    assert fast.endswith(b"\n") and fast.count(b"\n") == 1
    assert list(json.loads(fast)) == list(result_record(outcome, include_subject=include_subject))


@pytest.mark.parametrize("include_subject", [True, False])
@pytest.mark.parametrize("source,sync_error,warnings", [
    ("stdin", None, ()),
    ("tty:/dev/扫描枪 \"1\"", "trust sync failed: mirror 不可达", ("revocation 未同步", "b")),
])
def test_valid_lines_are_the_documented_record(include_subject, source, sync_error, warnings):
    """The run loop's line for a valid code (ValidLines) is byte for byte the documented record."""
    from verifier.audit import iso_utc
    from verifier.output import ValidLines, encode, kind_part, result_record, source_part, trust_part
    from verifier.runtime import Outcome

    code = hc.VerifiedCode("44", hc.main_index_id_from_bytes(bytes(range(16))), 2**64 - 1, 86_399,
                           4_294_967_295, b"\x01\x02\xff", "ES256", None, 7, {})
    lines = ValidLines(include_subject=include_subject)
    for trust in (assess(POLICY, system_now=T0 + H, last_verified=T0),
                  assess(POLICY, system_now=T0 - 2 * H, last_verified=T0)):
        lines.at(iso_utc(trust.now), trust_part(trust, sync_error, warnings))
        for verified, kind, step, check_id in ((code, "static", None, True),
                                               (code._replace(status=None, serial=0, iat=0, exp=1), "static",
                                                None, False),
                                               (code, "dynamic", 59_666_666, False)):
            outcome = Outcome(12, source, "timeout", verified, None, "valid", trust, sync_error, None, None,
                              warnings, kind, step, check_id)
            fast = lines.line(12, verified, str(verified.serial), source_part(source, "timeout"),
                              kind_part(kind, step, check_id))
            assert fast == encode(result_record(outcome, include_subject=include_subject))


# --- the operator display -------------------------------------------------------------------------------


@pytest.mark.parametrize("ansi", [True, False])
def test_display_shows_the_answer_in_both_languages(ansi):
    import io

    from verifier.display import REASON_TEXT, Display
    from verifier.verdict import TerminalReason

    outcomes = dict(_outcomes())
    screen = io.StringIO()
    display = Display(screen, ansi=ansi)
    display.show(outcomes["valid"], [])
    display.show(outcomes["revoked with unverified claims"], ["trust sync failed: mirror down"])
    display.notice("trust data synced")
    text = screen.getvalue()
    assert "健康码有效" in text and "The health code is valid" in text
    assert "健康码已被撤销" in text and "Code has been revoked" in text
    assert "浙江 Zhejiang (33)" in text and "广东 Guangdong (44, 未验证 unverified)" in text
    assert "trust sync failed: mirror down" in text and "trust data synced" in text
    assert ("█" in text) is ansi
    assert set(REASON_TEXT) == {None, *hc.Reason, *TerminalReason}  # every reason has words


def test_display_never_raises_on_a_broken_stream():
    import io

    from verifier.display import Display

    stream = io.StringIO()
    stream.close()
    Display(stream, ansi=False).show(dict(_outcomes())["valid"], [])


def test_millisecond_clock():
    """The CLI's clock: aware UTC, whole milliseconds, one object per millisecond."""
    import time

    from verifier.__main__ import millisecond_clock

    clock = millisecond_clock()
    before = dt.datetime.now(dt.timezone.utc)
    first, second = clock(), clock()
    after = dt.datetime.now(dt.timezone.utc)
    assert first.tzinfo is dt.timezone.utc and first.microsecond % 1000 == 0
    assert before - dt.timedelta(milliseconds=1) <= first <= second <= after
    assert second is first or second > first
    time.sleep(0.002)
    assert clock() > first


# --- a failed sync, in words (issue 11, item 13) --------------------------------------------------

SYNC_FAILURE_CASES = [
    ("urllib3 connection refused",
     "fetching timestamp: mirror unavailable: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded "
     "with url: /metadata/timestamp.json (Caused by NewConnectionError('<urllib3.connection.HTTPConnection object "
     "at 0x7f0>: Failed to establish a new connection: [Errno 111] Connection refused'))",
     "镜像拒绝连接 / mirror refused the connection"),
    ("urllib3 name resolution",
     "mirror unavailable: HTTPSConnectionPool(host='trust.example', port=443): Max retries exceeded (Caused by "
     "NameResolutionError(\"Failed to resolve 'trust.example' ([Errno -2] Name or service not known)\"))",
     "镜像主机名无法解析 / mirror host name not found"),
    ("read timeout", "mirror unavailable: HTTPSConnectionPool(host='x', port=443): Read timed out. (read timeout=30)",
     "连接镜像超时 / mirror timed out"),
    ("HTTP status", "fetching snapshot: mirror answered HTTP 404", "镜像返回 HTTP 404 / mirror answered HTTP 404"),
    ("USB stick gone", "cannot read trust bundle from /media/usb: [Errno 2] No such file or directory: '/media/usb'",
     "找不到信任数据源 / trust source not found"),
]


@pytest.mark.parametrize("name,text,words", SYNC_FAILURE_CASES, ids=[c[0] for c in SYNC_FAILURE_CASES])
def test_sync_failure_is_one_short_bilingual_line(name, text, words):
    from verifier.trust import SyncFailed, TrustDataRejected, sync_failure

    line = sync_failure(SyncFailed(text))
    assert line == f"trust sync failed / 信任数据同步失败: {words}"
    assert "ConnectionPool" not in line and "Caused by" not in line and "\n" not in line
    rejected = sync_failure(TrustDataRejected("rollback refused: version 1 is older than 2"))
    assert rejected.startswith(
        "trust sync failed / 信任数据同步失败: 镜像数据未通过验证 / mirror data rejected: rollback")


# --- what the operator reads: Chinese and English, Beijing time (issue 11, item 13) ----------------

DETAIL_CASES = [
    ("EU DCC", hc.Reason.MALFORMED, "an EU Digital COVID Certificate (HC1:), not a Chinese health code",
     "欧盟数字新冠证书"),
    ("two codes", hc.Reason.MALFORMED, "two codes run together: scan one code at a time", "两个码连在一起"),
    ("overlong", hc.Reason.MALFORMED, "input line too long (over 4096 bytes): discarded", "超过 4096 字节"),
    ("unknown key", hc.Reason.UNKNOWN_KEY, "no trusted key of province 33 with kid 0102",
     "省份 33 没有编号为 0102"),
    ("revoked", hc.Reason.REVOKED, "code has been revoked", "健康码已被撤销"),
    ("codec detail", hc.Reason.MALFORMED, "bad Base45: odd length", "内容无法解析"),
    ("unknown detail of a known reason", hc.Reason.BAD_SIGNATURE, "something new", "签名无效"),
]


@pytest.mark.parametrize("name,reason,detail,zh", DETAIL_CASES, ids=[c[0] for c in DETAIL_CASES])
def test_refusal_detail_in_chinese(name, reason, detail, zh):
    from verifier.display import detail_zh

    assert zh in detail_zh(reason, detail)


def test_times_in_messages_are_shown_in_beijing_time():
    from verifier.display import beijing_times

    text = "trust data frozen: timestamp metadata expired at 2026-11-22T20:30:00Z; since 2026-11-22T08:00:00.123Z"
    assert beijing_times(text) == ("trust data frozen: timestamp metadata expired at "
                                   "2026-11-23 04:30:00 北京时间 (CST); since 2026-11-22 16:00:00 北京时间 (CST)")


def test_a_live_code_gets_the_terminals_issuer_clock_tolerance():
    """A credential issued by a clock 4 minutes ahead: refused with the phone's 30 s alone, accepted
    with the terminal's 5-minute tolerance for issuers (as static codes are)."""
    import datetime as dt

    from healthcode import presentation as hp
    from healthcode.algorithms import generate_signing_key
    from verifier.verdict import Judge

    now = dt.datetime(2026, 12, 7, 4, 0, tzinfo=dt.timezone.utc)
    issuer = hc.SoftwareSigner(generate_signing_key())
    device = generate_signing_key()
    ring = hc.Keyring([hc.TrustedKey(kid=issuer.kid, province="33", public_key=issuer.public_key(),
                                     use_from=now - dt.timedelta(days=1), use_until=now + dt.timedelta(days=1),
                                     verify_until=now + dt.timedelta(days=30))])
    credential = hc.sign_code(hc.CodeClaims(
        province="33", subject=hc.main_index_id_from_bytes(bytes(16)), serial=1,
        issued_at=now + dt.timedelta(minutes=4), expires_at=now + dt.timedelta(days=7),
        holder_key=hp.holder_cnf(device.public_key().spki_der()[-65:])), issuer)
    text = hp.encode_presentation(credential, hp.step_at(now), device)
    strict = Judge(clock_skew=dt.timedelta(0))
    tolerant = Judge(clock_skew=dt.timedelta(minutes=5))
    assert strict(text, None, ring, None, None, now).reason is hc.Reason.NOT_YET_VALID
    assert tolerant(text, None, ring, None, None, now).valid
