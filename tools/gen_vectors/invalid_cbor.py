"""Invalid vectors: CBOR and COSE that is not a well-formed code."""

from __future__ import annotations

from typing import Any, Iterator

from healthcode import cbor
from healthcode.model import to_epoch
from tools.gen_vectors.testkeys import ES256_KEY, ISSUED, OTHER_SUBJECT
from tools.gen_vectors.cose import bstr, claims_map, cose_sign1, encoded_pairs, protected_item, raw_map
from tools.gen_vectors.vector import Vector, _defect, base_claims


def _invalid_cbor_vectors() -> Iterator[Vector]:
    """Bad CBOR under a *valid* signature: the bytes are signed exactly as sent."""
    claims = base_claims()
    protected = protected_item(-7, ES256_KEY.kid)
    pairs = encoded_pairs(claims_map(claims))

    def signed(payload_content: bytes, **kwargs: Any) -> bytes:
        return cose_sign1(kwargs.pop("protected", protected), bstr(payload_content), ES256_KEY, **kwargs)

    yield _defect(
        "invalid-claims-nesting-over-cap",
        "An extra claim nested one level past the cap (claims map + 6 arrays = 7 levels).",
        "malformed",
        signed(cbor.dumps(claims_map(base_claims(extra={-1: [[[[[[0]]]]]]})))),
    )
    deep = b"\x81" * 400 + b"\x00"
    yield _defect(
        "invalid-claims-deep-nesting",
        "An extra claim of 400 nested one-element arrays (stack exhaustion attempt).",
        "malformed",
        signed(raw_map(pairs + [(cbor.dumps(-1), deep)])),
    )
    dup = pairs + [(cbor.dumps(2), cbor.dumps(OTHER_SUBJECT))]
    yield _defect(
        "invalid-claims-duplicate-key",
        "The claims map holds sub twice with two different residents (first-wins vs last-wins).",
        "malformed",
        signed(raw_map(dup)),
    )
    dup_protected = bstr(raw_map([(b"\x01", b"\x26"), (b"\x04", bstr(ES256_KEY.kid)), (b"\x01", b"\x27")]))
    yield _defect(
        "invalid-protected-duplicate-key",
        "The protected header holds alg twice (ES256, then EdDSA).",
        "malformed",
        signed(cbor.dumps(claims_map(claims)), protected=dup_protected),
    )
    yield _defect(
        "invalid-cose-trailing-bytes",
        "One 0x00 byte after the COSE_Sign1 array.",
        "malformed",
        signed(cbor.dumps(claims_map(claims)), trailing=b"\x00"),
    )
    yield _defect(
        "invalid-claims-trailing-bytes",
        "The signed payload is the claims map followed by one 0x00 byte.",
        "malformed",
        signed(cbor.dumps(claims_map(claims)) + b"\x00"),
    )
    iat = to_epoch(ISSUED)
    long_iat = [(k, b"\x1b" + iat.to_bytes(8, "big") if k == cbor.dumps(6) else v) for k, v in pairs]
    yield _defect(
        "invalid-claims-non-shortest-int",
        "iat encoded with an 8-byte argument where 4 bytes suffice.",
        "malformed",
        signed(raw_map(long_iat)),
    )
    long_key = [(b"\x18\x01" if k == b"\x01" else k, v) for k, v in pairs]
    yield _defect(
        "invalid-claims-non-shortest-key",
        "The map key 1 (iss) encoded as 0x18 0x01 instead of 0x01.",
        "malformed",
        signed(raw_map(long_key)),
    )
    header = cbor.dumps({1: -7, 4: ES256_KEY.kid})
    yield _defect(
        "invalid-protected-non-shortest-length",
        "The protected header bstr's 13-byte length written as 0x58 0x0d instead of 0x4d.",
        "malformed",
        signed(cbor.dumps(claims_map(claims)), protected=b"\x58" + bytes([len(header)]) + header),
    )
    yield _defect(
        "invalid-claims-indefinite-map",
        "The claims map encoded with indefinite length (0xbf ... 0xff).",
        "malformed",
        signed(b"\xbf" + b"".join(k + v for k, v in pairs) + b"\xff"),
    )
    yield _defect(
        "invalid-unprotected-header-kid",
        "kid moved from the protected header to the unprotected header.",
        "malformed",
        signed(
            cbor.dumps(claims_map(claims)),
            protected=bstr(cbor.dumps({1: -7})),
            unprotected=cbor.dumps({4: ES256_KEY.kid}),
        ),
    )
    yield _defect(
        "invalid-protected-crit-header",
        "The protected header carries crit (label 2), which this format does not support.",
        "malformed",
        signed(cbor.dumps(claims_map(claims)), protected=bstr(cbor.dumps({1: -7, 2: [1], 4: ES256_KEY.kid}))),
    )
    yield _defect(
        "invalid-cose-untagged",
        "A correct COSE_Sign1 array without its tag 18.",
        "malformed",
        signed(cbor.dumps(claims_map(claims)), tag=b""),
    )
    yield _defect(
        "invalid-cose-wrong-tag",
        "A COSE_Sign1 array under tag 17 (COSE_Mac0) instead of 18.",
        "malformed",
        signed(cbor.dumps(claims_map(claims)), tag=b"\xd1"),
    )
    yield _defect(
        "invalid-claims-missing-cti",
        "A signed claims set without cti (the serial).",
        "malformed",
        signed(raw_map([(k, v) for k, v in pairs if k != cbor.dumps(7)])),
    )
    yield _defect(
        "invalid-claims-missing-sub",
        "A signed claims set without sub (the main index ID).",
        "malformed",
        signed(raw_map([(k, v) for k, v in pairs if k != cbor.dumps(2)])),
    )
    yield _defect(
        "invalid-claims-aud-present",
        "A signed claims set with an aud claim, which the format refuses.",
        "malformed",
        signed(cbor.dumps({**claims_map(claims), 3: "33"})),
    )
    yield _defect(
        "invalid-claims-status-not-uint",
        "A signed claims set whose reserved status claim (-65537) is text, not an unsigned integer.",
        "malformed",
        signed(cbor.dumps({**claims_map(claims), -65537: "green"})),
    )
    yield _defect(
        "invalid-claims-cnf-not-map",
        "A signed claims set whose cnf claim (8) is an integer, not a map.",
        "malformed",
        signed(cbor.dumps({**claims_map(claims), 8: 7})),
    )
    yield _defect(
        "invalid-claims-float-not-shortest",
        "A signed claims set with an extra claim holding 1.0 as a 64-bit float (preferred: 16-bit).",
        "malformed",
        signed(raw_map(encoded_pairs(claims_map(claims)) + [(cbor.dumps("x"), bytes.fromhex("fb3ff0000000000000"))])),
    )
    yield _defect(
        "invalid-claims-iat-equals-exp",
        "A signed claims set with iat == exp.",
        "malformed",
        signed(cbor.dumps({**claims_map(claims), 4: iat})),
    )
    yield _defect(
        "invalid-claims-cti-leading-zero",
        "cti h'0001' (serial 1) is not in minimal form.",
        "malformed",
        signed(cbor.dumps({**claims_map(claims), 7: b"\x00\x01"})),
    )
    yield _defect(
        "invalid-claims-not-a-map",
        "The signed payload is an array instead of a claims map.",
        "malformed",
        signed(cbor.dumps([1, 2, 3])),
    )
