"""The verifier's pure parts, as tables: freshness and clock policy, framing, hints, settings."""

from __future__ import annotations

import datetime as dt
import os

import pytest

import healthcode as hc
from verifier.__main__ import parse_duration
from verifier.config import AuditConfig, CodePolicy, FreshnessPolicy, ScanConfig
from verifier.scan import LineFramer, hint, to_items, to_scan
from verifier.trust import Freshness, SetRevocation, assess, format_age

T0 = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)
H = dt.timedelta(hours=1)
POLICY = FreshnessPolicy()  # warn 72 h, refuse 7 d, skew 5 min


# --- freshness and clock ---------------------------------------------------------------------

ASSESS_CASES = [
    # name, system clock relative to the last verified refresh, level, expected now, clock_behind
    ("just refreshed", dt.timedelta(0), Freshness.FRESH, T0, None),
    ("one hour", H, Freshness.FRESH, T0 + H, None),
    ("exactly the warning age", 72 * H, Freshness.FRESH, T0 + 72 * H, None),
    ("a second past the warning age", 72 * H + dt.timedelta(seconds=1), Freshness.AGING,
     T0 + 72 * H + dt.timedelta(seconds=1), None),
    ("exactly the hard limit", 7 * 24 * H, Freshness.AGING, T0 + 7 * 24 * H, None),
    ("a second past the hard limit", 7 * 24 * H + dt.timedelta(seconds=1), Freshness.STALE,
     T0 + 7 * 24 * H + dt.timedelta(seconds=1), None),
    ("a year", 365 * 24 * H, Freshness.STALE, T0 + 365 * 24 * H, None),
    ("clock behind within the skew: floored, not flagged", -dt.timedelta(minutes=4), Freshness.FRESH, T0, None),
    ("clock behind exactly the skew: not flagged", -dt.timedelta(minutes=5), Freshness.FRESH, T0, None),
    ("clock behind two hours: floored and flagged", -2 * H, Freshness.FRESH, T0, 2 * H),
    ("clock reset to 2000: floored and flagged", dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc) - T0,
     Freshness.FRESH, T0, T0 - dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)),
]


@pytest.mark.parametrize("name,offset,level,now,behind", ASSESS_CASES, ids=[c[0] for c in ASSESS_CASES])
def test_assess(name, offset, level, now, behind):
    a = assess(POLICY, system_now=T0 + offset, last_verified=T0)
    assert (a.level, a.now, a.clock_behind) == (level, now, behind)
    assert a.age == now - T0
    assert (a.stale_detail(a.now) is None) == (level is not Freshness.STALE)
    assert (a.warning is None) == (level is Freshness.FRESH and behind is None)


def test_assess_without_trust_data_refuses():
    a = assess(POLICY, system_now=T0, last_verified=None)
    assert a.level is Freshness.MISSING and a.age is None and a.now == T0
    assert "no verified trust data" in a.stale_detail(T0)
    assert "sync" in a.warning


def test_assess_needs_an_aware_clock():
    with pytest.raises(ValueError):
        assess(POLICY, system_now=T0.replace(tzinfo=None), last_verified=T0)


@pytest.mark.parametrize("warn,limit,age,level", [
    (H, 2 * H, 90 * dt.timedelta(minutes=1), Freshness.AGING),
    (H, 2 * H, 3 * H, Freshness.STALE),
    (24 * H, 24 * H, 24 * H + dt.timedelta(seconds=1), Freshness.STALE),
])
def test_configured_limits(warn, limit, age, level):
    policy = FreshnessPolicy(warn_age=warn, max_age=limit)
    assert assess(policy, system_now=T0 + age, last_verified=T0).level is level


@pytest.mark.parametrize("kwargs", [
    {"warn_age": dt.timedelta(0)},
    {"max_age": -H},
    {"warn_age": 10 * H, "max_age": 5 * H},
    {"clock_skew": -dt.timedelta(seconds=1)},
])
def test_policy_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        FreshnessPolicy(**kwargs)


@pytest.mark.parametrize("seconds,text", [
    (0, "0 s"), (59, "59 s"), (60, "1 min"), (3599, "59 min"), (3600, "1 h"), (3660, "1 h 1 min"),
    (86399, "23 h 59 min"), (86400, "1 d"), (3 * 86400 + 4 * 3600, "3 d 4 h"), (-5, "0 s"),
])
def test_format_age(seconds, text):
    assert format_age(dt.timedelta(seconds=seconds)) == text


