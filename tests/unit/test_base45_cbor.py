"""Base45 (RFC 9285) and the strict CBOR profile: known answers plus tables of refusals."""

import os

import pytest

from healthcode import cbor
from healthcode.base45 import Base45Error, b45decode, b45encode

RFC9285_VECTORS = [  # RFC 9285 sections 4.3 and 4.4
    (b"AB", "BB8"),
    (b"Hello!!", "%69 VD92EX0"),
    (b"base-45", "UJCLQE7W581"),
    (b"ietf!", "QED8WEX0"),
    (b"", ""),
]


@pytest.mark.parametrize("raw,text", RFC9285_VECTORS, ids=[t or "empty" for _, t in RFC9285_VECTORS])
def test_base45_known_answers(raw, text):
    assert b45encode(raw) == text
    assert b45decode(text) == raw


@pytest.mark.parametrize("length", [1, 2, 3, 64, 143, 255, 600, 1000])
def test_base45_round_trip_random(length):
    for _ in range(50):
        data = os.urandom(length)
        assert b45decode(b45encode(data)) == data


def test_base45_round_trip_edge_values():
    for data in (b"\x00" * 10, b"\xff" * 11, bytes(range(256))):
        assert b45decode(b45encode(data)) == data


@pytest.mark.parametrize(
    "text",
    ["GGW", ":::", "A", "ABCD", "abc", "AB\u00e9", "AB\x00", "A B\n", "ZZZ", "AAA:::"],
    ids=["group>0xFFFF", "max-group", "len1", "len-1mod3", "lowercase", "non-ascii", "nul",
         "newline", "ZZZ", "second-group-overflow"],
)
def test_base45_refuses(text):
    with pytest.raises(Base45Error):
        b45decode(text)


def test_base45_two_char_overflow():
    with pytest.raises(Base45Error):
        b45decode("::")  # 44 + 45*44 > 0xFF


CBOR_GOOD = [
    ("uint0", "00", 0),
    ("uint23", "17", 23),
    ("uint24", "1818", 24),
    ("uint-max64", "1bffffffffffffffff", 2**64 - 1),
    ("nint", "20", -1),
    ("nint-big", "3903e7", -1000),
    ("bstr", "43010203", b"\x01\x02\x03"),
    ("tstr", "6449455446", "IETF"),
    ("utf8", "62c3bc", "\u00fc"),
    ("array", "83010203", [1, 2, 3]),
    ("map", "a201020304", {1: 2, 3: 4}),
    ("text-key", "a1616101", {"a": 1}),
    ("tag-kept", "c11a514b67b0", cbor.Tag(1, 1363896240)),
    ("simple", "83f4f5f6", [False, True, None]),
    ("half-float", "f93c00", 1.0),
    ("double", "fb3ff199999999999a", 1.1),
    ("single", "fa47c35000", 100000.0),
    ("big-map-generic", "b8" + "18" + "".join(f"{i:02x}00" if i < 24 else f"18{i:02x}00" for i in range(24)),
     {i: 0 for i in range(24)}),
]


@pytest.mark.parametrize("name,hexdata,value", CBOR_GOOD, ids=[c[0] for c in CBOR_GOOD])
def test_cbor_decodes(name, hexdata, value):
    assert cbor.loads(bytes.fromhex(hexdata)) == value


CBOR_BAD = [
    ("trailing", "0000", "trailing"),
    ("trailing-after-map", "a1010200", "trailing"),
    ("duplicate-key", "a201020103", "duplicate"),
    ("duplicate-text-key", "a2616101616102", "duplicate"),
    ("indefinite-map", "bf0102ff", "indefinite"),
    ("indefinite-bstr", "5f4101ff", "indefinite"),
    ("non-shortest-uint", "1801", "shortest"),
    ("non-shortest-uint16", "190001", "shortest"),
    ("non-shortest-in-map", "a1011a00000001", "shortest"),
    ("non-shortest-length", "580101", "shortest"),
    ("bad-utf8", "62c328", "UTF-8"),
    ("bad-utf8-in-map", "a10162c328", "UTF-8"),
    ("array-key", "a1810102", "deep|key"),
    ("bytes-key", "a1410102", "key"),
    ("truncated-string", "4501", "truncated"),
    ("truncated-map", "a201", "truncated"),
    ("truncated-arg", "1a0001", "truncated"),
    ("reserved-ai", "1c", "reserved"),
    ("undefined", "f7", "simple"),
    ("simple-one-byte", "f820", "simple"),
    ("empty", "", "truncated"),
    ("deep", "81" * 9 + "00", "deep"),
    ("deep-tag", "c1" * 9 + "00", "deep"),
    ("double-not-shortest", "fb3ff0000000000000", "float"),
    ("single-not-shortest", "fa3f800000", "float"),
    ("double-nan", "fb7ff8000000000000", "float"),
    ("half-nan-payload", "f97e01", "float"),
    ("too-many-items", "98" + "41" + "00" * 65, "too many"),
]


