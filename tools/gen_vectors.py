"""Deterministic test vectors for the code format (in the spirit of dgc-testdata).

Usage::

    python -m tools.gen_vectors [--out tests/vectors]   # (re)write the vector files
    python -m tools.gen_vectors --check                 # compare with the committed files

Contract
========

* :func:`generate` returns ``{file name: exact file bytes}``. It is a pure
  function of this module and :mod:`healthcode`: no clock, no randomness, no
  I/O. Running it twice gives identical bytes, so the committed vectors can be
  byte-compared with a fresh generation (``--check`` and
  ``tests/unit/test_vectors.py`` do exactly that).
* ``--check`` writes nothing; it exits 1 and lists every file that differs,
  is missing, or is extra (a ``*.json`` in the directory that the generator
  does not produce). Writing also removes such extra ``*.json`` files: the
  vector directory belongs to this generator.

Keys (TEST ONLY)
================

Every key is derived from a public, labelled seed::

    secret = SHA-256(b"healthcode TEST VECTOR key, not for production: " + label)

and, only if that is not a valid private scalar for the curve (P-256: 1..n-1;
SM2: what ``gmalglib`` accepts), ``SHA-256(prefix + label + b"#" + str(i))``
for i = 1, 2, ... until it is. Anyone can re-derive them, which is the point:
**these keys are public and must never be trusted outside tests.** Private
keys are never written into the vectors; each vector names the seed label of
its trusted key (``key_seed_label``) and carries a ``test_only`` notice.

Signatures are reproducible: ES256 uses RFC 6979 nonces, Ed25519 is
deterministic by design, and SM2 draws its nonce from a per-message HMAC-SHA256
stream keyed by the secret (``HMAC(secret, b"SM2 nonce" + SHA-256(message) +
counter)``), so the order in which vectors are generated does not matter.

Vector file format
==================

One JSON object per file (``sort_keys``, 2-space indent, UTF-8, trailing
newline)::

    description         what the vector tests, in one or two sentences
    code                the code's text, exactly as a scanner would read it
    public_key_pem      the TRUSTED key (SubjectPublicKeyInfo, RFC 7468 PEM)
    kid                 the trusted key's kid, hex
    alg                 the trusted key's algorithm: "ES256", "EdDSA", "SM2-SM3"
    province            the trusted key's province (GB/T 2260, two digits)
    key                 the trusted key's windows: use_from, use_until,
                        verify_until (ISO 8601 UTC, "Z"), status
                        ("active"/"retired"/"compromised"), compromised_since
                        (ISO or null), compromise_policy
                        ("reject_from_compromise"/"reject_all")
    key_seed_label      seed label of the trusted key (see "Keys" above)
    verify_at           the verification time (ISO 8601 UTC, "Z")
    clock_skew_seconds  tolerated issuer clock lead (0 = none)
    revoked_serials     serials revoked for (province, kid); usually []
    expected            "valid" or a healthcode.Reason value ("malformed", ...)
    claims              for valid vectors, the verified claims; else null
    test_only           notice that the keys are public test keys

``claims`` is ``{"iss", "sub", "iat", "exp", "serial", "cnf", "status",
"extra"}``: ``iat``/``exp`` in epoch seconds, ``serial`` as an integer (the
largest is 2**64-1; read it with an arbitrary-precision JSON parser),
``status`` an integer or null, ``cnf`` null or a CBOR value, ``extra`` the
claims outside the reserved keys as a CBOR map. CBOR values use this JSON
form: integers, text, booleans, null and arrays as themselves; a byte string
as ``{"hex": "..."}``; a map as ``{"map": [[key, value], ...]}`` with the
pairs in deterministic (encoded-key) order. No other JSON objects occur, so
the form is unambiguous.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import hashlib
import hmac
import json
import sys
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from healthcode import (
    Algorithm,
    CodeClaims,
    CompromisePolicy,
    KeyStatus,
    MainIndexId,
    VerificationKey,
    main_index_id_from_bytes,
    signing_key_from_private_bytes,
)
from healthcode import cbor
from healthcode.base45 import b45encode
from healthcode.codec import MAX_COSE_BYTES, MAX_TEXT_LENGTH, PREFIX, sig_structure
from healthcode.model import to_epoch

__all__ = [
    "KEY_SEED_PREFIX",
    "TEST_ONLY_NOTICE",
    "TestKey",
    "KeyWindow",
    "Vector",
    "build_vectors",
    "generate",
    "render",
    "claims_to_json",
    "cbor_to_json",
    "main",
]

KEY_SEED_PREFIX = b"healthcode TEST VECTOR key, not for production: "
SUBJECT_SEED_PREFIX = b"healthcode TEST VECTOR main index id: "
TEST_ONLY_NOTICE = (
    "TEST VECTOR ONLY: every key here is derived from a public seed label "
    "(tools/gen_vectors.py); never trust these keys outside tests."
)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "vectors"

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_UTC = _dt.timezone.utc


def _utc(text: str) -> _dt.datetime:
    """``"2026-11-01T08:00:00Z"`` as an aware datetime."""
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(_UTC)


def _iso(moment: _dt.datetime) -> str:
    return moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- keys


def _seeded_secret(label: str, is_valid: Callable[[bytes], bool]) -> bytes:
    """The first valid SHA-256(prefix + label [+ "#i"]) for the curve (see module doc)."""
    for counter in range(1000):
        suffix = b"" if counter == 0 else b"#" + str(counter).encode("ascii")
        secret = hashlib.sha256(KEY_SEED_PREFIX + label.encode("utf-8") + suffix).digest()
        if is_valid(secret):
            return secret
    raise AssertionError(f"no valid secret for {label!r}")  # pragma: no cover


def _p256_valid(secret: bytes) -> bool:
    return 1 <= int.from_bytes(secret, "big") < _P256_ORDER


def _sm2_valid(secret: bytes) -> bool:
    import gmalglib.core as core  # the `sm2` extra

    return bool(core.SM2.is_sk_valid(secret))


def _nonce_stream(secret: bytes, message: bytes) -> Callable[[int], bytes]:
    """Deterministic SM2 nonce source for one message: an HMAC-SHA256 counter stream."""
    digest = hashlib.sha256(message).digest()
    state = {"counter": 0}

    def random_bytes(n: int) -> bytes:
        out = b""
        while len(out) < n:
            block = state["counter"].to_bytes(4, "big")
            out += hmac.new(secret, b"SM2 nonce" + digest + block, hashlib.sha256).digest()
            state["counter"] += 1
        return out[:n]

    return random_bytes


@dataclass(frozen=True)
class TestKey:
    """A signing key derived from a public seed label. TEST ONLY, never written out."""

    __test__ = False  # not a pytest test class

    label: str
    algorithm: Algorithm

    @property
    def secret(self) -> bytes:
        if self.algorithm is Algorithm.ES256:
            return _seeded_secret(self.label, _p256_valid)
        if self.algorithm is Algorithm.SM2_SM3:
            return _seeded_secret(self.label, _sm2_valid)
        return _seeded_secret(self.label, lambda _secret: True)

    def signing_key(self, message: bytes = b""):
        """The healthcode signing key; for SM2, with the nonce stream of ``message``."""
        if self.algorithm is Algorithm.ES256:
            return signing_key_from_private_bytes(self.algorithm, self.secret, deterministic=True)
        if self.algorithm is Algorithm.SM2_SM3:
            secret = self.secret
            return signing_key_from_private_bytes(
                self.algorithm, secret, random_bytes=_nonce_stream(secret, message)
            )
        return signing_key_from_private_bytes(self.algorithm, self.secret)

    def public_key(self) -> VerificationKey:
        return self.signing_key().public_key()

    @property
    def kid(self) -> bytes:
        """The default kid: first 8 bytes of SHA-256 over the SubjectPublicKeyInfo."""
        return self.public_key().key_id()

    def pem(self) -> str:
        """The public key as RFC 7468 PEM (64-character lines)."""
        body = base64.b64encode(self.public_key().spki_der()).decode("ascii")
        lines = "\n".join(textwrap.wrap(body, 64))
        return f"-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----\n"

    def sign(self, data: bytes) -> bytes:
        """COSE raw signature (64 bytes) over ``data``; deterministic for all three algorithms."""
        return self.signing_key(data).sign(data)


ES256_KEY = TestKey("es256/33/2026", Algorithm.ES256)
EDDSA_KEY = TestKey("eddsa/33/2026", Algorithm.EDDSA)
SM2_KEY = TestKey("sm2-sm3/33/2026", Algorithm.SM2_SM3)
UNTRUSTED_KEY = TestKey("es256/33/untrusted", Algorithm.ES256)
HOLDER_KEY = TestKey("holder/es256", Algorithm.ES256)  # only its public point goes into cnf


def _subject(label: str) -> MainIndexId:
    return main_index_id_from_bytes(hashlib.sha256(SUBJECT_SEED_PREFIX + label.encode()).digest()[:16])


SUBJECT = _subject("resident-1")
OTHER_SUBJECT = _subject("resident-2")

# ------------------------------------------------------------------------- times

ISSUED = _utc("2026-11-01T08:00:00Z")
EXPIRES = ISSUED + _dt.timedelta(days=7)
VERIFY_AT = _utc("2026-11-02T09:00:00Z")
SECOND = _dt.timedelta(seconds=1)


@dataclass(frozen=True)
class KeyWindow:
    """A trusted key's windows and status, as written to the vector's ``key`` object."""

    use_from: _dt.datetime = _utc("2026-01-01T00:00:00Z")
    use_until: _dt.datetime = _utc("2027-01-01T00:00:00Z")
    verify_until: _dt.datetime = _utc("2027-01-08T00:00:00Z")  # use_until + 7 days validity
    status: KeyStatus = KeyStatus.ACTIVE
    compromised_since: _dt.datetime | None = None
    compromise_policy: CompromisePolicy = CompromisePolicy.REJECT_FROM_COMPROMISE

    def to_json(self) -> dict[str, Any]:
        return {
            "use_from": _iso(self.use_from),
            "use_until": _iso(self.use_until),
            "verify_until": _iso(self.verify_until),
            "status": self.status.value,
            "compromised_since": None if self.compromised_since is None else _iso(self.compromised_since),
            "compromise_policy": self.compromise_policy.value,
        }


DEFAULT_WINDOW = KeyWindow()


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


# ---------------------------------------------------------------------- vectors


@dataclass(frozen=True)
class Vector:
    """One vector file. ``code_claims``/``signer`` are kept (not written) when the code
    is exactly what ``healthcode.sign_code`` must produce, for the encoder cross-check."""

    name: str
    description: str
    code: str
    expected: str
    key: TestKey = ES256_KEY  # the TRUSTED key
    kid: bytes | None = None  # trusted kid; default: the key's default kid
    province: str = "33"
    window: KeyWindow = DEFAULT_WINDOW
    verify_at: _dt.datetime = VERIFY_AT
    clock_skew_seconds: int = 0
    revoked_serials: tuple[int, ...] = ()
    claims: CodeClaims | None = None  # for valid vectors: what verification must return
    code_claims: CodeClaims | None = field(default=None, compare=False)
    signer: TestKey | None = field(default=None, compare=False)
    signer_kid: bytes | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "code": self.code,
            "public_key_pem": self.key.pem(),
            "kid": (self.key.kid if self.kid is None else self.kid).hex(),
            "alg": self.key.algorithm.value,
            "province": self.province,
            "key": self.window.to_json(),
            "key_seed_label": self.key.label,
            "verify_at": _iso(self.verify_at),
            "clock_skew_seconds": self.clock_skew_seconds,
            "revoked_serials": list(self.revoked_serials),
            "expected": self.expected,
            "claims": None if self.claims is None else claims_to_json(self.claims),
            "test_only": TEST_ONLY_NOTICE,
        }


def base_claims(**changes: Any) -> CodeClaims:
    """The claims most vectors share: Zhejiang, resident-1, serial 4242, 7 days from ISSUED."""
    fields: dict[str, Any] = dict(
        province="33", subject=SUBJECT, serial=4242, issued_at=ISSUED, expires_at=EXPIRES
    )
    fields.update(changes)
    return CodeClaims(**fields)


def holder_cnf() -> dict[int, Any]:
    """RFC 8747 confirmation claim ``{1: COSE_Key}`` with the holder's EC2 P-256 public key."""
    der = HOLDER_KEY.public_key().spki_der()
    point = der[-64:]
    return {1: {1: 2, -1: 1, -2: point[:32], -3: point[32:]}}


