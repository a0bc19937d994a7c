"""Invalid vectors: bad signatures, bad text, oversized codes."""

from __future__ import annotations

import datetime as _dt
from dataclasses import replace
from typing import Iterator

from healthcode import cbor
from healthcode.codec import MAX_COSE_BYTES, MAX_TEXT_LENGTH, PREFIX, sig_structure
from tools.gen_vectors.testkeys import EDDSA_KEY, ES256_KEY, EXPIRES, OTHER_SUBJECT, SM2_KEY
from tools.gen_vectors.cose import bstr, claims_map, cose_sign1, protected_item, standard_cose, text_of
from tools.gen_vectors.vector import Vector, _defect, base_claims


def _invalid_signature_vectors() -> Iterator[Vector]:
    claims = base_claims()
    good = standard_cose(claims, ES256_KEY)
    protected = protected_item(-7, ES256_KEY.kid)
    payload = bstr(cbor.dumps(claims_map(claims)))
    signature = ES256_KEY.sign(sig_structure(protected, payload))
    assert good == cose_sign1(protected, payload, ES256_KEY, signature=signature)

    tampered = bstr(cbor.dumps(claims_map(replace(claims, expires_at=EXPIRES + _dt.timedelta(days=30)))))
    yield _defect(
        "invalid-tampered-payload",
        "exp pushed 30 days later after signing (same length); the signature no longer matches.",
        "bad_signature",
        cose_sign1(protected, tampered, ES256_KEY, signature=signature),
    )
    ed_protected = protected_item(-8, EDDSA_KEY.kid)
    ed_signature = EDDSA_KEY.sign(sig_structure(ed_protected, payload))
    yield _defect(
        "invalid-eddsa-tampered-payload",
        "EdDSA code whose sub was replaced by another resident's after signing.",
        "bad_signature",
        cose_sign1(
            ed_protected,
            bstr(cbor.dumps(claims_map(replace(claims, subject=OTHER_SUBJECT)))),
            EDDSA_KEY,
            signature=ed_signature,
        ),
        key=EDDSA_KEY,
    )
    other_payload = bstr(cbor.dumps(claims_map(replace(claims, serial=4243))))
    other_signature = ES256_KEY.sign(sig_structure(protected, other_payload))
    yield _defect(
        "invalid-swapped-signature",
        "The signature of another code (serial 4243) by the same key, on this code (serial 4242).",
        "bad_signature",
        cose_sign1(protected, payload, ES256_KEY, signature=other_signature),
    )
    flipped = signature[:-1] + bytes([signature[-1] ^ 0x01])
    yield _defect(
        "invalid-signature-bit-flip",
        "The lowest bit of the ES256 signature's last byte is flipped.",
        "bad_signature",
        cose_sign1(protected, payload, ES256_KEY, signature=flipped),
    )
    sm2_protected = protected_item(-65537, SM2_KEY.kid)
    sm2_signature = SM2_KEY.sign(sig_structure(sm2_protected, payload))
    yield _defect(
        "invalid-sm2-sm3-signature-bit-flip",
        "The lowest bit of the SM2 signature's last byte is flipped.",
        "bad_signature",
        cose_sign1(sm2_protected, payload, SM2_KEY, signature=sm2_signature[:-1] + bytes([sm2_signature[-1] ^ 1])),
        key=SM2_KEY,
    )
    yield _defect(
        "invalid-signature-truncated",
        "A well-formed COSE_Sign1 whose signature has 63 bytes instead of 64.",
        "bad_signature",
        cose_sign1(protected, payload, ES256_KEY, signature=signature[:-1]),
    )
    yield _defect(
        "invalid-signature-empty",
        "A well-formed COSE_Sign1 with an empty signature.",
        "bad_signature",
        cose_sign1(protected, payload, ES256_KEY, signature=b""),
    )


def _invalid_text_vectors() -> Iterator[Vector]:
    good_text = text_of(standard_cose(base_claims(), ES256_KEY))
    body = good_text[len(PREFIX):]
    yield _defect(
        "invalid-base45-truncated",
        "The last character is cut off: a Base45 length of 1 modulo 3.",
        "malformed",
        good_text[:-1],
    )
    yield _defect(
        "invalid-cose-truncated",
        "The last 3 characters (2 bytes) are cut off: valid Base45, truncated COSE_Sign1.",
        "malformed",
        good_text[:-3],
    )
    middle = len(good_text) // 2
    yield _defect(
        "invalid-base45-character",
        "One character replaced by '=', which is outside the Base45 alphabet.",
        "malformed",
        good_text[:middle] + "=" + good_text[middle + 1 :],
    )
    yield _defect(
        "invalid-lowercase-text",
        "The whole text lower-cased (prefix included); Base45 is upper case only.",
        "malformed",
        good_text.lower(),
    )
    yield _defect(
        "invalid-lowercase-base45",
        "Correct prefix, Base45 part lower-cased.",
        "malformed",
        PREFIX + body.lower(),
    )
    yield _defect("invalid-prefix-hc1", "The EU DCC prefix HC1: instead of EHC1:.", "malformed", "HC1:" + body)
    yield _defect("invalid-prefix-missing", "The Base45 part without any prefix.", "malformed", body)
    yield _defect(
        "invalid-unsupported-version",
        "Prefix EHC2: names a code format version this verifier does not support.",
        "unsupported_version",
        "EHC2:" + body,
    )
    yield _defect(
        "invalid-non-ascii-text",
        "A full-width colon after EHC1 (U+FF1A) instead of ':'.",
        "malformed",
        "EHC1\uff1a" + body,
    )
    yield _defect("invalid-empty-text", "The empty string.", "malformed", "")
    yield _defect("invalid-prefix-only", "The prefix and nothing after it.", "malformed", PREFIX)


def _oversized_cose(target: int) -> bytes:
    """A correctly signed code whose COSE_Sign1 is exactly ``target`` bytes (a big extra claim)."""
    overhead = len(standard_cose(base_claims(extra={-1: b""}), ES256_KEY))
    for filler in range(max(0, target - overhead - 3), target):
        cose = standard_cose(base_claims(extra={-1: b"\x00" * filler}), ES256_KEY)
        if len(cose) == target:
            return cose
        if len(cose) > target:
            break
    raise AssertionError(f"no filler gives {target} bytes")  # pragma: no cover


def _invalid_size_vectors() -> Iterator[Vector]:
    # 700 bytes -> 1050 Base45 characters: over the text cap before any decoding.
    cose = _oversized_cose(700)
    text = text_of(cose)
    assert len(text) > MAX_TEXT_LENGTH
    yield _defect(
        "invalid-oversized-text",
        f"A correctly signed code of {len(text)} characters, over the {MAX_TEXT_LENGTH}-character cap.",
        "malformed",
        text,
    )
    cose = _oversized_cose(MAX_COSE_BYTES + 40)
    text = text_of(cose)
    assert len(text) <= MAX_TEXT_LENGTH
    yield _defect(
        "invalid-oversized-decoded",
        f"A correctly signed code of {len(text)} characters (within the text cap) that decodes "
        f"to {len(cose)} bytes, over the {MAX_COSE_BYTES}-byte cap.",
        "malformed",
        cose,
    )
