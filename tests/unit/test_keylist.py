"""The province key list document: round trips, and one table row per way a list is refused."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

import healthcode as hc
from healthcode import Algorithm, CompromisePolicy, KeyStatus, TrustedKey
from healthcode.keylist import (
    MAX_KEY_LIST_BYTES,
    MAX_KEYS,
    InvalidKeyList,
    KeyList,
    parse_key_list,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)


def signing_key(alg: Algorithm = Algorithm.ES256, label: str = "a"):
    secret = hashlib.sha256(f"keylist test {alg.value} {label}".encode()).digest()
    return hc.signing_key_from_private_bytes(alg, secret)


def trusted(key, *, province="33", **kw) -> TrustedKey:
    base = dict(
        kid=key.public_key().key_id(), province=province, public_key=key.public_key(),
        use_from=T0, use_until=T0 + 90 * DAY, verify_until=T0 + 120 * DAY,
    )
    base.update(kw)
    return TrustedKey(**base)


def sample(province="33") -> KeyList:
    return KeyList(
        province=province,
        serial=7,
        keys=(
            trusted(signing_key(Algorithm.ES256, "old"), province=province, status=KeyStatus.RETIRED,
                    use_from=T0 - 90 * DAY, use_until=T0),
            trusted(signing_key(Algorithm.EDDSA, "cur"), province=province),
            trusted(signing_key(Algorithm.SM2_SM3, "bad"), province=province, status=KeyStatus.COMPROMISED,
                    compromised_since=T0 + DAY, compromise_policy=CompromisePolicy.REJECT_ALL),
        ),
    )


def document() -> dict:
    return json.loads(sample().to_bytes())


def encode(doc) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# ------------------------------------------------------------------ round trips


def test_round_trip_is_exact_and_canonical():
    key_list = sample()
    data = key_list.to_bytes()
    parsed = parse_key_list(data, province="33")
    assert parsed == key_list and parsed.to_bytes() == data
    assert data.startswith(b'{"keys":[{"alg":"ES256","compromise_policy":"reject_from_compromise"')
    assert b" " not in data.replace(b"BEGIN PUBLIC KEY", b"").replace(b"END PUBLIC KEY", b"")
    doc = json.loads(data)
    assert doc["type"] == "healthcode-key-list" and doc["version"] == 1 and doc["serial"] == 7
    assert [k["status"] for k in doc["keys"]] == ["retired", "active", "compromised"]
    assert doc["keys"][2]["compromised_since"] == "2030-03-02T08:00:00Z"
    assert doc["keys"][0]["compromised_since"] is None


def test_trusted_keys_verify_codes_with_their_windows():
    key = signing_key(Algorithm.ES256, "cur")
    key_list = KeyList(province="44", serial=1, keys=(trusted(key, province="44"),))
    ring = hc.Keyring(parse_key_list(key_list.to_bytes(), province="44").trusted_keys())
    claims = hc.CodeClaims(province="44", subject=hc.main_index_id_from_bytes(bytes(16)), serial=5,
                           issued_at=T0 + DAY, expires_at=T0 + 8 * DAY)
    code = hc.sign_code(claims, hc.SoftwareSigner(key))
    assert hc.verify(code, ring, now=T0 + 2 * DAY).serial == 5


def test_empty_list_is_allowed():
    empty = KeyList(province="11", serial=0, keys=())
    assert parse_key_list(empty.to_bytes(), province="11").keys == ()


# ------------------------------------------------------------------ refusals


def _mutate(change):
    def build():
        doc = document()
        change(doc)
        return encode(doc)
    return build


def _key0(field, value):
    return _mutate(lambda d: d["keys"][0].__setitem__(field, value))


def _other_alg_pem():
    return signing_key(Algorithm.EDDSA, "x").public_key().pem()


INVALID = [
    ("oversized", lambda: b" " * (MAX_KEY_LIST_BYTES + 1), "larger than"),
    ("not-json", lambda: b"{keys", "not valid JSON"),
    ("not-utf8", lambda: b'{"a":"\xff"}', "not UTF-8"),
    ("utf16", lambda: sample().to_bytes().decode().encode("utf-16"), "not UTF-8"),
    ("top-level-list", lambda: b"[]", "exactly the fields"),
    ("extra-field", _mutate(lambda d: d.__setitem__("note", "x")), "exactly the fields"),
    ("missing-serial", _mutate(lambda d: d.pop("serial")), "exactly the fields"),
    ("wrong-type", _mutate(lambda d: d.__setitem__("type", "jwks")), "type must be"),
    ("version-2", _mutate(lambda d: d.__setitem__("version", 2)), "unsupported key list version"),
    ("version-true", _mutate(lambda d: d.__setitem__("version", True)), "unsupported key list version"),
    ("other-province", _mutate(lambda d: d.__setitem__("province", "44")), "came from province 33"),
    ("serial-negative", _mutate(lambda d: d.__setitem__("serial", -1)), "serial must be"),
    ("serial-float", _mutate(lambda d: d.__setitem__("serial", 7.0)), "serial must be"),
    ("serial-bool", _mutate(lambda d: d.__setitem__("serial", True)), "serial must be"),
    ("serial-huge", _mutate(lambda d: d.__setitem__("serial", 2**53)), "serial must be"),
    ("keys-not-list", _mutate(lambda d: d.__setitem__("keys", {})), "keys must be a list"),
    ("too-many-keys", _mutate(lambda d: d.__setitem__("keys", d["keys"] * (MAX_KEYS // 3 + 1))), "at most"),
    ("duplicate-kid", _mutate(lambda d: d["keys"].append(dict(d["keys"][1]))), "appears twice"),
    ("duplicate-json-key", lambda: sample().to_bytes().replace(b'{"keys":', b'{"serial":1,"keys":', 1),
     "duplicate key"),
    ("nan", lambda: sample().to_bytes().replace(b'"serial":7', b'"serial":NaN'), "not allowed"),
    ("key-extra-field", _key0("comment", "x"), "exactly the fields"),
    ("key-missing-field", _mutate(lambda d: d["keys"][0].pop("verify_until")), "exactly the fields"),
    ("kid-uppercase", _mutate(lambda d: d["keys"][0].__setitem__("kid", d["keys"][0]["kid"].upper())),
     "lower-case hex"),
    ("kid-odd-length", _key0("kid", "abc"), "lower-case hex"),
    ("kid-empty", _key0("kid", ""), "lower-case hex"),
    ("kid-too-long", _key0("kid", "00" * 33), "lower-case hex"),
    ("alg-unknown", _key0("alg", "none"), "unknown alg"),
    ("alg-not-the-keys", _key0("alg", "EdDSA"), "is not the key's ES256"),
    ("pem-other-alg", _key0("public_key_pem", _other_alg_pem()), "is not the key's EdDSA"),
    ("pem-garbage", _key0("public_key_pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
     "unreadable"),
    ("pem-not-string", _key0("public_key_pem", 5), "must be a string"),
    ("time-no-z", _key0("use_from", "2030-03-01T08:00:00+00:00"), "YYYY-MM-DDTHH:MM:SSZ"),
    ("time-fraction", _key0("use_until", "2030-03-01T08:00:00.5Z"), "YYYY-MM-DDTHH:MM:SSZ"),
    ("time-short-digits", _key0("use_until", "2030-3-01T08:00:00Z"), "YYYY-MM-DDTHH:MM:SSZ"),
    ("time-impossible", _key0("verify_until", "2030-02-30T08:00:00Z"), "not a valid time"),
    ("time-number", _key0("use_from", 1900000000), "YYYY-MM-DDTHH:MM:SSZ"),
    ("windows-out-of-order", _key0("verify_until", "2000-01-01T00:00:00Z"), "use_from <= use_until <= verify_until"),
    ("status-unknown", _key0("status", "revoked"), "unknown status"),
    ("policy-unknown", _key0("compromise_policy", "warn"), "unknown status or compromise_policy"),
    ("compromised-without-time", _mutate(lambda d: d["keys"][2].__setitem__("compromised_since", None)),
     "needs compromised_since"),
    ("time-without-compromise", _key0("compromised_since", "2030-03-01T08:00:00Z"), "only for compromised"),
    ("not-canonical-spaces", lambda: json.dumps(document(), sort_keys=True).encode(), "canonical form"),
    ("not-canonical-order", lambda: json.dumps(dict(reversed(document().items())), separators=(",", ":")).encode(),
     "canonical form"),
    ("not-canonical-escape", lambda: sample().to_bytes().replace(b'"province":"33"', b'"province":"\\u0033\\u0033"'),
     "canonical form"),
    ("not-canonical-newline", lambda: sample().to_bytes() + b"\n", "canonical form"),
]


@pytest.mark.parametrize("name,build,message", INVALID, ids=[row[0] for row in INVALID])
def test_invalid_key_lists_are_refused(name, build, message):
    with pytest.raises(InvalidKeyList, match=message) as info:
        parse_key_list(build(), province="33")
    assert isinstance(info.value, hc.HealthCodeError)


def test_the_delegation_province_must_be_a_province():
    with pytest.raises(InvalidKeyList, match="province code"):
        parse_key_list(sample().to_bytes(), province="99")


def test_input_must_be_bytes():
    with pytest.raises(InvalidKeyList, match="must be bytes"):
        parse_key_list(sample().to_bytes().decode(), province="33")


BAD_LISTS = [
    ("bad-province", dict(province="00"), "province code"),
    ("key-of-other-province", dict(keys=(trusted(signing_key(), province="44"),)), "of province 44"),
    ("duplicate-kid", dict(keys=(trusted(signing_key()), trusted(signing_key()))), "appears twice"),
    ("fractional-window", dict(keys=(trusted(signing_key(), use_from=T0.replace(microsecond=5)),)), "whole seconds"),
    ("not-a-key", dict(keys=("key",)), "TrustedKey"),
    ("serial-float", dict(serial=1.0), "serial"),
]


@pytest.mark.parametrize("name,change,message", BAD_LISTS, ids=[row[0] for row in BAD_LISTS])
def test_key_list_constructor_checks_invariants(name, change, message):
    fields = dict(province="33", serial=1, keys=())
    fields.update(change)
    with pytest.raises(InvalidKeyList, match=message):
        KeyList(**fields)
