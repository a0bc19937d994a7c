"""Verification of a code's text against a keyring, at a given time.

:func:`verify` returns a :class:`~healthcode.model.VerifiedCode` or raises a
:class:`~healthcode.errors.VerificationError` whose ``reason`` says why;
:func:`check` is the non-raising form for scanner UIs. Time is always a
parameter: the core never reads a clock.

The steps, marked in the code:

1. caps, prefix and version, Base45, COSE_Sign1 form, claims form,
   including the shapes of the optional cnf and status claims
   (:mod:`healthcode.codec`);
2. trust freshness hook (the verifier's policy on stale trust data);
3. the key named by (``iss``, kid) in the keyring;
4. the algorithm comes from the key: the header must name the key's;
5. the signature over the received Sig_structure bytes;
6. key compromise;
7. the key's use window must contain ``iat``;
8. time: ``iat`` not in the future (beyond the skew), ``now`` before ``exp``
   and not after the key's ``verify_until``;
9. revocation of (province, kid, serial);
10. holder binding: a code whose claims bind it to a device key (``cnf``)
    is valid only inside a dynamic presentation
    (:func:`healthcode.presentation.verify_presentation`), never on its own,
    so a screenshot of the bare credential is worth nothing.

Steps 2 to 9 are :func:`verify_credential`, which the presentation verifier
shares.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Protocol

from .codec import (
    RESERVED_CLAIM_KEYS,
    _decode_unverified,
    canonical_bound_claims,
    canonical_core_claims,
    decode_claims,
    parse_core_claims,
    parse_optional_claims,
)
from .errors import (
    AlgorithmMismatch,
    BadSignature,
    Expired,
    KeyCompromised,
    KeyNotValidAtIssuance,
    NotYetValid,
    PresentationRequired,
    Reason,
    Revoked,
    TrustDataStale,
    UnknownKey,
    VerificationError,
)
from .keyring import CompromisePolicy, Keyring, KeyStatus
from .model import VerifiedCode, to_epoch

__all__ = ["RevocationChecker", "TrustFreshness", "VerificationResult", "verify", "verify_credential", "check"]

_NO_SKEW = _dt.timedelta(0)
_EMPTY: Mapping[int | str, Any] = MappingProxyType({})


class RevocationChecker(Protocol):
    """Answers whether a serial of a (province, key) shard is revoked."""

    def is_revoked(self, province: str, kid: bytes, serial: int) -> bool: ...


class TrustFreshness(Protocol):
    """The verifier's view of its trust data; ``stale_detail`` is None while fresh enough."""

    def stale_detail(self, now: _dt.datetime) -> str | None: ...


def verify(
    text: str,
    keyring: Keyring,
    *,
    now: _dt.datetime,
    revocation: RevocationChecker | None = None,
    trust: TrustFreshness | None = None,
    clock_skew: _dt.timedelta = _NO_SKEW,
) -> VerifiedCode:
    """Verify the code ``text`` at time ``now``; raise on any failure.

    ``clock_skew`` tolerates a code whose ``iat`` is up to that far in the
    future of ``now`` (the issuer's clock may run ahead of the terminal's).
    """
    # (1) form
    code = verify_credential(
        _decode_unverified(text), keyring, now=now, revocation=revocation, trust=trust, clock_skew=clock_skew
    )
    # (10) holder binding
    if code.holder_key is not None:
        raise PresentationRequired("code is bound to a phone: scan its live QR, not a copy")
    return code


def verify_credential(
    parts: tuple[int, bytes, bytes, bytes, bytes, bytes],
    keyring: Keyring,
    *,
    now: _dt.datetime,
    revocation: RevocationChecker | None = None,
    trust: TrustFreshness | None = None,
    clock_skew: _dt.timedelta = _NO_SKEW,
) -> VerifiedCode:
    """Steps 1 (claims) to 9 over a COSE_Sign1 already taken apart by the codec.

    ``parts`` is ``(alg, kid, payload, signed bytes, signature, cose)`` from
    :func:`healthcode.codec._decode_unverified` or ``_decode_cose``. The holder
    binding (step 10) is the caller's: :func:`verify` refuses a bound code,
    a presentation requires one.
    """
    alg_id, kid, payload, signed_bytes, signature, _ = parts
    holder_key: dict[Any, Any] | None = None
    status: int | None = None
    claims: dict[Any, Any] | None = None  # None: exactly the core claims (and a P-256 cnf), no extra
    core = canonical_core_claims(payload)
    if core is None:
        bound = canonical_bound_claims(payload)  # a phone credential, in the layout issuers emit
        if bound is not None:
            core, holder_key = bound
        else:
            claims = decode_claims(payload)
            core = parse_core_claims(claims)
            holder_key, status = parse_optional_claims(claims)
    province, subject, iat, exp, serial = core
    now_s = to_epoch(now)
    # (2) trust freshness
    if trust is not None:
        stale = trust.stale_detail(now)
        if stale is not None:
            raise TrustDataStale(stale)
    # (3) the key: the kid is a hint, looked up within the code's province
    key = keyring.find(province, kid)
    if key is None:
        raise UnknownKey(f"no trusted key of province {province} with kid {kid.hex()}")
    # (4) algorithm from the key, never from the code
    if key._alg_id != alg_id:
        raise AlgorithmMismatch(f"header alg {alg_id} is not the key's {key.algorithm.value}")
    # (5) signature over the received bytes
    if not key.public_key.verify(signature, signed_bytes):
        raise BadSignature("signature does not verify")
    # (6) compromise
    if key.status is KeyStatus.COMPROMISED and (
        key.compromise_policy is CompromisePolicy.REJECT_ALL
        or (key._compromised_s is not None and iat >= key._compromised_s)
    ):
        raise KeyCompromised(f"signing key {key.kid.hex()} of province {province} is compromised")
    # (7) the key's use window
    if not key._use_from_s <= iat <= key._use_until_s:
        raise KeyNotValidAtIssuance("code issued outside its key's use window")
    # (8) time
    if iat > now_s and iat > now_s + int(clock_skew.total_seconds()):
        raise NotYetValid("code issued in the future")
    if now_s >= exp:
        raise Expired("code has expired")
    if now_s > key._verify_until_s:
        raise Expired("signing key's verification window has ended")
    # (9) revocation
    if revocation is not None and revocation.is_revoked(province, key.kid, serial):
        raise Revoked("code has been revoked")
    if claims is None:
        extra = _EMPTY
    else:
        extra = MappingProxyType({k: v for k, v in claims.items() if k not in RESERVED_CLAIM_KEYS})
    return VerifiedCode(
        province, subject, serial, iat, exp, key.kid, key.algorithm.value, holder_key, status, extra
    )


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """Non-raising outcome for UIs: ``code`` when valid, else ``reason`` and ``detail``."""

    code: VerifiedCode | None
    reason: Reason | None
    detail: str

    @property
    def valid(self) -> bool:
        return self.code is not None


def check(
    text: str,
    keyring: Keyring,
    *,
    now: _dt.datetime,
    revocation: RevocationChecker | None = None,
    trust: TrustFreshness | None = None,
    clock_skew: _dt.timedelta = _NO_SKEW,
) -> VerificationResult:
    """Like :func:`verify`, but returns a :class:`VerificationResult` instead of raising."""
    try:
        code = verify(
            text, keyring, now=now, revocation=revocation, trust=trust, clock_skew=clock_skew
        )
    except VerificationError as exc:
        return VerificationResult(None, exc.reason, exc.detail)
    return VerificationResult(code, None, "valid")
