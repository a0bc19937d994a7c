"""Dynamic presentations: a credential bound to the holder's phone, shown as a QR that changes every 30 s.

``docs/code-format.md`` section 16 is the normative description; this module is
its implementation. A *credential* is a v1 code whose claims carry the holder's
device key (``cnf``, RFC 8747). It is never shown on its own (a v1 verifier
refuses it with ``presentation_required``); the phone shows a *presentation*::

    "EHCD:" + Base45( [ credential COSE_Sign1 (exactly the v1 code's bytes),
                        step: uint,              ; floor(unix time / 30)
                        device_signature: bstr ] )  ; 64 bytes, raw r || s

and the device signature (ECDSA P-256 with SHA-256, or SM2 with SM3 where a
province allows SM2 device keys) covers :func:`device_signing_input`: a
domain-separation string, the step, and the SHA-256 of the credential's COSE
bytes. A terminal checks it offline with the key the issuer signed into the
credential; the key's curve in ``cnf`` fixes the algorithm (section 16.4).

:func:`verify_presentation` (steps marked in the code):

1. caps, prefix, Base45, the presentation's CBOR form; the credential's
   COSE_Sign1 form;
2. the time step: within ``[step(now - skew) - 1, step(now + skew)]``
   (``stale_presentation`` / ``future_presentation``), checked before any
   signature so a stale screenshot costs nothing;
3. the credential, exactly as :func:`healthcode.verify` checks a code
   (trust freshness, key, algorithm, issuer signature, compromise, windows,
   expiry, revocation);
4. the holder key from ``cnf`` (``no_holder_key`` when missing or unusable);
5. the device signature over the domain-separated bytes
   (``bad_device_signature``).

Replay: the same presentation scanned twice at a terminal is recognised by
:class:`ReplayCache`, keyed on (province, kid, serial, step), never on
signature bytes (ECDSA signatures are malleable, §14.1).

Time is a parameter; nothing here reads a clock.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from . import cbor
from .algorithms import Algorithm, VerificationKey, load_p256_point, load_sm2_point
from .base45 import Base45Error, b45decode, b45encode
from .codec import MAX_COSE_BYTES, PREFIX, _bstr_span, _decode_cose
from .errors import (
    BadDeviceSignature,
    FuturePresentation,
    InvalidClaims,
    InvalidKey,
    MalformedCode,
    NoHolderKey,
    Reason,
    Replayed,
    StalePresentation,
    UnsupportedAlgorithm,
    VerificationError,
)
from .keyring import Keyring
from .model import VerifiedCode, to_epoch
from .verify import RevocationChecker, TrustFreshness, verify_credential

__all__ = [
    "PRESENTATION_PREFIX",
    "CHALLENGE_BYTES",
    "STEP_SECONDS",
    "DEFAULT_PRESENTATION_SKEW",
    "MAX_PRESENTATION_TEXT_LENGTH",
    "MAX_PRESENTATION_BYTES",
    "DEVICE_SIGNATURE_CONTEXT",
    "DeviceSigner",
    "UnverifiedPresentation",
    "VerifiedPresentation",
    "PresentationResult",
    "ReplayCache",
    "step_at",
    "DEVICE_KEY_ALGORITHMS",
    "holder_cnf",
    "holder_key_from_cnf",
    "device_signing_input",
    "ENROLMENT_CONTEXT",
    "proof_of_possession_input",
    "verify_proof_of_possession",
    "encode_presentation",
    "decode_presentation_unverified",
    "verify_presentation",
    "check_presentation",
    "is_presentation",
]

PRESENTATION_PREFIX = "EHCD:"
#: One time step: a presentation changes every 30 s.
STEP_SECONDS = 30
#: Tolerated difference between the phone's clock and the terminal's.
DEFAULT_PRESENTATION_SKEW = _dt.timedelta(seconds=30)
#: The credential's cap plus the presentation's own bytes (array head, step, signature).
MAX_PRESENTATION_BYTES = MAX_COSE_BYTES + 1 + 9 + 2 + 64
MAX_PRESENTATION_TEXT_LENGTH = len(PRESENTATION_PREFIX) + (MAX_PRESENTATION_BYTES // 2) * 3 + 2
DEVICE_SIGNATURE_CONTEXT = b"EHC-DYN-v1\x00"
#: Domain separation of the enrolment proof of possession (the issuer's Wallets API).
ENROLMENT_CONTEXT = b"EHC-ENROL-v1\x00"
CHALLENGE_BYTES = 32
_MAX_STEP = 0xFFFFFFFF // STEP_SECONDS  # times are 32-bit on the wire, as in the credential
_DEVICE_SIGNATURE_HEAD = b"\x58\x40"
_COSE_KEY_KTY, _COSE_KEY_CRV, _COSE_KEY_X, _COSE_KEY_Y = 1, -1, -2, -3
_KTY_EC2, _CRV_P256 = 2, 1
#: The SM2 curve (GB/T 32918.5) in a COSE_Key: private use (RFC 9052 section 16.4, below -65536), as SM2-SM3's alg.
_CRV_SM2 = -65537
_CNF_COSE_KEY = 1
#: Device key algorithms a credential may bind, with their COSE_Key curve: P-256 (ES256) and SM2 (SM2-SM3).
DEVICE_KEY_ALGORITHMS: Mapping[Algorithm, int] = {Algorithm.ES256: _CRV_P256, Algorithm.SM2_SM3: _CRV_SM2}
_CURVE_LOADERS = {_CRV_P256: (load_p256_point, "P-256"), _CRV_SM2: (load_sm2_point, "the SM2 curve")}


class DeviceSigner(Protocol):
    """The phone's key: ECDSA P-256 with SHA-256 (or SM2 with SM3), raw ``r || s`` (64 bytes), over ``data``."""

    def sign(self, data: bytes) -> bytes: ...


