"""One vector (:class:`Vector`, its JSON) and the makers every family uses."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

from healthcode import CodeClaims
from tools.gen_vectors.testkeys import (
    DEFAULT_WINDOW,
    ES256_KEY,
    EXPIRES,
    HOLDER_KEY,
    ISSUED,
    KeyWindow,
    SUBJECT,
    TEST_ONLY_NOTICE,
    TestKey,
    VERIFY_AT,
    _iso,
)
from tools.gen_vectors.cose import claims_to_json, standard_cose, text_of


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