# --- the policy as the core's hook -------------------------------------------------------------


@pytest.fixture(scope="module")
def signed():
    key = hc.generate_signing_key(hc.Algorithm.ES256)
    signer = hc.SoftwareSigner(key)
    ring = hc.Keyring([hc.TrustedKey(kid=signer.kid, province="44", public_key=key.public_key(),
                                     use_from=T0 - 30 * 24 * H, use_until=T0 + 30 * 24 * H,
                                     verify_until=T0 + 90 * 24 * H)])

    def code(issued: dt.datetime, expires: dt.datetime, serial: int = 7) -> str:
        return hc.sign_code(hc.CodeClaims(province="44", subject=hc.main_index_id_from_bytes(os.urandom(16)),
                                          serial=serial, issued_at=issued, expires_at=expires), signer)

    return ring, code, signer


def _check(ring, text, system_now, last_verified, policy=POLICY, revocation=None):
    a = assess(policy, system_now=system_now, last_verified=last_verified)
    return hc.check(text, ring, now=a.now, trust=a, clock_skew=policy.clock_skew, revocation=revocation)


HOOK_CASES = [
    ("fresh", 1 * H, None),
    ("aging still verifies", 80 * H, None),
    ("past the hard limit is refused", 7 * 24 * H + dt.timedelta(seconds=1), hc.Reason.TRUST_DATA_STALE),
]


@pytest.mark.parametrize("name,age,reason", HOOK_CASES, ids=[c[0] for c in HOOK_CASES])
def test_hook_in_the_core(signed, name, age, reason):
    ring, code, _ = signed
    text = code(T0 - H, T0 + 30 * 24 * H)
    assert _check(ring, text, T0 + age, T0).reason is reason


def test_winding_the_clock_back_does_not_resurrect_an_expired_code(signed):
    ring, code, _ = signed
    text = code(T0 - 10 * H, T0 - H)  # expired an hour before the last verified refresh
    assert _check(ring, text, T0 - 5 * H, T0).reason is hc.Reason.EXPIRED  # the clock says it is still valid


@pytest.mark.parametrize("ahead,reason", [
    (dt.timedelta(minutes=4), None),
    (dt.timedelta(minutes=5), None),
    (dt.timedelta(minutes=6), hc.Reason.NOT_YET_VALID),
])
def test_clock_skew_tolerance_for_codes_from_the_future(signed, ahead, reason):
    ring, code, _ = signed
    text = code(T0 + H + ahead, T0 + 5 * 24 * H)
    assert _check(ring, text, T0 + H, T0).reason is reason


def test_set_revocation(signed):
    ring, code, signer = signed
    revoked = SetRevocation({("44", signer.kid): [7, 9]})
    assert len(revoked) == 2
    assert _check(ring, code(T0, T0 + 24 * H, serial=7), T0 + H, T0, revocation=revoked).reason is hc.Reason.REVOKED
    assert _check(ring, code(T0, T0 + 24 * H, serial=8), T0 + H, T0, revocation=revoked).valid
    assert not revoked.is_revoked("33", signer.kid, 7)


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