class UnverifiedPresentation(NamedTuple):
    """A presentation taken apart but *not verified*."""

    credential_cose: bytes
    step: int
    device_signature: bytes


class VerifiedPresentation(NamedTuple):
    """A presentation whose credential, time step and device signature have all been checked."""

    credential: VerifiedCode
    step: int

    @property
    def replay_key(self) -> tuple[str, bytes, int, int]:
        """(province, kid, serial, step): what makes a presentation "the same" one (never its bytes)."""
        code = self.credential
        return (code.province, code.kid, code.serial, self.step)


@dataclass(frozen=True, slots=True)
class PresentationResult:
    """Non-raising outcome for UIs: ``presentation`` when valid, else ``reason`` and ``detail``."""

    presentation: VerifiedPresentation | None
    reason: Reason | None
    detail: str

    @property
    def valid(self) -> bool:
        return self.presentation is not None


def step_at(now: _dt.datetime) -> int:
    """The time step containing ``now``: ``floor(unix seconds / 30)``."""
    return to_epoch(now) // STEP_SECONDS


def holder_cnf(public_point: bytes, algorithm: Algorithm = Algorithm.ES256) -> dict[int, Any]:
    """The ``cnf`` claim for a device key: ``{1: {1: 2, -1: crv, -2: x, -3: sign bit}}``.

    ``public_point`` is the SEC 1 point (``04 x y`` or compressed) on the
    curve of ``algorithm``: ES256 (P-256, ``crv`` 1) or SM2-SM3 (the SM2
    curve, ``crv`` -65537, private use). The key is written compressed (RFC
    9053 section 7.1.1: ``-3`` is the sign bit, ``true`` when y is odd), 33
    bytes shorter than with y in full. Raises :class:`InvalidKey` for a point
    not on the curve, :class:`UnsupportedAlgorithm` for another algorithm (or
    SM2 without the ``sm2`` extra).
    """
    crv = DEVICE_KEY_ALGORITHMS.get(algorithm)
    if crv is None:
        raise UnsupportedAlgorithm(f"{algorithm} is not a device key algorithm")
    key = _CURVE_LOADERS[crv][0](public_point)  # refuses what is not on the curve
    x, y_odd = _compressed(key)
    return {_CNF_COSE_KEY: {_COSE_KEY_KTY: _KTY_EC2, _COSE_KEY_CRV: crv, _COSE_KEY_X: x, _COSE_KEY_Y: y_odd}}


def _compressed(key: VerificationKey) -> tuple[bytes, bool]:
    point = _uncompressed_point(key)
    return point[1:33], bool(point[64] & 1)


def _uncompressed_point(key: VerificationKey) -> bytes:
    """``04 x y``: a P-256 or SM2 SubjectPublicKeyInfo ends with the uncompressed point."""
    return key.spki_der()[-65:]