EXTRA_CLAIMS: dict[Any, Any] = {
    100: "opaque issuer data",
    -260: b"\x01\x02\x03",
    "note": "测试用例 (test vector)",
    "x-list": [1, -1, True, None, {"k": b""}],
}


def _valid(name: str, description: str, claims: CodeClaims, key: TestKey = ES256_KEY, **kwargs: Any) -> Vector:
    """A valid vector for a standard code of ``claims`` signed by ``key``."""
    signer_kid = kwargs.pop("signer_kid", None)
    cose = standard_cose(claims, key, kid=signer_kid)
    return Vector(
        name,
        description,
        text_of(cose),
        "valid",
        key=key,
        kid=signer_kid,
        claims=claims,
        code_claims=claims,
        signer=key,
        signer_kid=signer_kid,
        **kwargs,
    )


def _defect(name: str, description: str, expected: str, cose_or_text: bytes | str, **kwargs: Any) -> Vector:
    code = cose_or_text if isinstance(cose_or_text, str) else text_of(cose_or_text)
    return Vector(name, description, code, expected, **kwargs)


def _valid_vectors() -> Iterator[Vector]:
    yield _valid("valid-es256-basic", "A plain ES256 code verified a day after issuance.", base_claims())
    yield _valid("valid-eddsa-basic", "A plain EdDSA (Ed25519) code.", base_claims(), EDDSA_KEY)
    yield _valid("valid-sm2-sm3-basic", "A plain SM2-SM3 code (COSE alg -65537, private use).", base_claims(), SM2_KEY)
    yield _valid("valid-es256-status", "A code with the optional status claim (-65537).", base_claims(status=2))
    yield _valid(
        "valid-es256-extra-claims",
        "Unknown extra claims (integer and text keys, nested values) are preserved verbatim.",
        base_claims(extra=EXTRA_CLAIMS),
    )
    for key, slug in ((EDDSA_KEY, "eddsa"), (SM2_KEY, "sm2-sm3"), (ES256_KEY, "es256")):
        yield _valid(
            f"valid-{slug}-all-optional-claims",
            f"An {key.algorithm.value} code with status and extra claims (cnf belongs in presentations).",
            base_claims(status=1, extra=EXTRA_CLAIMS),
            key,
        )
    yield _valid(
        "valid-es256-retired-key",
        "A retired key still verifies a code it signed inside its use window.",
        base_claims(),
        window=KeyWindow(
            use_from=_utc("2026-05-01T00:00:00Z"),
            use_until=_utc("2026-11-01T12:00:00Z"),
            verify_until=_utc("2026-11-08T12:00:00Z"),
            status=KeyStatus.RETIRED,
        ),
    )
    yield _valid("valid-es256-serial-zero", "Serial 0, encoded as the one-byte cti h'00'.", base_claims(serial=0))
    yield _valid(
        "valid-es256-serial-max",
        "The largest serial, 2**64-1 (8-byte cti); needs an arbitrary-precision JSON reader.",
        base_claims(serial=2**64 - 1),
    )
    yield _valid(
        "valid-es256-within-clock-skew",
        "Verified 60 s before its iat with a tolerated clock skew of 300 s.",
        base_claims(),
        verify_at=ISSUED - 60 * SECOND,
        clock_skew_seconds=300,
    )
    yield _valid("valid-es256-at-issuance", "Verified at exactly its iat.", base_claims(), verify_at=ISSUED)
    yield _valid(
        "valid-es256-last-second",
        "Verified one second before exp (exp itself is already expired).",
        base_claims(),
        verify_at=EXPIRES - SECOND,
    )
    yield _valid(
        "valid-es256-iat-at-use-from",
        "iat equals the key's use_from: the use window is inclusive.",
        base_claims(),
        window=replace(DEFAULT_WINDOW, use_from=ISSUED),
    )
    yield _valid(
        "valid-es256-iat-at-use-until",
        "iat equals the key's use_until: the use window is inclusive.",
        base_claims(),
        window=replace(DEFAULT_WINDOW, use_until=ISSUED, verify_until=_utc("2026-11-08T08:00:00Z")),
    )
    yield _valid(
        "valid-es256-compromised-after-issuance",
        "The key was compromised two hours after the code was issued; the default policy "
        "(reject_from_compromise) keeps codes issued before the compromise.",
        base_claims(),
        window=replace(DEFAULT_WINDOW, status=KeyStatus.COMPROMISED, compromised_since=ISSUED + 2 * 3600 * SECOND),
    )
    yield _valid(
        "valid-es256-revocation-other-serials",
        "The revocation list holds other serials of the same key, not this one.",
        base_claims(),
        revoked_serials=(4241, 4243, 2**64 - 1),
    )
    yield _valid(
        "valid-es256-long-kid",
        "A 32-byte kid (the maximum) chosen by the issuer instead of the 8-byte default.",
        base_claims(),
        signer_kid=hashlib.sha256(b"healthcode TEST VECTOR kid: long").digest(),
    )
    yield _valid(
        "valid-es256-nesting-at-cap",
        "Claims nested exactly 6 levels deep (claims map + 5 arrays), the cap.",
        base_claims(extra={-1: [[[[[0]]]]]}),
    )


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