# --- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [("300ms", 0.3), ("30s", 30), ("5m", 300), ("5min", 300),
                                          ("72h", 259200), ("7d", 604800), ("1.5h", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("factory", [
    lambda: ScanConfig(max_line=10),
    lambda: ScanConfig(folder_done="shred"),
    lambda: AuditConfig(batch_rows=0),
    lambda: AuditConfig(keep_subject_for=dt.timedelta(0)),
    lambda: CodePolicy(static_codes="maybe"),
    lambda: CodePolicy(presentation_skew=dt.timedelta(seconds=-1)),
    lambda: CodePolicy(replay_capacity=0),
])
def test_configs_refuse_nonsense(factory):
    with pytest.raises(ValueError):
        factory()


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


# --- revocation warnings: only keys that can have codes, named (issue 11, item 11) -----------------

_PUBLIC = hc.generate_signing_key(hc.Algorithm.ES256).public_key()
D = 24 * H


def _key(kid: str, province: str = "33", *, use_from=T0 - 30 * D, use_until=T0 + 60 * D, verify_until=T0 + 90 * D,
         status=hc.KeyStatus.ACTIVE, compromised_since=None, policy=hc.CompromisePolicy.REJECT_FROM_COMPROMISE):
    return hc.TrustedKey(kid=bytes.fromhex(kid), province=province, public_key=_PUBLIC, use_from=use_from,
                         use_until=use_until, verify_until=verify_until, status=status,
                         compromised_since=compromised_since, compromise_policy=policy)


REVOCATION_WARNING_CASES = [
    # name, key without revocation data, warned at T0
    ("in use", _key("aa01020304050607"), True),
    ("pre-published: use_from ahead", _key("bb01020304050607", use_from=T0 + 10 * D), False),
    ("use_from is now", _key("cc01020304050607", use_from=T0), True),
    ("no longer signing, codes still verify", _key("dd01020304050607", use_until=T0 - D), True),
    ("verification window over", _key("ee01020304050607", use_until=T0 - 2 * D, verify_until=T0 - D), False),
    ("compromised, every code refused", _key("ff01020304050607", status=hc.KeyStatus.COMPROMISED,
                                             compromised_since=T0 - D, policy=hc.CompromisePolicy.REJECT_ALL), False),
    ("compromised since before its use", _key("ab01020304050607", status=hc.KeyStatus.COMPROMISED,
                                              compromised_since=T0 - 40 * D), False),
    ("compromised from yesterday: older codes verify", _key("ac01020304050607", status=hc.KeyStatus.COMPROMISED,
                                                             compromised_since=T0 - D), True),
]


@pytest.mark.parametrize("name,key,warned", REVOCATION_WARNING_CASES, ids=[c[0] for c in REVOCATION_WARNING_CASES])
def test_revocation_warning_only_for_keys_that_can_have_codes(name, key, warned):
    from verifier.trust import key_can_have_codes, revocation_warnings

    assert key_can_have_codes(key, T0) is warned
    warnings, _ = revocation_warnings([key], T0)
    if warned:
        (text,) = warnings
        assert f"33 浙江 kid {key.kid.hex()[:8]}" in text  # province and short kid
        assert "无撤销数据" in text and "no revocation data for 1 signing key(s)" in text
    else:
        assert warnings == ()


def test_revocation_warning_names_keys_and_counts_the_rest():
    from verifier.trust import revocation_warnings

    keys = [_key(f"{i:02x}00000000000000", "44" if i % 2 else "33") for i in range(6)]
    (text,), _ = revocation_warnings(keys + [_key("bb01020304050607", use_from=T0 + D)], T0)
    assert "6 个签名密钥" in text and "for 6 signing key(s)" in text and "(+2)" in text
    assert "33 浙江 kid 00000000" in text and "44 广东 kid 01000000" in text and "bb010203" not in text


def test_a_pre_published_key_is_warned_from_its_use_from_on():
    """The state says when its warnings change; the loop takes TrustState.at() then."""
    from verifier.trust import TrustState

    soon, late = _key("bb01020304050607", use_from=T0 + 2 * D), _key("cc01020304050607", use_from=T0 + 5 * D)
    state = TrustState(hc.Keyring([soon, late]), None, T0, uncovered=(soon, late)).at(T0)
    assert state.warnings == () and state.recheck_at == T0 + 2 * D
    later = state.at(state.recheck_at)
    assert "bb010203" in later.warnings[0] and "cc010203" not in later.warnings[0]
    assert later.recheck_at == T0 + 5 * D


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


# --- files the trust sources write ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "writer"),
    [
        ("the development bundle and its state (verifier.trust_sources)", "trust"),
        ("the trust and revocation objects and state (verifier.objects)", "objects"),
    ],
)
def test_a_failed_trust_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch, name, writer):
    """A write that fails (disk full, the rename refused) keeps the old file and leaves nothing
    behind; a successful one is owner-only. (verifier/trust.py's writer used to leave its temp file.)"""
    from verifier import trust_sources
    from verifier.objects import ObjectStore

    store = ObjectStore(tmp_path, what="trust")
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def write(data: bytes) -> None:
        if writer == "trust":
            trust_sources._write_atomic(target, data)
        else:
            store.commit(data, {})

    def refuse(*_args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", refuse)
        with pytest.raises(OSError, match="No space left"):
            write(b"new")
    assert target.read_bytes() == b"old", name
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["state.json"], name
    write(b"new")
    assert target.read_bytes() == b"new", name
    assert os.stat(target).st_mode & 0o777 == 0o600, name
