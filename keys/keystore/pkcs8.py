"""An encrypted-PKCS#8 codec: bytes in, bytes out, no files.

Used by the file keystore (:mod:`keys.keystore.files`) and the TUF role key
files (:mod:`keys.signers`).

**Encryption.** Standard PKCS#8 ``EncryptedPrivateKeyInfo`` with PBES2
(RFC 8018), KDF **scrypt** (RFC 7914) and AES-256-CBC: exactly what
``openssl pkcs8 -topk8 -scrypt`` writes, so OpenSSL opens these files (a
recovery path that needs none of our code). We build the DER ourselves because
cryptography 50 cannot *write* it: ``BestAvailableEncryption`` produces PBES2
with PBKDF2 at 2048 iterations, and ``PrivateFormat.PKCS8.encryption_builder()``
is refused (it exists for OpenSSH and PKCS#12 only).

Default scrypt cost ``N=2**14, r=8, p=4``: 16 MiB per lane and four lanes
(about 0.1 s). ``N=2**15`` would need 32 MiB plus a little, over OpenSSL 3's
fixed 32 MiB PBE limit, and OpenSSL could no longer open the file; ``p`` raises
the attacker's work without that limit. Any cost within bounds (memory <=
256 MiB) is read, so files from ``openssl pkcs8 -scrypt`` load too.

CBC has no integrity of its own: a wrong passphrase shows up as bad padding or
an undecodable key (``wrong_passphrase``); a decrypted key that is not the one
the sidecar names is ``key_file_corrupt``. Either way no key is used.

**Keys.** P-256 (ES256) and Ed25519 (EdDSA) are serialised by cryptography.
cryptography cannot represent SM2 keys, so an SM2 key's ``PrivateKeyInfo`` is
written here as OpenSSL 3 writes it (``id-ecPublicKey`` with curve
``1.2.156.10197.1.301``; ``ECPrivateKey`` version 1, the 32-byte scalar and the
public point), so ``openssl pkey`` reads it as an SM2 key.

No repr, str, exception or log message of this module contains key material
or the passphrase.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from healthcode import Algorithm, SigningKey, VerificationKey, signing_key_from_private_bytes
from healthcode.errors import HealthCodeError

from ..errors import KeyFileCorrupt, UnsupportedKeyAlgorithm, WrongPassphrase

__all__ = [
    "ScryptParams",
    "encrypt_private_key_info",
    "decrypt_private_key_info",
    "secret_of",
    "private_key_info",
    "signing_key_from_private_key_info",
    "signing_key_from_cryptography_key",
    "pem_encode",
    "pem_decode",
    "PEM_BEGIN",
    "PEM_END",
]

PEM_BEGIN = "-----BEGIN ENCRYPTED PRIVATE KEY-----"
PEM_END = "-----END ENCRYPTED PRIVATE KEY-----"


# --------------------------------------------------------------------------- minimal DER


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _len(len(body)) + body


def _int(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # minimal, with a sign bit
    return _tlv(0x02, body)


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray((40 * arcs[0] + arcs[1],))
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


_OID_PBES2 = _oid("1.2.840.113549.1.5.13")
_OID_SCRYPT = _oid("1.3.6.1.4.1.11591.4.11")
_OID_AES256_CBC = _oid("2.16.840.1.101.3.4.1.42")
_OID_EC_PUBLIC_KEY = _oid("1.2.840.10045.2.1")
_OID_SM2 = _oid("1.2.156.10197.1.301")


class _DerError(ValueError):
    pass


class _Reader:
    """A strict reader of definite-length DER, enough for the structures in this module."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos == len(self.data)

    def peek_tag(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def read(self, tag: int) -> bytes:
        data, pos = self.data, self.pos
        if pos + 2 > len(data) or data[pos] != tag:
            raise _DerError("unexpected DER tag")
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if not 1 <= count <= 3 or pos + count > len(data) or data[pos] == 0:
                raise _DerError("bad DER length")
            length = int.from_bytes(data[pos : pos + count], "big")
            if length < 0x80:
                raise _DerError("non-minimal DER length")
            pos += count
        if pos + length > len(data):
            raise _DerError("truncated DER")
        self.pos = pos + length
        return data[pos : pos + length]

    def read_tlv(self, tag: int) -> bytes:
        """The whole element (tag and length included)."""
        start = self.pos
        self.read(tag)
        return self.data[start : self.pos]

    def read_int(self, maximum: int) -> int:
        body = self.read(0x02)
        if not body or body[0] & 0x80 or (len(body) > 1 and body[0] == 0 and not body[1] & 0x80):
            raise _DerError("bad DER integer")
        value = int.from_bytes(body, "big")
        if value > maximum:
            raise _DerError("integer out of range")
        return value


# --------------------------------------------------------------------------- PBES2 / scrypt / AES-256-CBC


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost for *new* files. See the module docstring for the default's reasons."""

    n: int = 2**14
    r: int = 8
    p: int = 4
    salt_bytes: int = 16

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1) or not 1 <= self.r <= 32 or not 1 <= self.p <= 16:
            raise ValueError("scrypt needs n a power of two >= 2, 1 <= r <= 32, 1 <= p <= 16")
        if 128 * self.n * self.r > _MAX_SCRYPT_MEMORY:
            raise ValueError("scrypt memory over 256 MiB")
        if not 8 <= self.salt_bytes <= 64:
            raise ValueError("scrypt salt must be 8 to 64 bytes")