def holder_key_from_cnf(cnf: Mapping[Any, Any] | None) -> VerificationKey:
    """The device key named by a credential's ``cnf`` claim; raise :class:`NoHolderKey`.

    Supported: ``{1: COSE_Key}`` with an EC2 key (``kty`` 2) on P-256
    (``crv`` 1: ES256) or on the SM2 curve (``crv`` -65537: SM2-SM3), ``x`` 32
    bytes, ``y`` 32 bytes or the sign bit as a boolean; the point must be on
    the curve. Other members of the COSE_Key are ignored (RFC 9052 section 7);
    other confirmation methods are not supported. An SM2 key where the ``sm2``
    extra is not installed is :class:`NoHolderKey` too (this verifier cannot use it).
    """
    if cnf is None:
        raise NoHolderKey("credential is not bound to a device key (no cnf)")
    cose_key = cnf.get(_CNF_COSE_KEY)
    if type(cose_key) is not dict:
        raise NoHolderKey("cnf carries no COSE_Key")
    crv = cose_key.get(_COSE_KEY_CRV)
    if cose_key.get(_COSE_KEY_KTY) != _KTY_EC2 or type(crv) is not int or crv not in _CURVE_LOADERS:
        raise NoHolderKey("holder key is not an EC2 P-256 or SM2 key")
    load, curve = _CURVE_LOADERS[crv]
    x, y = cose_key.get(_COSE_KEY_X), cose_key.get(_COSE_KEY_Y)
    if type(x) is not bytes or len(x) != 32:
        raise NoHolderKey("holder key x must be 32 bytes")
    if type(y) is bool:
        point = bytes((3 if y else 2,)) + x
    elif type(y) is bytes and len(y) == 32:
        point = b"\x04" + x + y
    else:
        raise NoHolderKey("holder key y must be 32 bytes or a sign bit")
    try:
        return load(point)
    except InvalidKey:
        raise NoHolderKey(f"holder key is not a point on {curve}") from None
    except UnsupportedAlgorithm:
        raise NoHolderKey("holder key is an SM2 key and this verifier has no SM2 (the sm2 extra)") from None


def device_signing_input(credential_cose: bytes, step: int) -> bytes:
    """The bytes the device signs: ``"EHC-DYN-v1" 00 || step (8 bytes, big-endian) || SHA-256(credential)``."""
    return DEVICE_SIGNATURE_CONTEXT + step.to_bytes(8, "big") + hashlib.sha256(credential_cose).digest()


def proof_of_possession_input(challenge: bytes, device_key: VerificationKey) -> bytes:
    """What a phone signs to enrol: ``"EHC-ENROL-v1" 00 || challenge || SHA-256(public key, SEC 1 uncompressed)``.

    The key's hash binds the proof to the key being enrolled, so a proof made
    for one key cannot enrol another; the challenge (single-use, the issuer's)
    makes it fresh. The different context keeps a proof from ever being a
    device signature of a presentation, and the reverse.
    """
    if type(challenge) is not bytes or len(challenge) != CHALLENGE_BYTES:
        raise InvalidClaims(f"challenge must be {CHALLENGE_BYTES} bytes")
    return ENROLMENT_CONTEXT + challenge + hashlib.sha256(_uncompressed_point(device_key)).digest()


def verify_proof_of_possession(device_point: bytes, challenge: bytes, proof: bytes,
                               algorithm: Algorithm = Algorithm.ES256) -> VerificationKey:
    """The device key of ``device_point`` (SEC 1) if ``proof`` signs the challenge with it.

    ``algorithm`` is the key's: ES256 (a P-256 point, ECDSA with SHA-256) or
    SM2-SM3 (an SM2 point, SM2 with SM3 and the default signer ID); both sign
    the same bytes (:func:`proof_of_possession_input`). Raises
    :class:`~healthcode.errors.InvalidKey` for a point that is not on the
    curve, :class:`~healthcode.errors.UnsupportedAlgorithm` for another
    algorithm (or SM2 without the ``sm2`` extra), and
    :class:`~healthcode.errors.BadDeviceSignature` for a proof that does not
    verify. The issuer calls this before binding a key.
    """
    crv = DEVICE_KEY_ALGORITHMS.get(algorithm)
    if crv is None:
        raise UnsupportedAlgorithm(f"{algorithm} is not a device key algorithm")
    key = _CURVE_LOADERS[crv][0](device_point)
    if not key.verify(proof, proof_of_possession_input(challenge, key)):
        raise BadDeviceSignature("proof of possession does not verify with the device key")
    return key


