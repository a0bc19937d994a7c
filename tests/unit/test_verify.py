"""Sign and verify through the public API: round trips, and one table row per reason code."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

import healthcode as hc
from healthcode.base45 import b45decode, b45encode
from healthcode import Algorithm, CodeClaims, Keyring, Reason, SoftwareSigner, TrustedKey

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
SUBJECT = hc.main_index_id_from_bytes(hashlib.sha256(b"test resident").digest()[:16])


def signer_for(alg: Algorithm, label: str = "k1") -> SoftwareSigner:
    secret = hashlib.sha256(f"healthcode unit-test key {alg.value} {label}".encode()).digest()
    return SoftwareSigner(hc.signing_key_from_private_bytes(alg, secret))


def trusted(signer, *, province="33", use_from=T0 - DAY, use_until=T0 + 90 * DAY,
            verify_until=T0 + 120 * DAY, **kw) -> TrustedKey:
    return TrustedKey(kid=signer.kid, province=province, public_key=signer.public_key(),
                      use_from=use_from, use_until=use_until, verify_until=verify_until, **kw)


def claims(**kw) -> CodeClaims:
    base = dict(province="33", subject=SUBJECT, serial=4242, issued_at=T0, expires_at=T0 + 7 * DAY)
    base.update(kw)
    return CodeClaims(**base)


@pytest.mark.parametrize("alg", list(Algorithm), ids=str)
def test_round_trip_every_algorithm(alg):
    signer = signer_for(alg)
    code = hc.sign_code(claims(), signer)
    verified = hc.verify(code, Keyring([trusted(signer)]), now=T0 + DAY)
    assert (verified.province, verified.subject, verified.serial) == ("33", SUBJECT, 4242)
    assert verified.issued_at == T0 and verified.expires_at == T0 + 7 * DAY
    assert verified.algorithm == alg.value and verified.kid == signer.kid
    assert code.startswith("EHC1:") and set(code[5:]) <= set(hc.base45.ALPHABET)


def test_code_size_fits_qr_version_8_at_ecc_m():
    code = hc.sign_code(claims(serial=2**32 - 1), signer_for(Algorithm.ES256))
    assert len(code) <= 221  # alphanumeric capacity of version 8-M
    assert len(hc.base45.b45decode(code[5:])) <= 150


UNSIGNABLE = [
    ("too-many-claims", dict(extra={100 + i: i for i in range(28)})),
    ("too-deep", dict(extra={100: [[[[[[1]]]]]]})),
    ("float-key", dict(extra={1.5: 0})),
    ("bytes-key", dict(extra={b"k": 0})),
    ("set-value", dict(extra={100: {1, 2}})),
    ("cnf-bare-key", dict(holder_key={1: 2, -1: 1})),
    ("cnf-empty", dict(holder_key={})),
    ("oversized", dict(extra={100: "x" * 700})),
]


@pytest.mark.parametrize("name,kw", UNSIGNABLE, ids=[c[0] for c in UNSIGNABLE])
def test_the_signer_refuses_what_no_verifier_would_accept(name, kw):
    with pytest.raises(hc.InvalidClaims):
        hc.sign_code(claims(**kw), ES)


def test_reserved_and_unknown_claims_are_preserved():
    signer = signer_for(Algorithm.ES256)
    code = hc.sign_code(claims(status=1, extra={-70000: "future", "note": [1, 2]}), signer)
    verified = hc.verify(code, Keyring([trusted(signer)]), now=T0)
    assert verified.holder_key is None and verified.status == 1
    assert dict(verified.extra) == {-70000: "future", "note": [1, 2]}


def test_a_code_bound_to_a_device_key_is_refused_on_its_own():
    holder = {1: {1: 2, -1: 1, -2: b"x" * 32, -3: b"y" * 32}}
    signer = signer_for(Algorithm.ES256)
    code = hc.sign_code(claims(holder_key=holder), signer)
    result = hc.check(code, Keyring([trusted(signer)]), now=T0)
    assert result.reason is hc.Reason.PRESENTATION_REQUIRED
    # a bad signature is still reported as such: the binding is checked last
    cose = bytearray(b45decode(code.removeprefix(hc.PREFIX)))
    cose[-1] ^= 1
    forged = hc.PREFIX + b45encode(bytes(cose))
    assert hc.check(forged, Keyring([trusted(signer)]), now=T0).reason is hc.Reason.BAD_SIGNATURE


class Revoked:
    def __init__(self, *serials):
        self.serials = set(serials)

    def is_revoked(self, province, kid, serial):
        return serial in self.serials


class Stale:
    def stale_detail(self, now):
        return "trust data is 80 hours old"


ES = signer_for(Algorithm.ES256)
ED = signer_for(Algorithm.EDDSA)
OTHER = signer_for(Algorithm.ES256, "other")

# name, code, keys, now, verify kwargs, expected reason (None = valid)
CASES = [
    ("valid", hc.sign_code(claims(), ES), [trusted(ES)], T0, {}, None),
    ("valid-last-second", hc.sign_code(claims(), ES), [trusted(ES)], T0 + 7 * DAY - dt.timedelta(seconds=1), {}, None),
    ("expired-at-exp", hc.sign_code(claims(), ES), [trusted(ES)], T0 + 7 * DAY, {}, Reason.EXPIRED),
    ("not-yet-valid", hc.sign_code(claims(), ES), [trusted(ES)], T0 - dt.timedelta(seconds=1), {},
     Reason.NOT_YET_VALID),
    ("within-clock-skew", hc.sign_code(claims(), ES), [trusted(ES)], T0 - dt.timedelta(seconds=60),
     {"clock_skew": dt.timedelta(seconds=90)}, None),
    ("beyond-clock-skew", hc.sign_code(claims(), ES), [trusted(ES)], T0 - dt.timedelta(seconds=91),
     {"clock_skew": dt.timedelta(seconds=90)}, Reason.NOT_YET_VALID),
    ("unknown-kid", hc.sign_code(claims(), ES), [trusted(OTHER)], T0, {}, Reason.UNKNOWN_KEY),
    ("empty-keyring", hc.sign_code(claims(), ES), [], T0, {}, Reason.UNKNOWN_KEY),
    ("province-mismatch", hc.sign_code(claims(province="44"), ES), [trusted(ES)], T0, {}, Reason.UNKNOWN_KEY),
    ("kid-of-other-key", hc.sign_code(claims(), SoftwareSigner(OTHER._key, kid=ES.kid)), [trusted(ES)], T0, {},
     Reason.BAD_SIGNATURE),
    ("alg-mismatch", hc.sign_code(claims(), SoftwareSigner(ED._key, kid=ES.kid)), [trusted(ES)], T0, {},
     Reason.ALGORITHM_MISMATCH),
    ("retired-key-inside-window", hc.sign_code(claims(), ES),
     [trusted(ES, use_until=T0 + DAY, status=hc.KeyStatus.RETIRED)], T0 + 5 * DAY, {}, None),
    ("issued-before-use-from", hc.sign_code(claims(), ES), [trusted(ES, use_from=T0 + DAY)], T0 + 2 * DAY, {},
     Reason.KEY_NOT_VALID_AT_ISSUANCE),
    ("issued-after-use-until", hc.sign_code(claims(), ES), [trusted(ES, use_until=T0 - dt.timedelta(seconds=1))],
     T0, {}, Reason.KEY_NOT_VALID_AT_ISSUANCE),
    ("after-verify-until", hc.sign_code(claims(), ES), [trusted(ES, use_until=T0, verify_until=T0 + DAY)],
     T0 + 2 * DAY, {}, Reason.EXPIRED),
    ("compromised-before-issue", hc.sign_code(claims(), ES),
     [trusted(ES, status=hc.KeyStatus.COMPROMISED, compromised_since=T0)], T0, {}, Reason.KEY_COMPROMISED),
    ("issued-before-compromise", hc.sign_code(claims(), ES),
     [trusted(ES, status=hc.KeyStatus.COMPROMISED, compromised_since=T0 + DAY)], T0 + 2 * DAY, {}, None),
    ("compromise-reject-all", hc.sign_code(claims(), ES),
     [trusted(ES, status=hc.KeyStatus.COMPROMISED, compromised_since=T0 + DAY,
              compromise_policy=hc.CompromisePolicy.REJECT_ALL)], T0 + 2 * DAY, {}, Reason.KEY_COMPROMISED),
    ("revoked", hc.sign_code(claims(), ES), [trusted(ES)], T0, {"revocation": Revoked(4242)}, Reason.REVOKED),
    ("other-serial-revoked", hc.sign_code(claims(), ES), [trusted(ES)], T0, {"revocation": Revoked(4243)}, None),
    ("trust-stale", hc.sign_code(claims(), ES), [trusted(ES)], T0, {"trust": Stale()}, Reason.TRUST_DATA_STALE),
    ("garbage", "hello world", [trusted(ES)], T0, {}, Reason.MALFORMED),
    ("empty-text", "", [trusted(ES)], T0, {}, Reason.MALFORMED),
    ("prefix-only", "EHC1:", [trusted(ES)], T0, {}, Reason.MALFORMED),
    ("next-version", "EHC2:" + hc.sign_code(claims(), ES)[5:], [trusted(ES)], T0, {}, Reason.UNSUPPORTED_VERSION),
    ("lowercase", hc.sign_code(claims(), ES).lower(), [trusted(ES)], T0, {}, Reason.MALFORMED),
    ("two-codes-run-together", hc.sign_code(claims(), ES) + hc.sign_code(claims(), ES), [trusted(ES)], T0, {},
     Reason.MALFORMED),
    ("one-megabyte", "EHC1:" + "0" * 1_000_000, [trusted(ES)], T0, {}, Reason.MALFORMED),
    ("not-text", b"EHC1:", [trusted(ES)], T0, {}, Reason.MALFORMED),
]


@pytest.mark.parametrize("name,code,keys,now,kwargs,expected", CASES, ids=[c[0] for c in CASES])
def test_verification_table(name, code, keys, now, kwargs, expected):
    result = hc.check(code, Keyring(keys), now=now, **kwargs)
    assert result.reason == expected, result.detail
    assert result.valid == (expected is None)
    if expected is None:
        assert hc.verify(code, Keyring(keys), now=now, **kwargs).serial == 4242
    else:
        with pytest.raises(hc.VerificationError) as info:
            hc.verify(code, Keyring(keys), now=now, **kwargs)
        assert info.value.reason == expected
        assert isinstance(info.value, hc.HealthCodeError)
        assert type(info.value) is hc.errors.ERROR_FOR_REASON[expected]


def test_kids_are_unique_within_a_province_but_may_repeat_across_provinces():
    twin = TrustedKey(kid=ES.kid, province="33", public_key=OTHER.public_key(), use_from=T0 - DAY,
                      use_until=T0 + DAY, verify_until=T0 + 9 * DAY)
    with pytest.raises(hc.InvalidKey, match="share kid"):
        Keyring([twin, trusted(ES)])
    elsewhere = trusted(OTHER, province="44")
    elsewhere = TrustedKey(kid=ES.kid, province="44", public_key=OTHER.public_key(), use_from=T0 - DAY,
                           use_until=T0 + DAY, verify_until=T0 + 9 * DAY)
    ring = Keyring([elsewhere, trusted(ES)])
    assert hc.verify(hc.sign_code(claims(), ES), ring, now=T0).serial == 4242
    other_code = hc.sign_code(claims(province="44"), SoftwareSigner(OTHER._key, kid=ES.kid))
    assert hc.verify(other_code, ring, now=T0).province == "44"


def test_every_bit_flip_is_refused():
    code = hc.sign_code(claims(), ES)
    raw = bytearray(hc.base45.b45decode(code[5:]))
    keyring = Keyring([trusted(ES)])
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            raw[i] ^= bit
            result = hc.check("EHC1:" + hc.base45.b45encode(bytes(raw)), keyring, now=T0)
            raw[i] ^= bit
            assert not result.valid, (i, bit)


def test_error_messages_carry_no_subject():
    code = hc.sign_code(claims(), ES)
    for now in (T0 - DAY, T0 + 30 * DAY):
        assert SUBJECT not in hc.check(code, Keyring([trusted(ES)]), now=now).detail


BAD_CLAIMS = [
    ("province", dict(province="99")),
    ("province-int", dict(province=33)),
    ("subject-short", dict(subject="ABC")),
    ("subject-lowercase", dict(subject=SUBJECT.lower())),
    ("subject-padding-bits", dict(subject=SUBJECT[:-1] + "B")),
    ("serial-negative", dict(serial=-1)),
    ("serial-too-big", dict(serial=2**64)),
    ("serial-bool", dict(serial=True)),
    ("naive-time", dict(issued_at=dt.datetime(2026, 1, 1))),
    ("exp-before-iat", dict(expires_at=T0 - DAY)),
    ("status-negative", dict(status=-1)),
    ("extra-reserved", dict(extra={7: b"x"})),
    ("exp-after-2106", dict(expires_at=dt.datetime(2107, 1, 1, tzinfo=UTC))),
]


@pytest.mark.parametrize("name,kw", BAD_CLAIMS, ids=[c[0] for c in BAD_CLAIMS])
def test_claims_are_validated(name, kw):
    with pytest.raises(hc.InvalidClaims):
        claims(**kw)


BAD_KEYS = [
    ("window-order", dict(use_from=T0, use_until=T0 - DAY)),
    ("verify-before-use-end", dict(verify_until=T0)),
    ("compromised-without-time", dict(status=hc.KeyStatus.COMPROMISED)),
    ("time-without-compromise", dict(compromised_since=T0)),
    ("province", dict(province="00")),
    ("naive", dict(use_from=dt.datetime(2026, 1, 1))),
]


@pytest.mark.parametrize("name,kw", BAD_KEYS, ids=[c[0] for c in BAD_KEYS])
def test_trusted_keys_are_validated(name, kw):
    with pytest.raises(hc.InvalidKey):
        trusted(ES, **kw)


def test_main_index_ids_are_random_base32():
    ident = hc.main_index_id_from_bytes(bytes(range(16)))
    assert hc.parse_main_index_id(ident) == ident and len(ident) == 26
    with pytest.raises(hc.InvalidClaims):
        hc.main_index_id_from_bytes(b"short")


@pytest.mark.parametrize("alg", list(Algorithm), ids=str)
def test_public_key_pem_round_trip_and_kid(alg):
    key = signer_for(alg).public_key()
    loaded = hc.load_public_key_pem(key.pem())
    assert loaded == key and loaded.algorithm is alg and len(loaded.key_id()) == 8


@pytest.mark.parametrize("pem", ["", "not pem", "-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n",
                                 "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
def test_bad_public_keys_are_refused(pem):
    with pytest.raises(hc.InvalidKey):
        hc.load_public_key_pem(pem)


@pytest.mark.parametrize("pattern", ["random", "leading-zeros", "high-bit", "zero", "ones"])
def test_raw_signature_to_der_matches_cryptography(pattern):
    import os

    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from healthcode.algorithms import raw_signature_to_der

    for _ in range(200):
        sig = bytearray(os.urandom(64))
        if pattern == "leading-zeros":
            sig[0:3] = b"\0\0\x01"
            sig[32:34] = b"\0\x80"
        elif pattern == "high-bit":
            sig[0] |= 0x80
            sig[32] |= 0x80
        elif pattern == "zero":
            sig = bytearray(64)
        elif pattern == "ones":
            sig = bytearray(b"\xff" * 64)
        expected = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        assert raw_signature_to_der(bytes(sig)) == expected


@pytest.mark.timeout(20)
@pytest.mark.parametrize("stuck", [b"\xff", b"\x00"], ids=["all-ones", "all-zeros"])
def test_a_stuck_sm2_nonce_source_fails_instead_of_hanging(stuck):
    secret = hashlib.sha256(b"healthcode unit-test key SM2 stuck").digest()
    key = hc.signing_key_from_private_bytes(Algorithm.SM2_SM3, secret, random_bytes=lambda n: stuck * n)
    with pytest.raises(hc.InvalidKey):
        key.sign(b"message")


def _mutations(seed: bytes, rng, count: int):
    """``count`` one-step mutations of ``seed``: a byte replaced, a bit flipped, truncated, or extended."""
    for _ in range(count):
        mutated = bytearray(seed)
        action = rng.randrange(4)
        if action == 0:
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        elif action == 1:
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        elif action == 2:
            del mutated[rng.randrange(len(mutated)):]
        else:
            mutated += bytes([rng.randrange(256)])
        yield mutated


def test_canonical_claims_fast_path_agrees_with_the_generic_decoder():
    import random

    from healthcode import cbor
    from healthcode.codec import canonical_core_claims, decode_claims, parse_core_claims

    def generic(payload):
        try:
            return parse_core_claims(decode_claims(payload))
        except hc.MalformedCode:
            return "malformed"

    rng = random.Random(1234)
    seeds = []
    for serial in (0, 1, 255, 256, 2**32, 2**64 - 1):
        seeds.append(cbor.dumps({1: "33", 2: SUBJECT, 4: 1_800_000_000, 6: 1_790_000_000,
                                 7: serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")}))
    fast_hits = 0
    for seed in seeds:
        assert canonical_core_claims(seed) == generic(seed)
        for mutated in _mutations(seed, rng, 3000):
            fast = canonical_core_claims(bytes(mutated))
            if fast is not None:
                fast_hits += 1
                assert fast == generic(bytes(mutated)), mutated.hex()
            elif generic(bytes(mutated)) != "malformed":
                pass  # valid but not canonical (e.g. another province): the generic path serves it
    assert fast_hits > 1000  # the comparison above really exercised the fast path


def test_bound_credential_fast_path_agrees_with_the_generic_decoder():
    import random

    from healthcode import cbor
    from healthcode.codec import canonical_bound_claims, decode_claims, parse_core_claims, parse_optional_claims

    def generic(payload):
        try:
            claims = decode_claims(payload)
            core = parse_core_claims(claims)
            cnf, status = parse_optional_claims(claims)
        except hc.MalformedCode:
            return "malformed"
        if status is not None or set(claims) != {1, 2, 4, 6, 7, 8}:
            return "other"
        return core, cnf

    rng = random.Random(4321)
    seeds = []
    for serial, odd in ((0, True), (1000, False), (2**64 - 1, True)):
        cnf = {1: {1: 2, -1: 1, -2: bytes(range(32)), -3: odd}}
        seeds.append(cbor.dumps({1: "33", 2: SUBJECT, 4: 1_800_000_000, 6: 1_790_000_000,
                                 7: serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big"), 8: cnf}))
    fast_hits = 0
    for seed in seeds:
        assert canonical_bound_claims(seed) == generic(seed)
        for mutated in _mutations(seed, rng, 3000):
            fast = canonical_bound_claims(bytes(mutated))
            if fast is not None:
                fast_hits += 1
                assert fast == generic(bytes(mutated)), mutated.hex()
    assert fast_hits > 1000