def _invalid_algorithm_vectors() -> Iterator[Vector]:
    claims = base_claims()
    yield _defect(
        "invalid-alg-header-eddsa-key-es256",
        "The header says EdDSA (-8); the trusted key with this kid is ES256 (and signed the code).",
        "algorithm_mismatch",
        standard_cose(claims, ES256_KEY, alg_id=-8),
    )
    yield _defect(
        "invalid-alg-header-es256-key-eddsa",
        "The header says ES256 (-7); the trusted key with this kid is EdDSA (and signed the code).",
        "algorithm_mismatch",
        standard_cose(claims, EDDSA_KEY, alg_id=-7),
        key=EDDSA_KEY,
    )
    yield _defect(
        "invalid-alg-header-sm2-key-es256",
        "The header says SM2-SM3 (-65537); the trusted key with this kid is ES256.",
        "algorithm_mismatch",
        standard_cose(claims, ES256_KEY, alg_id=-65537),
    )
    yield _defect(
        "invalid-alg-header-zero",
        "A 'none'-like alg 0 in the header; the trusted key is ES256.",
        "algorithm_mismatch",
        standard_cose(claims, ES256_KEY, alg_id=0),
    )


def _invalid_trust_vectors() -> Iterator[Vector]:
    claims = base_claims()
    good = standard_cose(claims, ES256_KEY)
    yield _defect(
        "invalid-province-mismatch",
        "A code with iss 44 (Guangdong) signed by the trusted key of province 33: no key of "
        "province 44 has this kid.",
        "unknown_key",
        standard_cose(base_claims(province="44"), ES256_KEY),
    )
    yield _defect(
        "invalid-unknown-kid",
        "A code signed by a key that is not in the keyring (different kid).",
        "unknown_key",
        standard_cose(claims, UNTRUSTED_KEY),
    )
    yield _defect(
        "invalid-untrusted-key-same-kid",
        "A code signed by an untrusted key but carrying the trusted key's kid.",
        "bad_signature",
        standard_cose(claims, UNTRUSTED_KEY, kid=ES256_KEY.kid),
    )
    yield _defect("invalid-expired", "Verified at exactly exp.", "expired", good, verify_at=EXPIRES)
    yield _defect(
        "invalid-credential-without-presentation",
        "A well-signed credential bound to a device key (cnf {1: COSE_Key}) shown on its own, as a screenshot "
        "of the credential would be: refused, it is valid only inside a dynamic presentation (EHCD:).",
        "presentation_required",
        standard_cose(base_claims(holder_key=holder_cnf()), ES256_KEY),
    )
    yield _defect(
        "invalid-not-yet-valid",
        "Verified 60 s before iat with no clock skew tolerated.",
        "not_yet_valid",
        good,
        verify_at=ISSUED - 60 * SECOND,
    )
    yield _defect(
        "invalid-not-yet-valid-beyond-skew",
        "Verified 60 s before iat with only 30 s of clock skew tolerated.",
        "not_yet_valid",
        good,
        verify_at=ISSUED - 60 * SECOND,
        clock_skew_seconds=30,
    )
    yield _defect(
        "invalid-key-compromised",
        "The key was compromised two hours before the code was issued.",
        "key_compromised",
        good,
        window=replace(DEFAULT_WINDOW, status=KeyStatus.COMPROMISED, compromised_since=ISSUED - 2 * 3600 * SECOND),
    )
    yield _defect(
        "invalid-key-compromised-at-issuance",
        "compromised_since equals iat: codes issued at or after the compromise are refused.",
        "key_compromised",
        good,
        window=replace(DEFAULT_WINDOW, status=KeyStatus.COMPROMISED, compromised_since=ISSUED),
    )
    yield _defect(
        "invalid-key-compromised-reject-all",
        "Compromised after issuance, but the policy reject_all refuses every code of the key.",
        "key_compromised",
        good,
        window=replace(
            DEFAULT_WINDOW,
            status=KeyStatus.COMPROMISED,
            compromised_since=ISSUED + 2 * 3600 * SECOND,
            compromise_policy=CompromisePolicy.REJECT_ALL,
        ),
    )
    yield _defect(
        "invalid-key-window-iat-before-use-from",
        "iat is one second before the key's use_from.",
        "key_not_valid_at_issuance",
        good,
        window=replace(DEFAULT_WINDOW, use_from=ISSUED + SECOND),
    )
    yield _defect(
        "invalid-key-window-iat-after-use-until",
        "iat is one second after the key's use_until (verify_until still ahead).",
        "key_not_valid_at_issuance",
        good,
        window=replace(DEFAULT_WINDOW, use_until=ISSUED - SECOND),
    )
    yield _defect(
        "invalid-key-verify-until-passed",
        "The code has not expired, but its key's verify_until has passed.",
        "expired",
        good,
        window=replace(DEFAULT_WINDOW, use_until=ISSUED + 3600 * SECOND, verify_until=VERIFY_AT - SECOND),
    )
    yield _defect(
        "invalid-revoked-serial",
        "Serial 4242 of this key is on the revocation list.",
        "revoked",
        good,
        revoked_serials=(4242,),
    )