def encode_presentation(credential: str, step: int, device: DeviceSigner) -> str:
    """The presentation of the credential text ``credential`` (``EHC1:`` with ``cnf``) at ``step``.

    What a phone does every 30 s, offline. The credential is taken apart only
    as far as its form (the phone trusts its own issuer's answer); raises
    :class:`InvalidClaims` for a credential that is not a v1 code, a step out
    of range, or a signature that is not 64 bytes.
    """
    if type(credential) is not str or not credential.startswith(PREFIX):
        raise InvalidClaims("credential must be an EHC1: code")
    if type(step) is not int or not 0 <= step <= _MAX_STEP:
        raise InvalidClaims("step out of range")
    try:
        cose = b45decode(credential[len(PREFIX):])
        _decode_cose(cose)
    except (Base45Error, MalformedCode) as exc:
        raise InvalidClaims(f"credential is not a well-formed code: {exc}") from None
    signature = device.sign(device_signing_input(cose, step))
    if len(signature) != 64:
        raise InvalidClaims("device signature must be 64 bytes (raw r || s)")
    body = b"\x83" + cose + cbor.dumps(step) + _DEVICE_SIGNATURE_HEAD + signature
    return PRESENTATION_PREFIX + b45encode(body)


def is_presentation(text: str) -> bool:
    """Whether ``text`` claims to be a dynamic presentation (by its prefix only)."""
    return type(text) is str and text.startswith(PRESENTATION_PREFIX)


def decode_presentation_unverified(text: str) -> UnverifiedPresentation:
    """Take a presentation apart, checking its form only; raise :class:`MalformedCode`.

    Caps first (text length, decoded size), then the exact layout: an array of
    three, the credential's tagged COSE_Sign1 (its own form checked too), a
    step in shortest form, a 64-byte signature, nothing after.
    """
    parts, step, signature = _decode_presentation(text)
    return UnverifiedPresentation(parts[5], step, signature)


def _decode_presentation(text: str) -> tuple[tuple[int, bytes, bytes, bytes, bytes, bytes], int, bytes]:
    """:func:`decode_presentation_unverified` with the credential already taken apart by the codec."""
    # (1) caps and prefix
    if type(text) is not str:
        raise MalformedCode("presentation must be text")
    if len(text) > MAX_PRESENTATION_TEXT_LENGTH:
        raise MalformedCode(f"presentation longer than {MAX_PRESENTATION_TEXT_LENGTH} characters")
    if not text.startswith(PRESENTATION_PREFIX):
        raise MalformedCode("not a dynamic presentation (prefix EHCD: missing)")
    try:
        data = b45decode(text[len(PRESENTATION_PREFIX):])
    except Base45Error as exc:
        raise MalformedCode(f"bad Base45: {exc}") from None
    if len(data) > MAX_PRESENTATION_BYTES:
        raise MalformedCode(f"presentation larger than {MAX_PRESENTATION_BYTES} bytes")
    if len(data) < 1 + 8 + 1 + 66 or data[0] != 0x83:
        raise MalformedCode("presentation must be an array of credential, step and signature")
    # the signature is the last 66 bytes; the step's one-to-nine bytes sit before it
    if data[-66:-64] != _DEVICE_SIGNATURE_HEAD:
        raise MalformedCode("device signature must be a 64-byte string at the end")
    signature = data[-64:]
    cose = data[1 : 1 + _cose_length(data, 1)]
    if len(cose) > MAX_COSE_BYTES:
        raise MalformedCode(f"credential larger than {MAX_COSE_BYTES} bytes")
    parts = _decode_cose(cose)  # the credential's form (raises MalformedCode)
    try:
        step = cbor.loads(data[1 + len(cose) : -66], max_depth=1, max_items=1)
    except cbor.CBORError as exc:
        raise MalformedCode(f"bad presentation step: {exc}") from None
    if type(step) is not int or step < 0:
        raise MalformedCode("presentation step must be an unsigned integer")
    return parts, step, signature


def _cose_length(data: bytes, pos: int) -> int:
    """The length of the tagged COSE_Sign1 that starts at ``data[pos]``, from its heads alone."""
    if data[pos : pos + 2] != b"\xd2\x84":
        raise MalformedCode("presentation credential is not a tagged COSE_Sign1")
    try:
        _, protected_end = _bstr_span(data, pos + 2)
        if data[protected_end] != 0xA0:
            raise MalformedCode("unprotected header must be an empty map")
        _, payload_end = _bstr_span(data, protected_end + 1)
        _, signature_end = _bstr_span(data, payload_end)
    except IndexError:
        raise MalformedCode("truncated credential") from None
    return signature_end - pos


