"""The verifier's pure parts, as tables: freshness and clock policy, the policy as the core's hook,
settings, revocation warnings, and the files the trust sources write.

Framing and hints are in ``test_verifier_framing.py``; what the terminal writes
and shows (JSON line, display, messages) in ``test_verifier_messages.py``.
"""

from __future__ import annotations

import datetime as dt
import os

import pytest

import healthcode as hc
from verifier.__main__ import parse_duration
from verifier.config import AuditConfig, CodePolicy, FreshnessPolicy, ScanConfig
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