@pytest.mark.parametrize("name,hexdata,message", CBOR_BAD, ids=[c[0] for c in CBOR_BAD])
def test_cbor_refuses(name, hexdata, message):
    with pytest.raises(cbor.CBORError, match=message):
        cbor.loads(bytes.fromhex(hexdata))


def test_cbor_depth_limit_is_exact():
    assert cbor.loads(bytes.fromhex("81" * 8 + "00"), max_depth=8) is not None
    with pytest.raises(cbor.CBORError):
        cbor.loads(bytes.fromhex("81" * 9 + "00"), max_depth=8)


@pytest.mark.parametrize(
    "value",
    [0, 23, 24, 255, 256, 65535, 65536, 2**32, -1, -25, "x", b"y", [1, [2]], {1: {"a": b""}},
     {"b": 1, 1: 2, -1: 3, "aa": 4}, cbor.Tag(18, [1]), True, None, 1.5, 100000.0, 1.1],
    ids=repr,
)
def test_cbor_round_trip(value):
    assert cbor.loads(cbor.dumps(value)) == value


def test_cbor_encoding_is_deterministic():
    # RFC 8949 4.2.1: keys sorted by their encoded bytes, whatever the insertion order.
    assert cbor.dumps({"a": 1, 10: 2, -1: 3, 1: 4}) == cbor.dumps({1: 4, -1: 3, 10: 2, "a": 1})
    assert cbor.dumps({10: 0, 1: 0, -1: 0}).hex() == "a301000a002000"


def _b45encode_reference(data: bytes) -> str:
    """RFC 9285 section 4, one group at a time (the vectorised encoder must agree)."""
    from healthcode.base45 import ALPHABET

    out = []
    for i in range(0, len(data) - 1, 2):
        n = (data[i] << 8) | data[i + 1]
        out.append(ALPHABET[n % 45] + ALPHABET[n // 45 % 45] + ALPHABET[n // 2025])
    if len(data) % 2:
        out.append(ALPHABET[data[-1] % 45] + ALPHABET[data[-1] // 45])
    return "".join(out)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 63, 64, 150, 599, 600, 801, 1000])
def test_base45_encoder_matches_reference(length):
    for data in (os.urandom(length), b"\xff" * length, b"\x00" * length, bytes(range(256)) * 4):
        data = data[:length]
        assert b45encode(data) == _b45encode_reference(data)


def test_fast_claims_encoder_matches_generic():
    import datetime as dt
    import random

    from healthcode.codec import _encode_core_claims, encode_claims
    from healthcode.model import PROVINCES, CodeClaims

    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    for serial in [0, 1, 23, 24, 255, 256, 2**32, 2**64 - 1] + [rng.randrange(2**64) for _ in range(50)]:
        iat = rng.choice([0, 1, 23, 24, 255, 256, 65535, 65536, rng.randrange(2**32 - 1)])
        exp = rng.randrange(iat + 1, 2**32)
        claims = CodeClaims(
            rng.choice(sorted(PROVINCES)),
            "".join(rng.choice(alphabet) for _ in range(25)) + rng.choice("AEIMQUY4"),
            serial,
            dt.datetime.fromtimestamp(iat, dt.timezone.utc),
            dt.datetime.fromtimestamp(exp, dt.timezone.utc),
        )
        assert _encode_core_claims(claims) == encode_claims(claims)
    with_status = CodeClaims(claims.province, claims.subject, 1, claims.issued_at, claims.expires_at, status=1)
    assert _encode_core_claims(with_status) is None