def build_vectors() -> list[Vector]:
    """Every vector, in a stable order; names are unique."""
    vectors = [
        *_valid_vectors(),
        *_invalid_signature_vectors(),
        *_invalid_text_vectors(),
        *_invalid_size_vectors(),
        *_invalid_cbor_vectors(),
        *_invalid_algorithm_vectors(),
        *_invalid_trust_vectors(),
    ]
    names = [v.name for v in vectors]
    assert len(names) == len(set(names)), "duplicate vector names"
    return vectors


def render(document: dict[str, Any]) -> bytes:
    """The exact bytes of a vector file."""
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def generate() -> dict[str, bytes]:
    """``{file name: file bytes}`` for every vector; deterministic (see the module doc)."""
    return {f"{v.name}.json": render(v.to_json()) for v in build_vectors()}


# -------------------------------------------------------------------------- CLI


def diff(expected: dict[str, bytes], directory: Path) -> list[str]:
    """Human-readable differences between ``expected`` and the ``*.json`` files in ``directory``."""
    present = {p.name: p for p in directory.glob("*.json")} if directory.is_dir() else {}
    problems = [f"missing: {name}" for name in sorted(set(expected) - set(present))]
    problems += [f"extra:   {name}" for name in sorted(set(present) - set(expected))]
    problems += [
        f"differs: {name}"
        for name in sorted(set(expected) & set(present))
        if present[name].read_bytes() != expected[name]
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gen_vectors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="vector directory (default: tests/vectors)")
    parser.add_argument("--check", action="store_true", help="compare with the files in --out; write nothing")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        problems = diff(files, args.out)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print(f"{len(problems)} vector file(s) out of date; run: python -m tools.gen_vectors", file=sys.stderr)
            return 1
        print(f"{len(files)} vector files up to date in {args.out}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in sorted(set(p.name for p in args.out.glob("*.json")) - set(files)):
        (args.out / stale).unlink()
        print(f"removed stale {stale}")
    written = 0
    for name, content in sorted(files.items()):
        path = args.out / name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            written += 1
    print(f"{len(files)} vector files in {args.out} ({written} written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
