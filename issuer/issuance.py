"""Issuing, renewing and revoking codes, durably and idempotently.

An issuance, step by step (marked in :meth:`CodeIssuer._issue_new`):

1. the resident must exist and not be merged (a cache hit, or one indexed read);
2. the signer for ``now`` is looked up (per issuance: keys rotate);
3. the serial is allocated in memory: serials are dense per (province, kid)
   and start from ``max committed + 1`` loaded from the store the first time a
   kid is used;
4. the claims are signed (:func:`healthcode.sign_code`);
5. the record is submitted to the store's group-commit writer;
6. the issuance is acknowledged only when its transaction has committed.

Steps 3 to 5 run without yielding to the event loop, so nothing interleaves
between allocating a serial and queueing it. A serial whose row the store
refuses before writing anything (:class:`~issuer.store.base.RowRejected`) is
handed out again; one whose fate is unknown (a failed commit) never is. A
crash can lose only serials never acknowledged (they never left the process);
serials above the highest committed one are then reused, which is safe for
the same reason.

**Assumption: one issuing process per province database, and one
:class:`CodeIssuer` per store.** The allocator lives in this object's memory;
the store's UNIQUE (province, kid, serial) index refuses, rather than
duplicates, a serial from a second allocator.

Idempotency: a request with an idempotency key is answered, on every retry by
the same caller with the same key and the same parameters, with the code the
first request produced: coalesced in memory while the first is still in
flight, read back from the store once it has committed (also after a restart).
The first request for a key wins; the same key with different parameters is a
:class:`~issuer.errors.Conflict`, and it never stands in the way of the
original's retries (see :meth:`CodeIssuer._idempotent`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import heapq
import hmac
import threading
from concurrent.futures import Future
from typing import Any, Callable

import healthcode
from healthcode.codec import ClaimKey, Signer, decode_unverified, parse_core_claims
from healthcode.errors import HealthCodeError, VerificationError
from healthcode.model import MainIndexId, from_epoch, parse_province, to_epoch

from .errors import Conflict, FieldViolation, InvalidRequest, IssuerError, NoSigningKey, NotFound
from .index import parse_main_index_id_field
from .model import IDEMPOTENCY_KEY_RULE, Channel, CodeRef, IdempotencyKey, IssuedCode, RevocationReason
from .model import parse_idempotency_key
from .store.base import (
    ChallengeUse,
    CodeNotRenewable,
    CodeRecord,
    DuplicateIdempotencyKey,
    ResidentMerged,
    ResidentNotFound,
    RowRejected,
    Store,
)

__all__ = ["CodeIssuer", "DEFAULT_VALIDITY", "MAX_IDEMPOTENCY_KEY_LENGTH", "MAX_CALLER_LENGTH"]

DEFAULT_VALIDITY = dt.timedelta(days=7)
MAX_IDEMPOTENCY_KEY_LENGTH = 128
MAX_CALLER_LENGTH = 256


class _SerialAllocator:
    """Dense serials for one (province, kid): the next unused one, or one handed back."""

    __slots__ = ("next", "free")

    def __init__(self, start: int) -> None:
        self.next = start
        self.free: list[int] = []

    def allocate(self) -> int:
        if self.free:
            return heapq.heappop(self.free)
        serial = self.next
        self.next = serial + 1
        return serial

    def release(self, serial: int) -> None:
        """Hand back a serial that is stored nowhere and was shown to no one."""
        heapq.heappush(self.free, serial)


class _Completions:
    """Hands the store's write outcomes to one event loop, one wake-up per burst.

    ``asyncio.wrap_future`` wakes the loop once per future: a self-pipe write
    in the writer thread and a read in the loop, each releasing and retaking
    the GIL. A group commit resolves its futures back to back, so here the
    first outcome of a burst schedules one delivery and the rest join it.
    A waiter that was cancelled (its caller gave up) is skipped.
    """

    __slots__ = ("loop", "_lock", "_ready")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[asyncio.Future, Future]] = []

    def wrap(self, future: Future) -> asyncio.Future:
        waiter = self.loop.create_future()
        future.add_done_callback(lambda f: self._post(waiter, f))
        return waiter

    def _post(self, waiter: asyncio.Future, future: Future) -> None:  # any thread
        with self._lock:
            first = not self._ready
            self._ready.append((waiter, future))
        if first and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:  # the loop's thread
        with self._lock:
            ready, self._ready = self._ready, []
        for waiter, future in ready:
            if waiter.done():
                continue
            error = future.exception()
            if error is None:
                waiter.set_result(future.result())
            else:
                waiter.set_exception(error)


class _Abandoned(IssuerError):
    """The first request under an idempotency key ended without a code (its waiters retry)."""

    reason = "abandoned"

    def __init__(self) -> None:
        super().__init__("the first request under this idempotency key ended without a code")


def _fingerprint(*parts: bytes) -> bytes:
    return hashlib.sha256(b"\x00".join(parts)).digest()[:16]


def _holder_key_of(record: CodeRecord) -> dict[int, Any] | None:
    """The ``cnf`` claim of a stored code (its text is the one this issuer signed), or None."""
    if record.channel is not Channel.PHONE:
        return None
    cnf = decode_unverified(record.text).claims.get(ClaimKey.CNF)
    return None if cnf is None else dict(cnf)


def _check_caller(caller: object) -> str:
    if not isinstance(caller, str) or not 1 <= len(caller) <= MAX_CALLER_LENGTH:
        raise InvalidRequest([FieldViolation("caller", f"must be 1 to {MAX_CALLER_LENGTH} characters", "length")])
    return caller


def _check_key(key: IdempotencyKey | None) -> IdempotencyKey | None:
    """The key the wire parsed (:func:`issuer.wire.idempotency_key_field`), held to the same one rule
    (:func:`issuer.model.parse_idempotency_key`) for callers that come around the wire (library use)."""
    if key is None:
        return None
    try:
        return parse_idempotency_key(key)
    except ValueError:
        raise InvalidRequest([FieldViolation("idempotency_key", IDEMPOTENCY_KEY_RULE, "format")]) from None


def _check_ref(ref: object) -> CodeRef:
    if (
        not isinstance(ref, CodeRef)
        or not isinstance(ref.kid, bytes)
        or not 1 <= len(ref.kid) <= 32
        or type(ref.serial) is not int
        or not 0 <= ref.serial <= healthcode.model.MAX_SERIAL
    ):
        raise InvalidRequest([FieldViolation("ref", "must name a code: province, kid (1-32 bytes), serial", "ref")])
    return ref


class CodeIssuer:
    """Issues a province's codes. Give either ``signer`` or ``signer_for``.

    ``signer_for(now)`` returns the :class:`~healthcode.codec.Signer` to use at
    ``now`` (key rotation; it may raise :class:`~issuer.errors.NoSigningKey`);
    ``signer`` is the fixed-key shorthand. ``validity`` is each code's
    lifetime.

    Signing runs on the event loop (a software key signs in tens of
    microseconds); a slow signer (a network HSM) should sign in its own thread
    pool behind the same interface.
    """

    def __init__(
        self,
        *,
        store: Store,
        province: str,
        signer: Signer | None = None,
        signer_for: Callable[[dt.datetime], Signer] | None = None,
        validity: dt.timedelta = DEFAULT_VALIDITY,
    ) -> None:
        if (signer is None) == (signer_for is None):
            raise ValueError("give exactly one of signer and signer_for")
        if not isinstance(validity, dt.timedelta) or validity < dt.timedelta(seconds=1):
            raise ValueError("validity must be at least one second")
        self._store = store
        self.province = parse_province(province)
        self._signer_for = signer_for if signer_for is not None else (lambda now, _s=signer: _s)
        self._validity = validity
        self._allocators: dict[bytes, _SerialAllocator] = {}
        self._loading: dict[bytes, asyncio.Future] = {}
        self._pending: dict[tuple[str, str], tuple[bytes | None, asyncio.Future]] = {}
        self._completions: _Completions | None = None

    def _durable(self, future: Future) -> "asyncio.Future[Any]":
        """An awaitable for a store write's future (see :class:`_Completions`)."""
        completions = self._completions
        if completions is None or completions.loop is not asyncio.get_running_loop():
            completions = self._completions = _Completions(asyncio.get_running_loop())
        return completions.wrap(future)

    # -- idempotency

    async def _idempotent(
        self, caller: str, key: str | None, fingerprint: bytes | None, work: Callable
    ) -> IssuedCode:
        """Run ``work()`` once per (caller, key) at a time: concurrent requests wait for the one running.

        The first request for a key wins: any request with the same key and
        the same parameters (``fingerprint``) gets its code, and one with other
        parameters is a :class:`~issuer.errors.Conflict`.

        The request that finds the slot free runs ``work()`` itself (no task:
        it is the common case). Requests arriving meanwhile wait for its
        outcome, *whatever its parameters*: the running request is not
        necessarily the first for its key (the first may have committed
        already, and the running one be a conflicting latecomer on its way to
        being refused). So a waiter decides only from the outcome:

        * the running request got a code: with the same parameters, that code
          is the waiter's too; with other parameters, the running request
          owns the key (it issued the first code or was given it) and the
          waiter is a :class:`~issuer.errors.Conflict`;
        * it failed or gave up (its deadline passed): the waiter runs
          ``work()`` itself, one at a time. Whatever was stored under the key
          is then found by the store's unique (caller, key) index
          (:class:`DuplicateIdempotencyKey`, answered with the stored original
          or a Conflict), so a retry never gets a second code.

        Before issue 11 a waiter with other parameters was refused at once,
        which also refused the original's retries queued behind a refused
        latecomer (FAILED_PRECONDITION for a request that had won).
        """
        if key is None:
            return await work()
        slot = (caller, key)
        while (pending := self._pending.get(slot)) is not None:
            try:
                code = await asyncio.shield(pending[1])  # shielded: this waiter giving up cancels nothing shared
            except _Abandoned:
                continue  # the running request did not finish: try again (at most until one does)
            if pending[0] != fingerprint:
                raise Conflict("idempotency key was already used with different parameters")
            return code
        outcome = asyncio.get_running_loop().create_future()
        self._pending[slot] = (fingerprint, outcome)
        try:
            code = await work()
        except BaseException:
            outcome.set_exception(_Abandoned())
            outcome.exception()  # retrieved: no "exception never retrieved" noise when nobody waited
            raise
        else:
            outcome.set_result(code)
        finally:
            del self._pending[slot]
        return code

    async def _stored_original(self, caller: str, key: str | None, fingerprint: bytes | None) -> IssuedCode | None:
        """The code stored under (``caller``, ``key``) if its request had this ``fingerprint``; None if
        there is none (always without a key); :class:`~issuer.errors.Conflict` for other parameters."""
        if key is None:
            return None
        record = await asyncio.to_thread(self._store.find_code_by_idempotency_key, caller, key)
        if record is None:
            return None
        if record.request_fingerprint != fingerprint:
            raise Conflict("idempotency key was already used with different parameters")
        return record.to_issued_code()

    # -- the resident check

    async def _require_active(self, mid: str) -> None:
        if self._store.known_active(mid):
            return
        resident = await asyncio.to_thread(self._store.get_resident, mid)
        if resident is None:
            raise NotFound("resident not found")
        if resident.merged_into is not None:
            raise Conflict("resident was merged into another entry; use the survivor's main index ID")
        if not resident.active:
            raise Conflict(f"resident is homed in province {resident.home_province} now; it issues their codes")

    # -- serials

    async def _allocator(self, kid: bytes) -> _SerialAllocator:
        allocator = self._allocators.get(kid)
        if allocator is not None:
            return allocator
        loading = self._loading.get(kid)
        if loading is None:
            loading = asyncio.ensure_future(asyncio.to_thread(self._store.next_serial, self.province, kid))
            self._loading[kid] = loading
            loading.add_done_callback(lambda _f: self._loading.pop(kid, None))
        start = await asyncio.shield(loading)
        # several waiters may arrive here: only the first creates the allocator
        return self._allocators.setdefault(kid, _SerialAllocator(start))

    def _signer(self, now: dt.datetime) -> Signer:
        signer = self._signer_for(now)
        if signer is None:
            raise NoSigningKey("no signing key for this province now")
        return signer

    # -- issuing

    async def _issue_new(
        self,
        *,
        caller: str,
        mid: MainIndexId,
        key: str | None,
        fingerprint: bytes | None,
        now: dt.datetime,
        supersedes: CodeRef | None = None,
        channel: Channel = Channel.STATIC,
        holder_key: dict[int, Any] | None = None,
        challenge: ChallengeUse | None = None,
        replace_live: bool = False,
    ) -> IssuedCode:
        """Steps (2) to (6). With ``replace_live`` the new code supersedes the resident's live codes of
        ``channel`` in its transaction (one live code per resident per channel); ``holder_key`` is its
        ``cnf``; ``challenge`` is consumed in the same transaction (:mod:`issuer.wallets`)."""
        # (1) is checked by the callers, before anything is allocated.
        # (2) the signer for this moment
        signer = self._signer(now)
        kid = bytes(signer.kid)
        allocator = self._allocators.get(kid) or await self._allocator(kid)
        iat = to_epoch(now)
        issued_at = from_epoch(iat)
        expires_at = issued_at + self._validity
        # (3)-(5) allocate, sign, submit: no await in between
        serial = allocator.allocate()
        try:
            text = healthcode.sign_code(
                healthcode.CodeClaims(self.province, mid, serial, issued_at, expires_at, holder_key=holder_key), signer
            )
            record = CodeRecord(
                self.province, kid, serial, mid, issued_at, expires_at, text, caller, key, fingerprint, channel=channel
            )
            future = self._store.submit_code(record, supersedes=supersedes, replace_channel=replace_live,
                                              challenge=challenge)
        except BaseException:
            allocator.release(serial)
            raise
        # (6) acknowledged only once durable
        try:
            await self._durable(future)
        except RowRejected:
            allocator.release(serial)
            raise
        except asyncio.CancelledError:
            # The caller gave up; the write goes on. Hand the serial back if it is refused.
            loop = asyncio.get_running_loop()
            future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._release_if_rejected, allocator,
                                                                         serial, f))
            raise
        return IssuedCode(CodeRef(self.province, kid, serial), mid, issued_at, expires_at, text, channel=channel)

    @staticmethod
    def _release_if_rejected(allocator: _SerialAllocator, serial: int, future: Future) -> None:
        if isinstance(future.exception(), RowRejected):
            allocator.release(serial)

    async def issue_code(
        self,
        *,
        caller: str,
        main_index_id: MainIndexId,
        idempotency_key: IdempotencyKey | None,
        now: dt.datetime,
        replace_live: bool = False,
    ) -> IssuedCode:
        """Issue a static code to an unmerged resident; return it once durably stored.

        With ``replace_live`` (what the API's IssueCode asks for) it supersedes
        the resident's live static codes in the same transaction (one live code
        per resident per channel); an idempotent retry returns the first code
        and supersedes nothing more. Without it (library callers, tests that
        need many live codes), earlier codes stay live.

        Raises :class:`~issuer.errors.InvalidRequest` (bad ID or key),
        :class:`~issuer.errors.NotFound` (no such resident),
        :class:`~issuer.errors.Conflict` (merged resident; key reused for
        another resident), :class:`~issuer.errors.NoSigningKey`,
        :class:`~issuer.errors.Unavailable` (store closed or failing).
        """
        caller = _check_caller(caller)
        mid = parse_main_index_id_field(main_index_id, "main_index_id")
        key = _check_key(idempotency_key)
        fingerprint = _fingerprint(b"issue", mid.encode()) if key is not None else None

        async def work() -> IssuedCode:
            try:
                await self._require_active(mid)
            except (NotFound, Conflict):
                if key is not None:  # a retry after a merge still gets its original code
                    original = await self._stored_original(caller, key, fingerprint)
                    if original is not None:
                        return original
                raise
            try:
                return await self._issue_new(caller=caller, mid=mid, key=key, fingerprint=fingerprint, now=now,
                                             replace_live=replace_live)
            except DuplicateIdempotencyKey:  # committed before (e.g. before a restart): the original
                original = await self._stored_original(caller, key, fingerprint)
                if original is None:
                    raise
                return original
            except ResidentMerged:
                raise Conflict("resident was merged into another entry; use the survivor's main index ID") from None
            except ResidentNotFound:
                raise NotFound("resident not found") from None

        return await self._idempotent(caller, key, fingerprint, work)

    async def renew_code(
        self,
        *,
        caller: str,
        ref: CodeRef,
        idempotency_key: IdempotencyKey | None,
        now: dt.datetime,
        text: str | None = None,
    ) -> IssuedCode:
        """Issue a new code to the same resident; the old one is revoked as ``superseded``, atomically.

        The new code keeps the old one's channel and, for a phone credential,
        its device binding (the same ``cnf``).

        The old code may have expired but must not be revoked
        (:class:`~issuer.errors.Conflict`) and must exist
        (:class:`~issuer.errors.NotFound`). Named by its ``text`` (``ref``
        then being :meth:`ref_from_text` of it), it must be exactly the text
        issued, else :class:`~issuer.errors.NotFound` (see :meth:`_named`),
        checked before anything else, idempotent replays included.
        """
        caller = _check_caller(caller)
        ref = _check_ref(ref)
        key = _check_key(idempotency_key)
        fingerprint = (
            _fingerprint(b"renew", ref.province.encode(), ref.kid, str(ref.serial).encode())
            if key is not None
            else None
        )

        async def work() -> IssuedCode:
            old = None
            if text is not None:
                old = self._named(await asyncio.to_thread(self._store.get_code, ref), text)
            if key is not None:
                original = await self._stored_original(caller, key, fingerprint)
                if original is not None:
                    return original
            if old is None:
                old = self._named(await asyncio.to_thread(self._store.get_code, ref), None)
            if old.revoked_at is not None:
                raise Conflict("code is revoked; issue a new one instead")
            await self._require_active(old.main_index_id)
            try:
                return await self._issue_new(
                    caller=caller, mid=MainIndexId(old.main_index_id), key=key, fingerprint=fingerprint, now=now,
                    supersedes=ref, channel=old.channel, holder_key=_holder_key_of(old),
                )
            except DuplicateIdempotencyKey:
                original = await self._stored_original(caller, key, fingerprint)
                if original is None:
                    raise
                return original
            except CodeNotRenewable:
                raise Conflict("code was revoked or renewed meanwhile") from None
            except ResidentMerged:
                raise Conflict("resident was merged into another entry") from None
            except ResidentNotFound:
                raise NotFound("resident not found") from None

        return await self._idempotent(caller, key, fingerprint, work)

    # -- revoking and reading

    async def revoke_code(
        self, *, ref: CodeRef, reason: RevocationReason, now: dt.datetime, text: str | None = None
    ) -> IssuedCode:
        """Revoke a code; return it as stored. A revoked code keeps its first reason and time.

        Named by its ``text``, the code is revoked only if that is exactly the
        text issued (else :class:`~issuer.errors.NotFound`, nothing revoked;
        see :meth:`_named`). A code's text never changes, so checking it
        before the revocation leaves no gap.
        """
        ref = _check_ref(ref)
        reason = self._check_reason(reason)
        if text is not None:
            self._named(await asyncio.to_thread(self._store.get_code, ref), text)
        record = await asyncio.wrap_future(self._store.revoke_code(ref, reason=reason, at=now))
        if record is None:
            raise NotFound("code not found")
        return record.to_issued_code()

    async def revoke_resident_codes(self, *, main_index_id: MainIndexId, reason: RevocationReason,
                                    now: dt.datetime) -> int:
        """Revoke every live code of a resident (merged or not); return how many."""
        mid = parse_main_index_id_field(main_index_id, "main_index_id")
        reason = self._check_reason(reason)
        if await asyncio.to_thread(self._store.get_resident, mid) is None:
            raise NotFound("resident not found")
        return await asyncio.wrap_future(self._store.revoke_resident_codes(mid, reason=reason, at=now))

    async def get_code(self, ref: CodeRef, *, text: str | None = None) -> IssuedCode:
        """The code as stored now, with its revocation if any (:class:`~issuer.errors.NotFound`).

        Named by its ``text``, only the exact text issued finds it (:meth:`_named`).
        """
        record = await asyncio.to_thread(self._store.get_code, _check_ref(ref))
        return self._named(record, text).to_issued_code()

    @staticmethod
    def _named(record: CodeRecord | None, text: str | None) -> CodeRecord:
        """``record`` if it exists and, when the request named it by ``text``, that text is the one issued.

        A text names a code by its *unverified* (province, kid, serial)
        (:meth:`ref_from_text`): anyone can write a text naming another
        resident's code, with any ``sub`` and a zeroed signature. So the text
        must equal the stored one, which the store keeps exactly as issued.
        Chosen over verifying the signature because it is exact and cheap: a
        string comparison on the row the request reads anyway, with no public
        keys to keep (retired ones included) and no signature check; and it is
        stricter (a re-encoded text, or one signed by another key under the
        same kid, is not the code issued). Compared in constant time, so the
        timing does not leak the stored text.

        Any other text is :class:`~issuer.errors.NotFound` with the message of
        a missing code: the answer does not even tell that a code exists
        under the (province, kid, serial) the text claims.
        """
        if record is None or (
            text is not None and not hmac.compare_digest(record.text.encode(), text.encode("utf-8", "replace"))
        ):
            raise NotFound("code not found")
        return record

    @staticmethod
    def ref_from_text(text: str) -> CodeRef:
        """Name the code in ``text`` by its *unverified* (province, kid, serial).

        Only the form is checked: the result is a lookup key, not proof of
        anything, so pass the text along (``text=`` of :meth:`get_code`,
        :meth:`revoke_code`, :meth:`renew_code`), which finds the code only
        if the text is the one issued. A malformed code raises
        :class:`~issuer.errors.InvalidRequest` on field ``code``.
        """
        try:
            unverified = decode_unverified(text)
            province, _subject, _iat, _exp, serial = parse_core_claims(unverified.claims)
        except (VerificationError, HealthCodeError) as exc:
            detail = exc.detail if isinstance(exc, VerificationError) else "malformed code"
            raise InvalidRequest([FieldViolation("code", f"not a well-formed health code: {detail}",
                                                 "malformed")]) from None
        return CodeRef(province, unverified.kid, serial)

    @staticmethod
    def _check_reason(reason: object) -> RevocationReason:
        try:
            return RevocationReason(reason)
        except ValueError:
            raise InvalidRequest(
                [FieldViolation("reason", "must be one of: " + ", ".join(r.value for r in RevocationReason), "reason")]
            ) from None

