"""The vectors' JSON form of CBOR, and COSE_Sign1 built by hand (so that defective codes can be made)."""

from __future__ import annotations

from typing import Any

from healthcode import CodeClaims
from healthcode import cbor
from healthcode.base45 import b45encode
from healthcode.codec import PREFIX, sig_structure
from healthcode.model import to_epoch
from tools.gen_vectors.testkeys import TestKey


# ----------------------------------------------------------------- JSON of CBOR


def cbor_to_json(value: Any) -> Any:
    """A decoded CBOR value in the vectors' JSON form (see the module docstring)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, (list, tuple)):
        return [cbor_to_json(v) for v in value]
    if isinstance(value, dict):
        pairs = sorted(value.items(), key=lambda kv: cbor.dumps(kv[0]))
        return {"map": [[cbor_to_json(k), cbor_to_json(v)] for k, v in pairs]}
    raise TypeError(f"no JSON form for {type(value).__name__}")  # pragma: no cover


def claims_to_json(claims: CodeClaims) -> dict[str, Any]:
    """The ``claims`` object of a valid vector, computed from the *input* claims."""
    return {
        "iss": claims.province,
        "sub": claims.subject,
        "iat": to_epoch(claims.issued_at),
        "exp": to_epoch(claims.expires_at),
        "serial": claims.serial,
        "cnf": None if claims.holder_key is None else cbor_to_json(dict(claims.holder_key)),
        "status": claims.status,
        "extra": cbor_to_json(dict(claims.extra)),
    }


# ---------------------------------------------------------------- COSE by hand

TAG_COSE_SIGN1 = b"\xd2"


def claims_map(claims: CodeClaims) -> dict[Any, Any]:
    """The CWT claims map of ``claims`` (independent of healthcode.codec.encode_claims)."""
    mapping: dict[Any, Any] = dict(claims.extra)
    mapping.update(
        {
            1: claims.province,
            2: claims.subject,
            4: to_epoch(claims.expires_at),
            6: to_epoch(claims.issued_at),
            7: claims.serial.to_bytes(max(1, (claims.serial.bit_length() + 7) // 8), "big"),
        }
    )
    if claims.holder_key is not None:
        mapping[8] = dict(claims.holder_key)
    if claims.status is not None:
        mapping[-65537] = claims.status
    return mapping


def raw_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A definite-length CBOR map from already-encoded (key, value) pairs, in the given order."""
    count = len(pairs)
    head = bytes([0xA0 + count]) if count < 24 else bytes([0xB8, count])  # fewer than 256 pairs
    return head + b"".join(k + v for k, v in pairs)


def encoded_pairs(mapping: dict[Any, Any]) -> list[tuple[bytes, bytes]]:
    """The encoded (key, value) pairs of ``mapping`` in deterministic order."""
    return sorted((cbor.dumps(k), cbor.dumps(v)) for k, v in mapping.items())


def bstr(content: bytes) -> bytes:
    """``content`` as a CBOR byte string item (shortest head)."""
    return cbor.dumps(content)


def protected_item(alg_id: int, kid: bytes) -> bytes:
    """The protected header ``{1: alg, 4: kid}`` as the bstr item of the COSE_Sign1."""
    return bstr(cbor.dumps({1: alg_id, 4: kid}))


def cose_sign1(
    protected: bytes,
    payload: bytes,
    signer: TestKey,
    *,
    unprotected: bytes = b"\xa0",
    tag: bytes = TAG_COSE_SIGN1,
    signature: bytes | None = None,
    trailing: bytes = b"",
) -> bytes:
    """A COSE_Sign1 from the exact ``protected`` and ``payload`` bstr items.

    The signature is made by ``signer`` over the Sig_structure of exactly those
    received items (:func:`healthcode.codec.sig_structure`), unless
    ``signature`` is given. Every other byte is taken as given, so a defect
    under test is the only defect of the code.
    """
    if signature is None:
        signature = signer.sign(sig_structure(protected, payload))
    return tag + b"\x84" + protected + unprotected + payload + bstr(signature) + trailing


def standard_cose(claims: CodeClaims, signer: TestKey, *, kid: bytes | None = None, alg_id: int | None = None) -> bytes:
    """A well-formed COSE_Sign1 for ``claims``, as the issuer would produce it."""
    protected = protected_item(
        signer.algorithm.cose_id if alg_id is None else alg_id, signer.kid if kid is None else kid
    )
    return cose_sign1(protected, bstr(cbor.dumps(claims_map(claims))), signer)


def text_of(cose: bytes, prefix: str = PREFIX) -> str:
    return prefix + b45encode(cose)
