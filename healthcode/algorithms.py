"""Signature algorithms: ES256 (default), EdDSA (Ed25519) and SM2 with SM3.

The algorithm of a signature is a property of the *trusted key*, never of the
code: a :class:`VerificationKey` knows its one algorithm and the verifier
refuses a code whose header names another. There is no "none" algorithm.

SM2 (GB/T 32918.2, signer ID ``1234567812345678``, SM3 digest) comes from the
optional ``sm2`` extra (the C-backed ``gmalglib``); without it, loading or
generating an SM2 key raises :class:`UnsupportedAlgorithm`.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from typing import Any, Callable, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .errors import InvalidKey, UnsupportedAlgorithm

__all__ = [
    "Algorithm",
    "VerificationKey",
    "SigningKey",
    "load_public_key_pem",
    "load_public_key_der",
    "load_p256_point",
    "load_sm2_point",
    "generate_signing_key",
    "signing_key_from_private_bytes",
    "SM2_DEFAULT_SIGNER_ID",
]


class Algorithm(str, enum.Enum):
    """Signature algorithms of the format, with their COSE identifiers."""

    ES256 = "ES256"
    EDDSA = "EdDSA"
    SM2_SM3 = "SM2-SM3"

    @property
    def cose_id(self) -> int:
        return _COSE_ID[self]

    @classmethod
    def from_cose_id(cls, value: int) -> "Algorithm | None":
        return _BY_COSE_ID.get(value)

    def __str__(self) -> str:
        return self.value


_COSE_ID = {
    Algorithm.ES256: -7,  # RFC 9053
    Algorithm.EDDSA: -8,  # RFC 9053
    Algorithm.SM2_SM3: -65537,  # private use (RFC 9052 section 16.4): no IANA value exists
}
_BY_COSE_ID = {v: k for k, v in _COSE_ID.items()}

SM2_DEFAULT_SIGNER_ID = b"1234567812345678"
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_ECDSA_SHA256_DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
# SubjectPublicKeyInfo header of an uncompressed SM2 point: id-ecPublicKey + curve SM2
# (1.2.156.10197.1.301), as OpenSSL 3 writes it; the 64 coordinate bytes follow.
_SM2_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d03420004")


class VerificationKey:
    """A public key bound to exactly one algorithm."""

    algorithm: Algorithm

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True if ``signature`` (COSE raw form) is valid over ``data``."""
        raise NotImplementedError

    def spki_der(self) -> bytes:
        """The key as DER SubjectPublicKeyInfo."""
        raise NotImplementedError

    def pem(self) -> str:
        body = base64.encodebytes(self.spki_der()).decode("ascii")
        return f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n"

    def key_id(self) -> bytes:
        """The default kid: the first 8 bytes of SHA-256 over the DER SubjectPublicKeyInfo."""
        return hashlib.sha256(self.spki_der()).digest()[:8]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerificationKey) and self.spki_der() == other.spki_der()

    def __hash__(self) -> int:
        return hash(self.spki_der())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.algorithm.value} kid={self.key_id().hex()}>"


def raw_signature_to_der(signature: bytes) -> bytes:
    """DER ``Ecdsa-Sig-Value`` of a 64-byte raw r||s (what ``encode_dss_signature`` gives,
    without the two big-integer conversions: this runs on every ES256 verification)."""
    r = signature[:32].lstrip(b"\0") or b"\0"
    if r[0] & 0x80:
        r = b"\0" + r
    s = signature[32:].lstrip(b"\0") or b"\0"
    if s[0] & 0x80:
        s = b"\0" + s
    return b"\x30" + bytes((len(r) + len(s) + 4, 2, len(r))) + r + bytes((2, len(s))) + s


