"""Binding a resident's phone to a credential, for dynamic codes (issue 13; the ``Wallets`` API).

An enrolment, step by step (marked in :meth:`WalletIssuer.issue_credential`):

1. :meth:`WalletIssuer.create_challenge` hands out 32 random bytes, bound to
   the caller (the app's back end) and the resident, usable once for
   :data:`CHALLENGE_TTL`; they are stored, so a restart forgets none and a
   used one stays used;
2. the phone signs ``"EHC-ENROL-v1" 00 || challenge || SHA-256(its public
   key)`` (:func:`healthcode.presentation.proof_of_possession_input`);
3. :meth:`WalletIssuer.issue_credential` checks, in this order: an
   idempotent retry (answered with the first credential, before the
   challenge, which that credential used up); the resident; the challenge
   (unknown, expired, used, or another resident's or caller's: field
   ``challenge``); the key (an algorithm this province allows, field
   ``device_key.algorithm``; a point on its curve, P-256 or SM2: field
   ``device_key.public_key``);
   the proof (field ``proof``; the challenge is then spent all the same, so a
   challenge takes one guess);
4. the credential (a code whose ``cnf`` names the key) is issued with the
   challenge consumed, and the resident's previous live phone credential
   superseded, in the same transaction: a challenge used meanwhile by a
   concurrent request refuses the code, and nothing is stored.

``renewal_only`` (the servicer sets it for a caller without the issuance
role that names the resident by main index ID: a wallet-role key may sit in
a public page, and every QR code carries the main index ID in clear) allows
only a renewal: :meth:`~WalletIssuer.create_challenge` needs a live phone
credential, and :meth:`~WalletIssuer.issue_credential` a device key equal to
the one bound in a live phone credential of the resident (checked after the
retry and before the challenge, so a refusal spends nothing). Otherwise
:class:`RenewalOnly` (FAILED_PRECONDITION, reason ``renewal_only``): a new
phone names the resident by document.

The :class:`~issuer.issuance.CodeIssuer` does the issuing (serials, signing,
group commit, idempotency); this module adds the challenge and the key.
Errors are :mod:`issuer.errors` types; nothing here logs an identifier.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Collection
from typing import Callable, NamedTuple

from healthcode.algorithms import Algorithm
from healthcode.errors import BadDeviceSignature, InvalidKey, UnsupportedAlgorithm
from healthcode.model import MainIndexId, to_epoch
from healthcode.presentation import CHALLENGE_BYTES, holder_cnf, verify_proof_of_possession

from .errors import Conflict, FieldViolation, InvalidRequest, NotFound
from .index import parse_main_index_id_field
from .issuance import CodeIssuer, _check_caller, _check_key, _fingerprint, _holder_key_of
from .model import Channel, IdempotencyKey, IssuedCode
from .store.base import ChallengeRecord, ChallengeRefused, ChallengeUse, CodeRecord, DuplicateIdempotencyKey, Store

__all__ = ["WalletIssuer", "CHALLENGE_TTL", "Challenge", "DEVICE_KEY_ALGORITHMS", "RenewalOnly"]

#: Device key algorithms an issuer can bind (P-256 is every phone's; SM2 where a province asks for it).
DEVICE_KEY_ALGORITHMS = (Algorithm.ES256, Algorithm.SM2_SM3)
_CURVE_NAMES = {Algorithm.ES256: "P-256", Algorithm.SM2_SM3: "the SM2 curve"}

#: How long a challenge may be used.
CHALLENGE_TTL = dt.timedelta(minutes=5)


class Challenge(NamedTuple):
    """A challenge handed out: its bytes, and when it stops being usable."""

    value: bytes
    expires_at: dt.datetime


class RenewalOnly(Conflict):
    """By main index ID, a caller without the issuance role renews only (-> FAILED_PRECONDITION):
    the resident has no live phone credential, or it is bound to another device key."""

    reason = "renewal_only"


def _invalid(field: str, description: str, code: str) -> InvalidRequest:
    return InvalidRequest([FieldViolation(field, description, code)])


def _not_on_curve(algorithm: Algorithm) -> InvalidRequest:
    return _invalid("device_key.public_key", f"not a point on {_CURVE_NAMES[algorithm]}", "curve")


class WalletIssuer:
    """Challenges, credentials bound to device keys, and a resident's live codes.

    ``codes`` issues, and its store keeps the challenges; ``random_bytes``
    makes challenges (tests may pass their own). ``device_key_algorithms``
    are the device keys this province binds (the config's
    ``[wallets] device_key_algorithms``; default ES256 only): a subset of
    :data:`DEVICE_KEY_ALGORITHMS`, in the order error messages name them. Times are passed in.
    """

    def __init__(self, *, codes: CodeIssuer, random_bytes: Callable[[int], bytes] = secrets.token_bytes,
                 on_revoked: Callable[[], None] | None = None,
                 device_key_algorithms: Collection[Algorithm] = (Algorithm.ES256,)) -> None:
        allowed = tuple(dict.fromkeys(Algorithm(a) for a in device_key_algorithms))
        if not allowed or not set(allowed) <= set(DEVICE_KEY_ALGORITHMS):
            raise ValueError(f"device key algorithms must be some of {', '.join(map(str, DEVICE_KEY_ALGORITHMS))}")
        self.device_key_algorithms: tuple[Algorithm, ...] = allowed
        self._store: Store = codes._store
        self._codes = codes
        self._random = random_bytes
        self._on_revoked = on_revoked  # e.g. the revocation job's trigger: a new credential supersedes the last

    async def create_challenge(self, *, caller: str, main_index_id: MainIndexId, now: dt.datetime,
                               renewal_only: bool = False) -> Challenge:
        """A new single-use challenge for the resident (:class:`~issuer.errors.NotFound`,
        :class:`~issuer.errors.Conflict` for a merged one; with ``renewal_only``, :class:`RenewalOnly`
        when the resident has no live phone credential). Expires :data:`CHALLENGE_TTL` after ``now``
        (whole seconds, as stored)."""
        caller = _check_caller(caller)
        mid = parse_main_index_id_field(main_index_id, "main_index_id")
        await self._codes._require_active(mid)
        if renewal_only and not await self._live_holder_keys(mid, now):
            raise RenewalOnly("by main index ID a wallet only renews, and this resident has no live phone "
                              "credential: enrol the phone with the resident's document")
        value = self._random(CHALLENGE_BYTES)
        if len(value) != CHALLENGE_BYTES:
            raise ValueError("random_bytes returned the wrong length")
        created = dt.datetime.fromtimestamp(to_epoch(now), dt.timezone.utc)
        record = ChallengeRecord(value, mid, caller, created, created + CHALLENGE_TTL)
        await asyncio.wrap_future(self._store.create_challenge(record))
        return Challenge(value, record.expires_at)

    async def issue_credential(
        self,
        *,
        caller: str,
        main_index_id: MainIndexId,
        challenge: bytes,
        device_key: bytes,
        proof: bytes,
        idempotency_key: IdempotencyKey | None,
        now: dt.datetime,
        algorithm: Algorithm = Algorithm.ES256,
        renewal_only: bool = False,
    ) -> IssuedCode:
        """Issue a phone credential bound to ``device_key`` (SEC 1, a point on ``algorithm``'s curve:
        P-256 for ES256, SM2 for SM2-SM3) after checking ``proof``.

        See the module docstring for the checks and their order. Raises
        :class:`~issuer.errors.InvalidRequest` (fields ``challenge``,
        ``device_key.algorithm`` (not one of :attr:`device_key_algorithms`), ``device_key.public_key``,
        ``proof``), :class:`~issuer.errors.NotFound`,
        :class:`~issuer.errors.Conflict` (merged resident; idempotency key
        reused with other parameters), :class:`RenewalOnly` (with ``renewal_only``: ``device_key`` is not
        the key of a live phone credential of the resident), :class:`~issuer.errors.NoSigningKey`,
        :class:`~issuer.errors.Unavailable`.
        """
        caller = _check_caller(caller)
        mid = parse_main_index_id_field(main_index_id, "main_index_id")
        key = _check_key(idempotency_key)
        algorithm = Algorithm(algorithm)
        if algorithm not in self.device_key_algorithms:
            raise _invalid("device_key.algorithm", f"{algorithm} device keys are not allowed here; allowed: "
                                                   f"{', '.join(map(str, self.device_key_algorithms))}", "unsupported")
        challenge, device_key, proof = bytes(challenge), bytes(device_key), bytes(proof)
        # ES256's fingerprint is unchanged from before SM2; another algorithm is part of an SM2 one
        what = b"credential" if algorithm is Algorithm.ES256 else b"credential/" + algorithm.value.encode()
        fingerprint = _fingerprint(what, mid.encode(), device_key) if key is not None else None
        codes = self._codes

        async def work() -> IssuedCode:
            # (3) a retry first: its challenge was used by the credential it is owed
            if key is not None:
                original = await codes._stored_original(caller, key, fingerprint)
                if original is not None:
                    return original
            await codes._require_active(mid)
            if renewal_only:
                await self._require_bound(mid, device_key, algorithm, now)
            use = ChallengeUse(challenge, mid, caller)
            self._check_challenge(await asyncio.to_thread(self._store.get_challenge, challenge), use, now)
            try:
                verify_proof_of_possession(device_key, challenge, proof, algorithm)
            except (InvalidKey, UnsupportedAlgorithm):  # UnsupportedAlgorithm: SM2 without the sm2 extra
                raise _not_on_curve(algorithm) from None
            except BadDeviceSignature:
                await asyncio.wrap_future(self._store.consume_challenge(use, at=now))
                raise _invalid("proof", "proof of possession does not verify with the device key "
                                        "(the challenge is used up: ask for a new one)", "proof") from None
            # (4) issue, consuming the challenge and superseding the last phone credential
            try:
                return await codes._issue_new(caller=caller, mid=mid, key=key, fingerprint=fingerprint, now=now,
                                              channel=Channel.PHONE, holder_key=holder_cnf(device_key, algorithm),
                                              challenge=use, replace_live=True)
            except DuplicateIdempotencyKey:
                original = await codes._stored_original(caller, key, fingerprint)
                if original is None:
                    raise
                return original

        credential = await codes._idempotent(caller, key, fingerprint, work)
        if self._on_revoked is not None:  # the resident's previous phone credential may now be superseded
            self._on_revoked()
        return credential

    async def _live(self, mid: MainIndexId, now: dt.datetime) -> list[CodeRecord]:
        """The resident's live codes (unrevoked, unexpired at ``now``), oldest first."""
        records = await asyncio.to_thread(self._store.codes_of, mid)
        return [r for r in records if r.revoked_at is None and r.expires_at > now]

    async def _live_holder_keys(self, mid: MainIndexId, now: dt.datetime) -> list[dict]:
        """The ``cnf`` claims of the resident's live phone credentials (at most one, in practice)."""
        return [cnf for r in await self._live(mid, now) if (cnf := _holder_key_of(r)) is not None]

    async def _require_bound(self, mid: MainIndexId, device_key: bytes, algorithm: Algorithm,
                             now: dt.datetime) -> None:
        """Refuse (:class:`RenewalOnly`) a device key not bound in a live phone credential of the resident."""
        try:
            wanted = holder_cnf(device_key, algorithm)
        except (InvalidKey, UnsupportedAlgorithm):
            raise _not_on_curve(algorithm) from None
        if wanted not in await self._live_holder_keys(mid, now):
            raise RenewalOnly("by main index ID a wallet only renews, with the device key of the resident's live "
                              "phone credential: enrol another phone with the resident's document")

    @staticmethod
    def _check_challenge(record: ChallengeRecord | None, use: ChallengeUse, now: dt.datetime) -> None:
        """Refuse a challenge that cannot be used (the store checks again as it consumes it)."""
        if record is None:
            raise ChallengeRefused("challenge is unknown or expired; ask for a new one")
        if record.main_index_id != use.main_index_id or record.caller != use.caller:
            raise ChallengeRefused("challenge was not made for this resident and caller")
        if record.used_at is not None:
            raise ChallengeRefused("challenge was used already; ask for a new one")
        if record.expires_at <= now:
            raise ChallengeRefused("challenge has expired; ask for a new one")

    async def list_live_codes(self, *, main_index_id: MainIndexId, now: dt.datetime) -> list[IssuedCode]:
        """The resident's live codes (unrevoked, unexpired at ``now``), newest first, with their channels."""
        mid = parse_main_index_id_field(main_index_id, "main_index_id")
        if await asyncio.to_thread(self._store.get_resident, mid) is None:
            raise NotFound("resident not found")
        return [r.to_issued_code() for r in reversed(await self._live(mid, now))]
