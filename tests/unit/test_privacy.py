"""IdentifierVault: keyed blind index, AES-GCM sealing, key versions, no leaks."""

from __future__ import annotations

import hashlib
import hmac
import pickle

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from issuer.privacy import IdentifierVault, SealedValueError

INDEX_KEY = bytes(range(32))
SEAL_KEY = bytes(range(32, 64))
OTHER_KEY = bytes(range(64, 96))
NUMBER = b"resident_id:33010219900101123X"
AAD = b"\x01" * 32


def vault(**kwargs) -> IdentifierVault:
    return IdentifierVault(**{"blind_index_key": INDEX_KEY, "encryption_key": SEAL_KEY, **kwargs})


def counter_nonces():
    state = {"n": 0}

    def random_bytes(size: int) -> bytes:
        state["n"] += 1
        return state["n"].to_bytes(size, "big")

    return random_bytes


# --------------------------------------------------------------------------- blind index


def test_blind_index_is_hmac_sha256_under_the_index_key():
    assert vault().blind_index(NUMBER) == hmac.new(INDEX_KEY, NUMBER, hashlib.sha256).digest()


def test_blind_index_is_stable_and_keyed():
    a, b = vault(), vault()
    assert a.blind_index(NUMBER) == b.blind_index(NUMBER)
    other = IdentifierVault(blind_index_key=OTHER_KEY, encryption_key=SEAL_KEY)
    assert other.blind_index(NUMBER) != a.blind_index(NUMBER)
    # not the unkeyed hash an attacker could enumerate
    assert a.blind_index(NUMBER) != hashlib.sha256(NUMBER).digest()


def test_blind_index_does_not_depend_on_the_encryption_key_or_version():
    rotated = IdentifierVault(blind_index_key=INDEX_KEY, encryption_key=OTHER_KEY, key_version=2,
                              retired_encryption_keys={1: SEAL_KEY})
    assert rotated.blind_index(NUMBER) == vault().blind_index(NUMBER)


# --------------------------------------------------------------------------- sealing


def test_sealed_format_is_version_nonce_ciphertext_tag():
    sealed = vault(random_bytes=counter_nonces()).seal(NUMBER, aad=AAD)
    nonce = (1).to_bytes(12, "big")
    expected = b"\x01" + nonce + AESGCM(SEAL_KEY).encrypt(nonce, NUMBER, b"healthcode/issuer/identifier/v1\x01" + AAD)
    assert sealed == expected
    assert len(sealed) == 1 + 12 + len(NUMBER) + 16


def test_seal_open_round_trip_with_fresh_nonces():
    v = vault()
    one, two = v.seal(NUMBER, aad=AAD), v.seal(NUMBER, aad=AAD)
    assert one != two  # random nonces: equal numbers do not give equal sealed values
    assert v.open(one, aad=AAD) == NUMBER == v.open(two, aad=AAD)
    assert NUMBER not in one


@pytest.mark.parametrize("position", [0, 1, 12, 13, 20, -1])
def test_tampered_sealed_value_fails(position):
    v = vault()
    sealed = bytearray(v.seal(NUMBER, aad=AAD))
    sealed[position] ^= 0x01
    with pytest.raises(SealedValueError) as info:
        v.open(bytes(sealed), aad=AAD)
    assert "1990" not in str(info.value) and "3301" not in str(info.value)


def test_sealed_value_is_bound_to_its_aad():
    v = vault()
    sealed = v.seal(NUMBER, aad=AAD)
    with pytest.raises(SealedValueError):
        v.open(sealed, aad=b"\x02" * 32)  # e.g. moved to another row


def test_truncated_and_foreign_sealed_values_fail():
    v = vault()
    with pytest.raises(SealedValueError):
        v.open(b"\x01" + bytes(20), aad=AAD)
    other = IdentifierVault(blind_index_key=INDEX_KEY, encryption_key=OTHER_KEY)
    with pytest.raises(SealedValueError):
        other.open(v.seal(NUMBER, aad=AAD), aad=AAD)


def test_key_rotation_keeps_old_rows_readable():
    old = vault()
    sealed_v1 = old.seal(NUMBER, aad=AAD)
    new = IdentifierVault(blind_index_key=INDEX_KEY, encryption_key=OTHER_KEY, key_version=2,
                          retired_encryption_keys={1: SEAL_KEY})
    assert new.key_version == 2
    assert new.open(sealed_v1, aad=AAD) == NUMBER
    assert new.needs_reseal(sealed_v1)
    resealed = new.reseal(sealed_v1, aad=AAD)
    assert resealed[0] == 2 and not new.needs_reseal(resealed)
    assert new.open(resealed, aad=AAD) == NUMBER
    without_retired = IdentifierVault(blind_index_key=INDEX_KEY, encryption_key=OTHER_KEY, key_version=2)
    with pytest.raises(SealedValueError, match="unknown key version 1"):
        without_retired.open(sealed_v1, aad=AAD)


def test_from_secret_derives_two_distinct_stable_keys():
    a = IdentifierVault.from_secret(b"m" * 32)
    b = IdentifierVault.from_secret(b"m" * 32)
    assert a.blind_index(NUMBER) == b.blind_index(NUMBER)
    assert b.open(a.seal(NUMBER, aad=AAD), aad=AAD) == NUMBER
    assert IdentifierVault.from_secret(b"n" * 32).blind_index(NUMBER) != a.blind_index(NUMBER)
    with pytest.raises(ValueError):
        IdentifierVault.from_secret(b"short")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"blind_index_key": b"x" * 31},
        {"encryption_key": b"x" * 33},
        {"encryption_key": INDEX_KEY},  # the same key for both jobs
        {"key_version": 0},
        {"key_version": 256},
        {"key_version": 2, "retired_encryption_keys": {2: OTHER_KEY}},
        {"retired_encryption_keys": {2: b"short"}},
    ],
    ids=["short-index-key", "long-seal-key", "same-keys", "version-0", "version-256", "retired-clash", "retired-short"],
)
def test_bad_keys_are_refused(kwargs):
    with pytest.raises(ValueError):
        vault(**kwargs)


def test_keys_do_not_leak_through_repr_or_pickle():
    v = vault()
    assert INDEX_KEY.hex() not in repr(v) and SEAL_KEY.hex() not in repr(v)
    with pytest.raises(TypeError):
        pickle.dumps(v)