_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024


def _aes_key(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def encrypt_private_key_info(
    private_key_info: bytes, passphrase: bytes, params: ScryptParams = ScryptParams()
) -> bytes:
    """DER ``EncryptedPrivateKeyInfo`` of a DER ``PrivateKeyInfo``: PBES2, scrypt, AES-256-CBC."""
    salt, iv = os.urandom(params.salt_bytes), os.urandom(16)
    padder = padding.PKCS7(128).padder()
    plain = padder.update(private_key_info) + padder.finalize()
    aes_key = _aes_key(passphrase, salt, params.n, params.r, params.p)
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    scrypt_params = _seq(_tlv(0x04, salt), _int(params.n), _int(params.r), _int(params.p), _int(32))
    pbes2_params = _seq(_seq(_OID_SCRYPT, scrypt_params), _seq(_OID_AES256_CBC, _tlv(0x04, iv)))
    return _seq(_seq(_OID_PBES2, pbes2_params), _tlv(0x04, ciphertext))


def decrypt_private_key_info(der: bytes, passphrase: bytes) -> bytes:
    """The DER ``PrivateKeyInfo`` inside an ``EncryptedPrivateKeyInfo`` (PBES2 + scrypt + AES-256-CBC only).

    Raises :class:`KeyFileCorrupt` for any other structure or out-of-bounds
    cost, :class:`WrongPassphrase` when the result does not decrypt cleanly.
    """
    try:
        outer = _Reader(der)
        body = _Reader(outer.read(0x30))
        if not outer.done():
            raise _DerError("trailing bytes")
        algorithm = _Reader(body.read(0x30))
        if algorithm.read_tlv(0x06) != _OID_PBES2:
            raise _DerError("not PBES2")
        pbes2 = _Reader(algorithm.read(0x30))
        kdf = _Reader(pbes2.read(0x30))
        if kdf.read_tlv(0x06) != _OID_SCRYPT:
            raise _DerError("not scrypt")
        scrypt = _Reader(kdf.read(0x30))
        salt = scrypt.read(0x04)
        n, r, p = scrypt.read_int(2**20), scrypt.read_int(32), scrypt.read_int(16)
        if not scrypt.done() and scrypt.read_int(64) != 32:
            raise _DerError("scrypt key length is not 32")
        cipher = _Reader(pbes2.read(0x30))
        if cipher.read_tlv(0x06) != _OID_AES256_CBC:
            raise _DerError("not AES-256-CBC")
        iv = cipher.read(0x04)
        ciphertext = body.read(0x04)
        if not (scrypt.done() and kdf.done() and cipher.done() and pbes2.done() and algorithm.done() and body.done()):
            raise _DerError("unexpected fields")
        if (not 8 <= len(salt) <= 64 or n < 2 or n & (n - 1) or r < 1 or p < 1 or len(iv) != 16
                or 128 * n * r > _MAX_SCRYPT_MEMORY or not ciphertext or len(ciphertext) % 16):
            raise _DerError("parameters out of bounds")
    except _DerError as exc:
        raise KeyFileCorrupt(f"not a PBES2/scrypt/AES-256-CBC encrypted PKCS#8 key ({exc})") from None
    decryptor = Cipher(algorithms.AES(_aes_key(passphrase, salt, n, r, p)), modes.CBC(iv)).decryptor()
    plain = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(plain) + unpadder.finalize()
    except ValueError:
        raise WrongPassphrase("wrong passphrase") from None


# --------------------------------------------------------------------------- PrivateKeyInfo per algorithm


def secret_of(key: SigningKey) -> bytes:
    """The 32-byte private scalar/seed of a healthcode software key (:class:`UnsupportedKeyAlgorithm` otherwise)."""
    # The three healthcode software keys expose their 32-byte scalar/seed; nothing else does.
    private_bytes = getattr(key, "private_bytes", None)
    if private_bytes is None:
        raise UnsupportedKeyAlgorithm("only healthcode software keys can be written to a key file")
    return private_bytes()


def private_key_info(algorithm: Algorithm, secret: bytes, public: VerificationKey) -> bytes:
    """The unencrypted DER ``PrivateKeyInfo`` of a 32-byte private scalar/seed."""
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if algorithm is Algorithm.ES256:
        key = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256R1())
    elif algorithm is Algorithm.EDDSA:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(secret)
    else:  # SM2: as OpenSSL 3 writes it (RFC 5915 ECPrivateKey without parameters, with the point)
        point = b"\x04" + public.spki_der()[-64:]
        ec_private_key = _seq(_int(1), _tlv(0x04, secret), _tlv(0xA1, _tlv(0x03, b"\x00" + point)))
        return _seq(_int(0), _seq(_OID_EC_PUBLIC_KEY, _OID_SM2), _tlv(0x04, ec_private_key))
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def signing_key_from_private_key_info(der: bytes) -> SigningKey:
    """The healthcode signing key in a DER ``PrivateKeyInfo`` (P-256, Ed25519 or SM2).

    Raises :class:`WrongPassphrase` if the bytes are not a key at all (what a
    wrong passphrase that happens to leave valid padding produces).
    """
    try:
        info = _Reader(der)
        body = _Reader(info.read(0x30))
        if not info.done():
            raise _DerError("trailing bytes")
        body.read_int(1)
        algorithm = _Reader(body.read(0x30))
        oid = algorithm.read_tlv(0x06)
        curve = algorithm.read_tlv(0x06) if algorithm.peek_tag() == 0x06 else None
        if oid == _OID_EC_PUBLIC_KEY and curve == _OID_SM2:
            ec_key = _Reader(body.read(0x04))
            fields = _Reader(ec_key.read(0x30))
            if fields.read_int(1) != 1:
                raise _DerError("ECPrivateKey version is not 1")
            secret = fields.read(0x04)
            if len(secret) != 32:
                raise _DerError("SM2 private key is not 32 bytes")
            return signing_key_from_private_bytes(Algorithm.SM2_SM3, secret)
    except _DerError:
        raise WrongPassphrase("wrong passphrase") from None
    except HealthCodeError:
        raise KeyFileCorrupt("the SM2 private key in the file is invalid") from None
    try:
        key = serialization.load_der_private_key(der, password=None)
    except Exception:  # ValueError for garbage; cryptography's UnsupportedAlgorithm for other key types
        raise WrongPassphrase("wrong passphrase") from None
    return signing_key_from_cryptography_key(key)


