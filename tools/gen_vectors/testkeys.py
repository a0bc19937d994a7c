"""The public test keys, subjects and times of the vectors (see "Keys (TEST ONLY)" in :mod:`tools.gen_vectors`)."""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from healthcode import (
    Algorithm,
    CompromisePolicy,
    KeyStatus,
    MainIndexId,
    VerificationKey,
    main_index_id_from_bytes,
    signing_key_from_private_bytes,
)


KEY_SEED_PREFIX = b"healthcode TEST VECTOR key, not for production: "
SUBJECT_SEED_PREFIX = b"healthcode TEST VECTOR main index id: "
TEST_ONLY_NOTICE = (
    "TEST VECTOR ONLY: every key here is derived from a public seed label "
    "(tools/gen_vectors.py); never trust these keys outside tests."
)
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "tests" / "vectors"

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
