"""The code format v1: CWT claims in a COSE_Sign1, as prefixed Base45 text.

``docs/code-format.md`` is the normative description; this module is its
implementation. :func:`encode_code` builds and signs a code;
:func:`decode_unverified` takes a code apart *without* checking anything but
its form, for the verifier (:mod:`healthcode.verify`) and for diagnostics.

Text form::

    "EHC1:" + Base45( COSE_Sign1 )

    COSE_Sign1 = #6.18([ protected: bstr .cbor {1: alg, 4: kid},
                         unprotected: {},            ; must be empty
                         payload: bstr .cbor Claims,
                         signature: bstr ])          ; raw, 64 bytes
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from . import cbor
from .base45 import Base45Error, b45decode, b45encode
from .errors import InvalidClaims, MalformedCode, UnsupportedVersion
from .model import PROVINCES, CodeClaims, MainIndexId, ProvinceCode, to_epoch

__all__ = [
    "PREFIX",
    "MAX_TEXT_LENGTH",
    "MAX_COSE_BYTES",
    "MAX_CBOR_DEPTH",
    "ClaimKey",
    "RESERVED_CLAIM_KEYS",
    "Signer",
    "UnverifiedCode",
    "encode_claims",
    "encode_code",
    "decode_unverified",
    "canonical_bound_claims",
    "sig_structure",
]

PREFIX = "EHC1:"
_PREFIX_STEM = "EHC"
_VERSION_CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Times are unsigned 32-bit seconds on the wire (until 2106).
MAX_TIME = 0xFFFFFFFF
#: Hard caps, checked before any parsing.
MAX_TEXT_LENGTH = 1024  # characters, prefix included
MAX_COSE_BYTES = 600  # bytes after Base45 decoding
MAX_CBOR_DEPTH = 6  # levels, the claims map and every tag included (cnf {1: COSE_Key} uses 3)
MAX_ITEMS = 32  # entries in any one map or array


class ClaimKey:
    """Integer claim keys (RFC 8392 registry, plus one private-use key)."""

    ISS = 1  # province, GB/T 2260 two digits, text
    SUB = 2  # main index ID, text
    AUD = 3  # not used; refused
    EXP = 4
    NBF = 5  # not used; refused
    IAT = 6
    CTI = 7  # serial, big-endian unsigned, minimal length, 1..8 bytes
    CNF = 8  # RFC 8747 holder key, reserved for dynamic codes
    STATUS = -65537  # reserved optional status claim (private use)


RESERVED_CLAIM_KEYS = frozenset(
    {
        ClaimKey.ISS,
        ClaimKey.SUB,
        ClaimKey.AUD,
        ClaimKey.EXP,
        ClaimKey.NBF,
        ClaimKey.IAT,
        ClaimKey.CTI,
        ClaimKey.CNF,
        ClaimKey.STATUS,
    }
)

_TAG_COSE_SIGN1 = 0xD2
_SIG1_CONTEXT = b"\x84\x6aSignature1"  # array(4), "Signature1"
_EMPTY_AAD = b"\x40"


class Signer:
    """The seam between the format and wherever a private key lives.

    ``kid`` goes into the protected header; ``algorithm`` is the key's;
    ``sign`` returns the COSE raw signature. Software keys, key files and the
    PKCS#11 HSM (``keys/``) all implement it.
    """

    kid: bytes
    algorithm: Any  # healthcode.algorithms.Algorithm

    def sign(self, data: bytes) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class UnverifiedCode:
    """A code taken apart but *not verified*: nothing here is trustworthy yet."""

    alg_id: int
    kid: bytes
    claims: dict[Any, Any]
    signed_bytes: bytes  # the COSE Sig_structure the signature covers
    signature: bytes
    cose: bytes


def sig_structure(protected_item: bytes, payload_item: bytes) -> bytes:
    """Sig_structure (RFC 9052 section 4.4) from the *received* encoded bstr items.

    ``protected_item`` and ``payload_item`` are the byte strings exactly as
    they appear in the COSE_Sign1, head included, so nothing is re-encoded.
    """
    return _SIG1_CONTEXT + protected_item + _EMPTY_AAD + payload_item


def encode_claims(claims: CodeClaims) -> bytes:
    """The CWT claims of ``claims`` in core deterministic CBOR."""
    mapping: dict[Any, Any] = dict(claims.extra)
    mapping[ClaimKey.ISS] = claims.province
    mapping[ClaimKey.SUB] = claims.subject
    mapping[ClaimKey.IAT] = to_epoch(claims.issued_at)
    mapping[ClaimKey.EXP] = to_epoch(claims.expires_at)
    mapping[ClaimKey.CTI] = claims.serial.to_bytes(max(1, (claims.serial.bit_length() + 7) // 8), "big")
    if claims.holder_key is not None:
        mapping[ClaimKey.CNF] = dict(claims.holder_key)
    if claims.status is not None:
        mapping[ClaimKey.STATUS] = claims.status
    return cbor.dumps(mapping)


def _encode_core_claims(claims: CodeClaims) -> bytes | None:
    """:func:`encode_claims` for the plain five-claim code, assembled directly; None otherwise.

    ``{1: iss, 2: sub, 4: exp, 6: iat, 7: cti}`` in core deterministic order
    (keys 01 < 02 < 04 < 06 < 07). Only when :class:`CodeClaims` has no extra,
    ``cnf`` or ``status`` claim and the validated province and subject have
    their fixed lengths; anything else takes the generic encoder. A unit test
    checks both encoders agree.
    """
    if claims.extra or claims.holder_key is not None or claims.status is not None:
        return None
    iss = claims.province.encode("ascii")
    sub = claims.subject.encode("ascii")
    if len(iss) != 2 or len(sub) != 26:
        return None
    serial = claims.serial
    cti = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
    return b"".join((
        b"\xa5\x01\x62", iss, b"\x02\x78\x1a", sub,
        b"\x04", cbor._head(0, to_epoch(claims.expires_at)),
        b"\x06", cbor._head(0, to_epoch(claims.issued_at)),
        b"\x07", bytes((0x40 | len(cti),)), cti,
    ))


#: The encoded protected-header item (``bstr .cbor {1: alg, 4: kid}``) per (alg, kid).
_PROTECTED_ITEMS: dict[tuple[int, bytes], bytes] = {}


def _protected_item(signer: Signer) -> bytes:
    key = (signer.algorithm.cose_id, bytes(signer.kid))
    item = _PROTECTED_ITEMS.get(key)
    if item is None:
        item = cbor.dumps(cbor.dumps({1: key[0], 4: key[1]}))
        if len(_PROTECTED_ITEMS) < 1024:  # a few keys per process; bounded regardless
            _PROTECTED_ITEMS[key] = item
    return item


def encode_code(claims: CodeClaims, signer: Signer) -> str:
    """Sign ``claims`` with ``signer``; return the code's text form.

    Refuses (:class:`InvalidClaims`) anything a verifier would refuse as
    malformed: claims over the CBOR caps, values CBOR cannot carry, a code
    over the size cap. So every code this signs passes the format checks.
    """
    payload = _encode_core_claims(claims)
    try:
        if payload is None:
            payload = encode_claims(claims)
            # Extra, cnf or status claims: check the result as a verifier would. The
            # plain five-claim payload is valid by construction (CodeClaims checked it).
            try:
                parse_optional_claims(decode_claims(payload))
            except MalformedCode as exc:
                raise InvalidClaims(f"claims would not verify: {exc.detail}") from None
        protected_item = _protected_item(signer)
    except cbor.CBORError as exc:
        raise InvalidClaims(f"claims cannot be encoded: {exc}") from None
    payload_item = cbor._head(2, len(payload)) + payload
    signature = signer.sign(_SIG1_CONTEXT + protected_item + _EMPTY_AAD + payload_item)
    signature_item = (b"\x58\x40" + signature) if len(signature) == 64 else cbor.dumps(signature)
    cose = b"".join((_COSE_SIGN1_HEAD, protected_item, b"\xa0", payload_item, signature_item))
    if len(cose) > MAX_COSE_BYTES:
        raise InvalidClaims(f"encoded code is {len(cose)} bytes, over the {MAX_COSE_BYTES}-byte cap")
    return PREFIX + b45encode(cose)


_COSE_SIGN1_HEAD = bytes((_TAG_COSE_SIGN1, 0x84))


def _bstr_span(data: bytes, pos: int) -> tuple[int, int]:
    """Return (content start, end) of the definite byte string whose head is at ``pos``."""
    head = data[pos]
    if head >> 5 != 2:
        raise MalformedCode("byte string expected in COSE_Sign1")
    ai = head & 0x1F
    if ai < 24:
        start, length = pos + 1, ai
    elif ai == 24:
        start, length = pos + 2, data[pos + 1]
        if length < 24:
            raise MalformedCode("byte string length not in shortest form")
    elif ai == 25:
        start, length = pos + 3, (data[pos + 1] << 8) | data[pos + 2]
        if length < 256:
            raise MalformedCode("byte string length not in shortest form")
    else:
        raise MalformedCode("byte string too long or of indefinite length")
    end = start + length
    if end > len(data):
        raise MalformedCode("truncated byte string")
    return start, end


def decode_unverified(text: str) -> UnverifiedCode:
    """Take a code's text apart, checking its form only.

    Raises :class:`MalformedCode` or :class:`UnsupportedVersion`. The caps are
    checked first: text length, then decoded size, then CBOR depth and size
    while parsing. Duplicate map keys and trailing bytes are refused.
    """
    alg_id, kid, payload, signed_bytes, signature, cose = _decode_unverified(text)
    return UnverifiedCode(alg_id, kid, decode_claims(payload), signed_bytes, signature, cose)


def _decode_unverified(text: str) -> tuple[int, bytes, bytes, bytes, bytes, bytes]:
    """:func:`decode_unverified` as a plain tuple with the claims still encoded
    (alg, kid, payload, signed bytes, signature, COSE), for the verify hot path."""
    # (1) caps and prefix, before any decoding
    if type(text) is not str:
        raise MalformedCode("code must be text")
    if len(text) > MAX_TEXT_LENGTH:
        raise MalformedCode(f"code longer than {MAX_TEXT_LENGTH} characters")
    if not text.startswith(PREFIX):
        if text.startswith(_PREFIX_STEM) and len(text) > 4 and text[4] == ":" and text[3] in _VERSION_CHARACTERS:
            raise UnsupportedVersion(f"code format version {text[3]!r} is not supported")
        raise MalformedCode("not a health code (prefix EHC1: missing)")
    # (2) Base45; the decoded size is bounded by the text cap (2 bytes per 3 chars)
    try:
        cose = b45decode(text[5:])
    except Base45Error as exc:
        raise MalformedCode(f"bad Base45: {exc}") from None
    if len(cose) > MAX_COSE_BYTES:
        raise MalformedCode(f"code larger than {MAX_COSE_BYTES} bytes")
    return _decode_cose(cose)


def _decode_cose(cose: bytes) -> tuple[int, bytes, bytes, bytes, bytes, bytes]:
    """Steps (3) and (4) of :func:`_decode_unverified` on the COSE_Sign1 bytes alone
    (a v1 code's, or the credential inside a dynamic presentation)."""
    # (3) COSE_Sign1 structure: tag 18, array of 4
    if len(cose) < 8 or cose[0] != _TAG_COSE_SIGN1 or cose[1] != 0x84:
        raise MalformedCode("not a tagged COSE_Sign1")
    try:
        if cose[2] == 0x4D:  # the usual 13-byte protected header
            p_start, p_end = 3, 16
        else:
            p_start, p_end = _bstr_span(cose, 2)
        if cose[p_end] != 0xA0:
            raise MalformedCode("unprotected header must be an empty map")
        head = cose[p_end + 1]
        if head == 0x58 and cose[p_end + 2] >= 24:  # the usual 24..255-byte payload
            c_start = p_end + 3
            c_end = c_start + cose[p_end + 2]
        else:
            c_start, c_end = _bstr_span(cose, p_end + 1)
        if cose[c_end] == 0x58 and cose[c_end + 1] == 64:  # the usual 64-byte signature
            s_start, s_end = c_end + 2, c_end + 66
        else:
            s_start, s_end = _bstr_span(cose, c_end)
    except IndexError:
        raise MalformedCode("truncated COSE_Sign1") from None
    if s_end != len(cose):
        raise MalformedCode("truncated or trailing bytes after COSE_Sign1")
    # (4) protected header {1: alg, 4: kid}
    protected = cose[p_start:p_end]
    if (
        len(protected) == 13
        and protected[0] == 0xA2
        and protected[1] == 0x01
        and (protected[2] == 0x26 or protected[2] == 0x27)
        and protected[3] == 0x04
        and protected[4] == 0x48
    ):
        alg_id = -1 - (protected[2] - 0x20)  # fast path: ES256 or EdDSA with an 8-byte kid
        kid = protected[5:13]
    else:
        alg_id, kid = _decode_protected(protected)
    return (
        alg_id,
        kid,
        cose[c_start:c_end],
        _SIG1_CONTEXT + cose[2:p_end] + _EMPTY_AAD + cose[p_end + 1 : c_end],
        cose[s_start:s_end],
        cose,
    )


def decode_claims(payload: bytes) -> dict[Any, Any]:
    """The claims map of a payload, in the strict CBOR profile (raises MalformedCode)."""
    try:
        claims = cbor.loads(payload, max_depth=MAX_CBOR_DEPTH, max_items=MAX_ITEMS)
    except cbor.CBORError as exc:
        raise MalformedCode(f"bad claims: {exc}") from None
    if type(claims) is not dict:
        raise MalformedCode("claims must be a map")
    return claims


def _decode_protected(protected: bytes) -> tuple[int, bytes]:
    try:
        header = cbor.loads(protected, max_depth=1, max_items=8)
    except cbor.CBORError as exc:
        raise MalformedCode(f"bad protected header: {exc}") from None
    if type(header) is not dict:
        raise MalformedCode("protected header must be a map")
    if 2 in header:
        raise MalformedCode("critical header parameters are not supported")
    alg_id, kid = header.get(1), header.get(4)
    if type(alg_id) is not int:
        raise MalformedCode("protected header needs an integer alg")
    if type(kid) is not bytes or not 1 <= len(kid) <= 32:
        raise MalformedCode("protected header needs a kid of 1 to 32 bytes")
    return alg_id, kid


_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def canonical_core_claims(payload: bytes) -> tuple[ProvinceCode, MainIndexId, int, int, int] | None:
    """The five core claims of a payload in the exact layout every issuer emits, or None.

    A code whose claims are exactly ``{1: iss, 2: sub, 4: exp, 6: iat, 7: cti}``
    in core deterministic encoding (2-character iss, 26-character sub, 4-byte
    times) is read at fixed offsets instead of through the generic decoder:
    this runs on every verification. Anything else, including every malformed
    payload, returns None and takes the generic path (:func:`decode_claims` and
    :func:`parse_core_claims`), which gives the same answer, only slower; a
    test checks the two agree on mutated payloads.
    """
    if len(payload) < 49:
        return None
    a5, k1, t2, iss, k2, t26a, t26b, sub, k4, u32a, exp, k6, u32b, iat, k7, cti_head = _CANONICAL.unpack_from(payload)
    if (
        (a5, k1, t2, k2, t26a, t26b, k4, u32a, k6, u32b, k7) != _CANONICAL_HEADS
        or not 0x41 <= cti_head <= 0x48
        or len(payload) != 48 + cti_head - 0x40
        or iss not in _PROVINCE_BYTES
        or sub.translate(None, _BASE32_BYTES)
        or sub[25] not in b"AEIMQUY4"
        or not 0x10000 <= iat < exp
    ):
        return None
    cti = payload[48:]
    if cti[0] == 0 and len(cti) > 1:
        return None
    return (
        ProvinceCode(iss.decode("ascii")),
        MainIndexId(sub.decode("ascii")),
        iat,
        exp,
        int.from_bytes(cti, "big"),
    )


def canonical_bound_claims(
    payload: bytes,
) -> tuple[tuple[ProvinceCode, MainIndexId, int, int, int], dict[Any, Any]] | None:
    """A phone credential's claims in the exact layout issuers emit: the core claims and a P-256 ``cnf``.

    ``{1: iss, 2: sub, 4: exp, 6: iat, 7: cti, 8: {1: {1: 2, -1: 1, -2: x, -3: sign}}}`` in
    core deterministic encoding (the compressed key of
    :func:`healthcode.presentation.holder_cnf`) is read at fixed offsets;
    returns (core claims, cnf) or None for anything else, which then takes the
    generic path with the same answer (a test checks they agree).
    """
    if len(payload) < 49 + 45 or payload[0] != 0xA6:
        return None
    cnf_at = len(payload) - 45
    tail = payload[cnf_at:]
    if tail[:11] != _BOUND_CNF_HEAD or tail[43] != 0x22 or tail[44] not in (0xF4, 0xF5):
        return None
    core = canonical_core_claims(b"\xa5" + payload[1:cnf_at])
    if core is None:
        return None
    return core, {1: {1: 2, -1: 1, -2: tail[11:43], -3: tail[44] == 0xF5}}


# 08 a1 01 a4 | 01 02 | 20 01 | 21 58 20 x(32) | 22 f4/f5
_BOUND_CNF_HEAD = bytes.fromhex("08a101a40102200121 5820".replace(" ", ""))


# a5 | 01 62 iss(2) | 02 78 1a sub(26) | 04 1a exp(4) | 06 1a iat(4) | 07 4n cti(n)
_CANONICAL = struct.Struct(">3B2s3B26s2BI2BI2B")
_CANONICAL_HEADS = (0xA5, 0x01, 0x62, 0x02, 0x78, 26, 0x04, 0x1A, 0x06, 0x1A, 0x07)
_PROVINCE_BYTES = frozenset(code.encode("ascii") for code in PROVINCES)
_BASE32_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


_CNF_MEMBERS = frozenset({1, 2, 3})  # RFC 8747: COSE_Key, Encrypted_COSE_Key, kid


def parse_optional_claims(claims: dict[Any, Any]) -> tuple[dict[Any, Any] | None, int | None]:
    """Check the reserved optional claims' shapes; return (cnf, status).

    ``cnf`` (8) must be an RFC 8747 confirmation map: integer members 1
    (a COSE_Key map), 2 or 3 only. ``status`` (-65537) must be an unsigned
    integer. Raises :class:`MalformedCode`.
    """
    cnf = claims.get(ClaimKey.CNF)
    status = claims.get(ClaimKey.STATUS)
    if cnf is not None and (
        type(cnf) is not dict
        or not cnf
        or not _CNF_MEMBERS.issuperset(cnf)
        or (1 in cnf and type(cnf[1]) is not dict)
    ):
        raise MalformedCode("cnf must be an RFC 8747 confirmation map")
    if status is not None and (type(status) is not int or status < 0):
        raise MalformedCode("status must be an unsigned integer")
    return cnf, status


def parse_core_claims(claims: dict[Any, Any]) -> tuple[ProvinceCode, MainIndexId, int, int, int]:
    """Check the required claims' types; return (province, subject, iat, exp, serial).

    Raises :class:`MalformedCode`. Called on unverified claims: the values are
    only *well formed*, not trusted, until the signature has been checked.
    """
    iss = claims.get(ClaimKey.ISS)
    sub = claims.get(ClaimKey.SUB)
    iat = claims.get(ClaimKey.IAT)
    exp = claims.get(ClaimKey.EXP)
    cti = claims.get(ClaimKey.CTI)
    if type(iss) is not str or iss not in PROVINCES:
        raise MalformedCode("iss must be a GB/T 2260 province code")
    if (
        type(sub) is not str
        or len(sub) != 26
        or not _BASE32.issuperset(sub)
        or sub[-1] not in "AEIMQUY4"
    ):
        raise MalformedCode("sub must be a 26-character main index ID")
    if type(iat) is not int or type(exp) is not int or not 0 <= iat < exp <= MAX_TIME:
        raise MalformedCode("iat and exp must be integers with 0 <= iat < exp < 2**32")
    if type(cti) is not bytes or not 1 <= len(cti) <= 8 or (cti[0] == 0 and len(cti) > 1):
        raise MalformedCode("cti must be a minimal big-endian serial of 1 to 8 bytes")
    if ClaimKey.AUD in claims or ClaimKey.NBF in claims:
        raise MalformedCode("aud and nbf claims are not used by this format")
    return ProvinceCode(iss), MainIndexId(sub), iat, exp, int.from_bytes(cti, "big")