def signing_key_from_cryptography_key(key: Any) -> SigningKey:
    """The healthcode signing key of a cryptography P-256 or Ed25519 private key
    (:class:`UnsupportedKeyAlgorithm` for any other)."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        secret = key.private_numbers().private_value.to_bytes(32, "big")
        return signing_key_from_private_bytes(Algorithm.ES256, secret)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return signing_key_from_private_bytes(Algorithm.EDDSA, key.private_bytes_raw())
    raise UnsupportedKeyAlgorithm("the key file holds neither a P-256, an Ed25519 nor an SM2 key")


# --------------------------------------------------------------------------- PEM armour


def pem_encode(der: bytes) -> bytes:
    """``der`` as an ``ENCRYPTED PRIVATE KEY`` PEM file (64-column base64, trailing newline)."""
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([PEM_BEGIN, *lines, PEM_END]) + "\n").encode("ascii")


def pem_decode(data: bytes) -> bytes:
    """The DER inside an ``ENCRYPTED PRIVATE KEY`` PEM file (:class:`KeyFileCorrupt` if there is none)."""
    text = data.decode("ascii", "replace")
    start, stop = text.find(PEM_BEGIN), text.find(PEM_END)
    if start < 0 or stop < start:
        raise KeyFileCorrupt("not an ENCRYPTED PRIVATE KEY PEM file")
    try:
        return base64.b64decode("".join(text[start + len(PEM_BEGIN) : stop].split()), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileCorrupt("the PEM body is not base64") from None