class _ES256PublicKey(VerificationKey):
    algorithm = Algorithm.ES256
    __slots__ = ("_key", "_verify")

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidKey("ES256 needs a P-256 key")
        self._key = key
        self._verify = key.verify

    def verify(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            self._verify(raw_signature_to_der(signature), data, _ECDSA_SHA256)
        except InvalidSignature:
            return False
        return True

    def spki_der(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class _Ed25519PublicKey(VerificationKey):
    algorithm = Algorithm.EDDSA
    __slots__ = ("_key", "_verify")

    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        self._key = key
        self._verify = key.verify

    def verify(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            self._verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def spki_der(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _gmalglib() -> Any:
    try:
        import gmalglib.core as core  # the `sm2` extra (untyped: used through Any)
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise UnsupportedAlgorithm(
            "SM2 needs the 'sm2' extra: pip install 'healthcode[sm2]'"
        ) from None
    return core


class _SM2PublicKey(VerificationKey):
    algorithm = Algorithm.SM2_SM3
    __slots__ = ("_point", "_sm2")

    def __init__(self, point: bytes) -> None:
        core = _gmalglib()
        if len(point) != 65 or point[0] != 4 or not core.SM2.is_pk_valid(point):
            raise InvalidKey("not a valid uncompressed SM2 public key")
        self._point = point
        self._sm2 = core.SM2(pk=point, uid=SM2_DEFAULT_SIGNER_ID)

    def verify(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            return bool(self._sm2.verify(data, signature))
        except Exception:  # gmalglib raises on out-of-range r or s
            return False

    def spki_der(self) -> bytes:
        return _SM2_SPKI_PREFIX + self._point[1:]


def load_public_key_der(der: bytes) -> VerificationKey:
    """Load a DER SubjectPublicKeyInfo (P-256, Ed25519 or SM2)."""
    if der.startswith(_SM2_SPKI_PREFIX) and len(der) == len(_SM2_SPKI_PREFIX) + 64:
        return _SM2PublicKey(b"\x04" + der[len(_SM2_SPKI_PREFIX) :])
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"unreadable public key: {exc}") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and friends
        raise InvalidKey(f"unsupported public key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _ES256PublicKey(key)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return _Ed25519PublicKey(key)
    raise InvalidKey(f"unsupported public key type {type(key).__name__}")


def load_p256_point(point: bytes) -> VerificationKey:
    """A P-256 (ES256) key from a SEC 1 encoded point: ``04 x y``, or compressed ``02 x`` / ``03 x``.

    The point is checked to be on the curve (cryptography refuses anything else).
    """
    if len(point) not in (33, 65) or point[0] not in (2, 3, 4) or (point[0] == 4) != (len(point) == 65):
        raise InvalidKey("not a SEC 1 encoded P-256 point")
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise InvalidKey("not a point on P-256") from None
    return _ES256PublicKey(key)


def load_sm2_point(point: bytes) -> VerificationKey:
    """An SM2-SM3 key from a SEC 1 encoded point on the SM2 curve: ``04 x y``, or compressed ``02 x`` / ``03 x``.

    The point is checked to be on the curve (a compressed one is decompressed
    by ``gmalglib``, which refuses an ``x`` with no point). Raises
    :class:`InvalidKey`, or :class:`UnsupportedAlgorithm` without the ``sm2`` extra.
    """
    if len(point) not in (33, 65) or point[0] not in (2, 3, 4) or (point[0] == 4) != (len(point) == 65):
        raise InvalidKey("not a SEC 1 encoded SM2 point")
    if point[0] != 4:
        try:
            point = bytes(_gmalglib().SM2.convert_pk(point, 0))  # 0: uncompressed
        except ValueError:
            raise InvalidKey("not a point on the SM2 curve") from None
    return _SM2PublicKey(point)


def load_public_key_pem(pem: str | bytes) -> VerificationKey:
    """Load a PEM ``PUBLIC KEY`` block (P-256, Ed25519 or SM2)."""
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    begin, end = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise InvalidKey("not a PEM PUBLIC KEY block")
    try:
        der = base64.b64decode("".join(text[start + len(begin) : stop].split()), validate=True)
    except ValueError:
        raise InvalidKey("PEM body is not base64") from None
    return load_public_key_der(der)


class SigningKey(Protocol):
    """Anything that signs for one algorithm: software keys here, HSM keys in ``keys/``."""

    @property
    def algorithm(self) -> Algorithm: ...

    def public_key(self) -> VerificationKey: ...

    def sign(self, data: bytes) -> bytes:
        """Sign ``data``; return the COSE raw signature (64 bytes for all three algorithms)."""
        ...


class _ES256SigningKey:
    algorithm = Algorithm.ES256

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, deterministic: bool = False) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidKey("ES256 needs a P-256 key")
        self._key = key
        self._alg = _ECDSA_SHA256_DETERMINISTIC if deterministic else _ECDSA_SHA256

    def public_key(self) -> VerificationKey:
        return _ES256PublicKey(self._key.public_key())

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, self._alg))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def private_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    def __repr__(self) -> str:
        return "<ES256 signing key>"


class _Ed25519SigningKey:
    algorithm = Algorithm.EDDSA

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key

    def public_key(self) -> VerificationKey:
        return _Ed25519PublicKey(self._key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def private_bytes(self) -> bytes:
        return self._key.private_bytes_raw()

    def __repr__(self) -> str:
        return "<EdDSA signing key>"


class _BoundedNonceSource:
    """A caller-supplied SM2 nonce source that fails instead of hanging.

    gmalglib asks again until the nonce (read as a *little-endian* number)
    falls in [1, n-1]; a source that keeps returning an out-of-range value
    would loop forever. More than 64 refusals within one signature cannot
    happen by chance, so the 65th request of a signature raises.
    """

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self._random_bytes = random_bytes
        self.calls = 0

    def __call__(self, size: int) -> bytes:
        self.calls += 1
        if self.calls > 64:
            raise InvalidKey("SM2 nonce source keeps returning out-of-range values")
        return self._random_bytes(size)


class _SM2SigningKey:
    algorithm = Algorithm.SM2_SM3

    def __init__(self, secret: bytes, *, random_bytes: Callable[[int], bytes] | None = None) -> None:
        core = _gmalglib()
        if len(secret) != 32 or not core.SM2.is_sk_valid(secret):
            raise InvalidKey("not a valid SM2 private key")
        self._secret = secret
        self._nonces = _BoundedNonceSource(random_bytes) if random_bytes is not None else None
        kwargs = {"rnd_fn": self._nonces} if self._nonces is not None else {}
        self._sm2 = core.SM2(sk=secret, uid=SM2_DEFAULT_SIGNER_ID, **kwargs)
        self._point = core.SM2.get_pk(secret)

    def public_key(self) -> VerificationKey:
        return _SM2PublicKey(self._point)

    def sign(self, data: bytes) -> bytes:
        if self._nonces is None:
            return bytes(self._sm2.sign(data))
        self._nonces.calls = 0
        try:
            return bytes(self._sm2.sign(data))
        except RuntimeError:  # gmalglib's wrapper of the source's exception
            raise InvalidKey("SM2 nonce source keeps returning out-of-range values") from None

    def private_bytes(self) -> bytes:
        return self._secret

    def __repr__(self) -> str:
        return "<SM2-SM3 signing key>"


def generate_signing_key(algorithm: Algorithm = Algorithm.ES256) -> SigningKey:
    """A new software signing key (for tests, tools and file keystores)."""
    algorithm = Algorithm(algorithm)
    if algorithm is Algorithm.ES256:
        return _ES256SigningKey(ec.generate_private_key(ec.SECP256R1()))
    if algorithm is Algorithm.EDDSA:
        return _Ed25519SigningKey(ed25519.Ed25519PrivateKey.generate())
    core = _gmalglib()
    secret, _ = core.SM2().generate_keypair()
    return _SM2SigningKey(secret)


def signing_key_from_private_bytes(
    algorithm: Algorithm,
    secret: bytes,
    *,
    deterministic: bool = False,
    random_bytes: Callable[[int], bytes] | None = None,
) -> SigningKey:
    """A software signing key from its 32-byte private scalar or seed.

    ``deterministic`` selects RFC 6979 nonces for ES256; ``random_bytes``
    replaces SM2's nonce source (gmalglib reads its bytes as a little-endian
    number). Both exist for reproducible test vectors.
    """
    algorithm = Algorithm(algorithm)
    if len(secret) != 32:
        raise InvalidKey("private key must be 32 bytes")
    if algorithm is Algorithm.ES256:
        value = int.from_bytes(secret, "big")
        try:
            key = ec.derive_private_key(value, ec.SECP256R1())
        except ValueError:
            raise InvalidKey("not a valid P-256 private scalar") from None
        return _ES256SigningKey(key, deterministic=deterministic)
    if algorithm is Algorithm.EDDSA:
        return _Ed25519SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(secret))
    return _SM2SigningKey(secret, random_bytes=random_bytes)