def verify_presentation(
    text: str,
    keyring: Keyring,
    *,
    now: _dt.datetime,
    revocation: RevocationChecker | None = None,
    trust: TrustFreshness | None = None,
    clock_skew: _dt.timedelta = DEFAULT_PRESENTATION_SKEW,
    issuer_clock_skew: _dt.timedelta | None = None,
) -> VerifiedPresentation:
    """Verify the dynamic presentation ``text`` at ``now``; raise on any failure.

    ``clock_skew`` is how far the phone's clock may differ from the terminal's
    (either way). A presentation of step ``s`` is accepted while
    ``step(now - skew) - 1 <= s <= step(now + skew)``: with the defaults, for
    60 to 90 s after it was made, and never before it could have been.
    ``issuer_clock_skew`` bounds how far in the future the credential's ``iat``
    may be, as ``clock_skew`` does for :func:`healthcode.verify` (default: the
    same as ``clock_skew``).
    """
    # (1) form
    parts, step, signature = _decode_presentation(text)
    credential_cose = parts[5]
    # (2) time step, before any signature
    now_s = to_epoch(now)
    skew_s = int(clock_skew.total_seconds())
    if step < (now_s - skew_s) // STEP_SECONDS - 1:
        raise StalePresentation(f"presentation is {(now_s // STEP_SECONDS - step) * STEP_SECONDS} s old")
    if step > (now_s + skew_s) // STEP_SECONDS:
        raise FuturePresentation("presentation is from the future: check the phone's and this terminal's clocks")
    # (3) the credential, as a code
    credential = verify_credential(
        parts, keyring, now=now, revocation=revocation, trust=trust,
        clock_skew=clock_skew if issuer_clock_skew is None else issuer_clock_skew,
    )
    # (4) the holder key the issuer bound into it
    holder_key = holder_key_from_cnf(credential.holder_key)
    # (5) the device signature
    if not holder_key.verify(signature, device_signing_input(credential_cose, step)):
        raise BadDeviceSignature("device signature does not verify with the credential's holder key")
    return VerifiedPresentation(credential, step)


def check_presentation(
    text: str,
    keyring: Keyring,
    *,
    now: _dt.datetime,
    revocation: RevocationChecker | None = None,
    trust: TrustFreshness | None = None,
    clock_skew: _dt.timedelta = DEFAULT_PRESENTATION_SKEW,
    issuer_clock_skew: _dt.timedelta | None = None,
) -> PresentationResult:
    """Like :func:`verify_presentation`, but returns a :class:`PresentationResult` instead of raising."""
    try:
        presentation = verify_presentation(
            text, keyring, now=now, revocation=revocation, trust=trust, clock_skew=clock_skew,
            issuer_clock_skew=issuer_clock_skew,
        )
    except VerificationError as exc:
        return PresentationResult(None, exc.reason, exc.detail)
    return PresentationResult(presentation, None, "valid")


class ReplayCache:
    """Presentations already accepted at one terminal, forgotten when they can no longer verify.

    ``admit(presentation, now)`` records a verified presentation and raises
    :class:`~healthcode.errors.Replayed` when the same (province, kid, serial,
    step) was admitted before. Entries are dropped once their step is past the
    accepted window (``horizon``), and the oldest are dropped first beyond
    ``capacity`` (a terminal scans far fewer than that in two minutes). Not
    thread-safe: the terminal's single scan loop owns it. Time is passed in.
    """

    def __init__(self, *, capacity: int = 100_000,
                 horizon: _dt.timedelta = DEFAULT_PRESENTATION_SKEW * 2 + _dt.timedelta(seconds=2 * STEP_SECONDS)):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._horizon_steps = int(horizon.total_seconds()) // STEP_SECONDS + 1
        self._seen: OrderedDict[tuple[str, bytes, int, int], int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, presentation: VerifiedPresentation, now: _dt.datetime) -> None:
        """Record ``presentation``; raise :class:`Replayed` if it was admitted before."""
        self._expire(step_at(now))
        key = presentation.replay_key
        if key in self._seen:
            raise Replayed("this live code was already scanned: ask the holder to show the phone again")
        self._seen[key] = presentation.step
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)

    def _expire(self, now_step: int) -> None:
        oldest = now_step - self._horizon_steps
        # entries are added in scan order, whose steps are nearly sorted: stop at the first young one
        while self._seen:
            key, step = next(iter(self._seen.items()))
            if step >= oldest:
                break
            del self._seen[key]
