"""The national key inside a SoftHSM2 token: a generic secret used with CKM_SHA256_HMAC, never extractable."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import pytest

from issuer.documents import canonical_form, make_resident_id, parse_document
from national.blind_index import NationalBlindIndex, Pkcs11NationalKey, generate_national_key, open_national_key
from national.errors import NationalKeyError

from .softhsm import pkcs11, softhsm_token

PIN, SO_PIN, TOKEN = "4321", "87654321", "national"


@pytest.fixture
def module(tmp_path):
    with softhsm_token(tmp_path, label=TOKEN, so_pin=SO_PIN, pin=PIN) as path:
        yield path


def test_hmac_key_in_the_token(module):
    doc = parse_document("resident_id", make_resident_id("330102", dt.date(1990, 1, 1), 7),
                         today=dt.date(2026, 12, 7))
    generate_national_key("pkcs11", secret=PIN.encode(), module=module, token=TOKEN)
    with pytest.raises(NationalKeyError, match="already holds"):
        generate_national_key("pkcs11", secret=PIN.encode(), module=module, token=TOKEN)
    key = open_national_key("pkcs11", secret=PIN.encode(), module=module, token=TOKEN)
    try:
        index = NationalBlindIndex(key)
        first = index.blind_index(doc)
        assert len(first) == 32 and index.blind_index(doc) == first
        assert first != hashlib.sha256(canonical_form(doc)).digest()
        assert first != hmac.new(b"\0" * 32, canonical_form(doc), hashlib.sha256).digest()
        # the key cannot be read out of the token
        assert isinstance(key, Pkcs11NationalKey)
        secret = key._find()
        assert secret[pkcs11.Attribute.SENSITIVE] and not secret[pkcs11.Attribute.EXTRACTABLE]
        with pytest.raises(pkcs11.PKCS11Error):
            _ = secret[pkcs11.Attribute.VALUE]
    finally:
        key.close()
    # the same key after reopening: the same index
    again = open_national_key("pkcs11", secret=PIN.encode(), module=module, token=TOKEN)
    try:
        assert NationalBlindIndex(again).blind_index(doc) == first
    finally:
        again.close()


def test_wrong_pin_and_missing_key(module):
    with pytest.raises(NationalKeyError):
        open_national_key("pkcs11", secret=PIN.encode(), module=module, token=TOKEN)  # no key yet
    with pytest.raises(NationalKeyError):
        open_national_key("pkcs11", secret=b"0000", module=module, token=TOKEN)
