"""The TrustPublisher servicer and the publication loop.

:class:`TrustPublisherService` answers the two RPCs of
``proto/healthcode/publisher/v1/trust_publisher.proto``. A push is checked and
staged durably in a worker thread (:meth:`publisher.store.PublisherStore.accept`:
fsync, so the answer waits for the disk, never the event loop), then
acknowledged; every refusal is one JSON log line (logger ``publisher.push``)
naming the province and the reason, and a gRPC status with a
``google.rpc.ErrorInfo`` (and ``BadRequest`` for a bad field).

:class:`PublicationLoop` publishes (a thread of its own):

* **promptly**: ``batch_window`` seconds after the first push staged since the
  last publication, every staged push goes out in one snapshot and timestamp,
  so 34 provinces pushing together cost one signature pair, not 34;
* **before the timestamp expires**: a new timestamp (and a snapshot if it
  would expire first) every ``timestamp_refresh`` seconds; this also picks up
  what the national ceremonies wrote into the repository;
* **at start**: whatever a killed publisher left staged;
* **pruning**: with ``retention``, each timestamp refresh also deletes what no
  terminal can still be fetching (:mod:`publisher.retention`).

A failed publication is logged and retried after ``retry`` seconds.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from issuer import auth

from .api import trust_publisher_pb2 as pb
from .api import trust_publisher_pb2_grpc as pb_grpc
from .errors import PushRefused, Reason
from .store import Publication, PublisherStore

__all__ = ["TrustPublisherService", "PublicationLoop", "SERVICE_NAME", "STATUS_BY_REASON", "ERROR_DOMAIN"]

log = logging.getLogger("publisher.push")
publication_log = logging.getLogger("publisher.publication")

SERVICE_NAME = "healthcode.publisher.v1.TrustPublisher"
ERROR_DOMAIN = "publisher.healthcode"
#: The one table from a refusal's reason to its gRPC status.
STATUS_BY_REASON: dict[Reason, grpc.StatusCode] = {
    Reason.OTHER_PROVINCE: grpc.StatusCode.PERMISSION_DENIED,
    Reason.TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.TARGET_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.OUTSIDE_DELEGATION: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.BAD_SIGNATURE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.BAD_KEY_LIST: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.EXPIRED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.NOT_DELEGATED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.ROLLED_BACK: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.REPLAYED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.MISSING_TARGET: grpc.StatusCode.FAILED_PRECONDITION,
}


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _ts(moment: _dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment.astimezone(_dt.timezone.utc))
    return out


def refusal_status(error: PushRefused) -> grpc.Status:
    """The gRPC status of a refused push: its code, message, ErrorInfo and (for a field) BadRequest."""
    code = STATUS_BY_REASON[error.reason_code]
    proto = status_pb2.Status(code=code.value[0], message=error.message[:1000])
    if error.field is not None:
        proto.details.add().Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message[:500],
                                                        reason=error.reason.upper())]))
    proto.details.add().Pack(error_details_pb2.ErrorInfo(reason=error.reason.upper(), domain=ERROR_DOMAIN))
    return rpc_status.to_status(proto)


class PublicationLoop:
    """Publishes what is staged, promptly and in batches, and keeps the timestamp fresh (module docstring).

    Times in seconds; ``clock`` gives each publication's ``now`` (aware UTC),
    ``monotonic`` paces the loop.
    """

    def __init__(
        self,
        store: PublisherStore,
        *,
        batch_window: float = 0.5,
        timestamp_refresh: float = 3600.0,
        retry: float = 5.0,
        retention: _dt.timedelta | None = None,
        clock: Callable[[], _dt.datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_window < 0 or not timestamp_refresh > 0 or not retry > 0:
            raise ValueError("batch_window must be >= 0, timestamp_refresh and retry positive")
        self.store = store
        self.batch_window, self.timestamp_refresh, self.retry = batch_window, timestamp_refresh, retry
        self.retention = retention
        self._clock, self._monotonic = clock, monotonic
        self._cond = threading.Condition()
        self._pending_since: float | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.publications = 0
        self.failures = 0
        self.cpu_seconds = 0.0  # thread CPU time spent publishing (the benchmark's measure)
        self.last: Publication | None = None

    def notify(self) -> None:
        """A push was staged: publish within ``batch_window``. Thread-safe."""
        with self._cond:
            if self._pending_since is None:
                self._pending_since = self._monotonic()
            self._cond.notify_all()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the publication loop is already started")
        if self.store.staged():
            self._pending_since = self._monotonic()  # what a killed publisher acknowledged: publish first
        self._thread = threading.Thread(target=self._loop, name="publication", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop; staged pushes are published first (they are durable either way)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        next_refresh = self._monotonic() + self._refresh_delay()
        while True:
            with self._cond:
                while not self._stopping:
                    now_m = self._monotonic()
                    due = next_refresh
                    if self._pending_since is not None:
                        due = min(due, self._pending_since + self.batch_window)
                    if now_m >= due:
                        break
                    self._cond.wait(due - now_m)
                final = self._stopping
                force = self._pending_since is None and not final
                self._pending_since = None
            if final and not self.store.staged():
                return
            ok = self._publish(force=force)
            next_refresh = self._monotonic() + (self._refresh_delay() if ok else self.retry)
            if not ok:
                with self._cond:
                    if self._pending_since is None and self.store.staged():
                        self._pending_since = self._monotonic() + self.retry - self.batch_window
            if final:
                return

    def _refresh_delay(self) -> float:
        """Until the next timestamp refresh: ``timestamp_refresh``, sooner if the timestamp expires before
        two refresh periods have passed (a publisher started late, or a long outage), but never sooner than
        ``retry`` (or ``timestamp_refresh`` if shorter): a refresh period of half the timestamp's expiry or
        more would otherwise publish without pause."""
        floor = min(self.retry, self.timestamp_refresh)
        try:
            left = (self.store.timestamp().expires - self._clock()).total_seconds()
        except (OSError, ValueError):
            return self.retry
        return max(floor, min(self.timestamp_refresh, left - 2 * self.timestamp_refresh))

    def _publish(self, *, force: bool) -> bool:
        cpu = time.thread_time()
        try:
            result = self.store.publish_staged(now=self._clock(), force=force)
        except Exception as exc:  # noqa: BLE001 - logged and retried; what is staged stays staged
            self.failures += 1
            publication_log.error("publication failed: %s: %s (retried in %.0f s)", type(exc).__name__, exc,
                                  self.retry, extra={"event": "publication_failed"})
            return False
        finally:
            self.cpu_seconds += time.thread_time() - cpu
        if result is not None:
            self.publications += 1
            self.last = result
            publication_log.info("published %d push(es): %s", result.pushes, result.summary,
                                 extra={"event": "publication"})
        if force and self.retention is not None:
            try:
                pruned = self.store.prune(now=self._clock(), retention=self.retention)
            except Exception as exc:  # noqa: BLE001 - pruning is housekeeping: logged, tried again next time
                publication_log.error("pruning failed: %s: %s", type(exc).__name__, exc, extra={"event": "prune"})
            else:
                if pruned.snapshots or pruned.roles or pruned.targets:
                    publication_log.info("pruned %d snapshot(s), %d role version(s), %d file(s)", pruned.snapshots,
                                         pruned.roles, pruned.targets, extra={"event": "prune"})
        return True


class TrustPublisherService(pb_grpc.TrustPublisherServicer):
    """The RPCs, over ``store``; ``loop`` is told of every staged push."""

    def __init__(self, store: PublisherStore, loop: PublicationLoop, *,
                 clock: Callable[[], _dt.datetime] = _utc_now) -> None:
        self.store = store
        self.loop = loop
        self._clock = clock

    def add_to_server(self, server: Any) -> str:
        pb_grpc.add_TrustPublisherServicer_to_server(self, server)
        return SERVICE_NAME

    async def PushProvinceRole(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        caller = auth.current_caller()
        match = auth.PROVINCE_CN.fullmatch(caller)
        if match is None:  # a national:<name> certificate reads the status only
            log.warning("push refused: caller %s is not a province", caller,
                        extra={"event": "push_refused", "reason": Reason.OTHER_PROVINCE.value})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{caller} may not push: only province:<code>")
            raise AssertionError("unreachable")
        caller_province = match[1]
        targets = [(t.path, bytes(t.content)) for t in request.targets]
        unlisted = [(t.path, bytes(t.content)) for t in request.unlisted]
        now = self._clock()
        try:
            push, accepted_at = await asyncio.to_thread(
                self.store.accept, caller_province=caller_province, province=request.province,
                role_bytes=bytes(request.role_metadata), targets=targets, unlisted=unlisted, now=now)
        except PushRefused as error:
            log.warning("push refused: province %s: %s: %s", caller_province, error.reason, error.message,
                        extra={"event": "push_refused", "province": caller_province, "reason": error.reason})
            await context.abort_with_status(refusal_status(error))
            raise AssertionError("unreachable") from None
        if not push.already_accepted:
            self.loop.notify()
            log.info("push accepted: province-%s v%d (%d file(s), %d unlisted)", push.province, push.version,
                     len(push.targets), len(push.unlisted),
                     extra={"event": "push_accepted", "province": push.province})
        return pb.PushProvinceRoleResponse(version=push.version, already_accepted=push.already_accepted,
                                           accepted_at=_ts(accepted_at))

    async def GetPublicationStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        now = self._clock()
        provinces, timestamp, snapshot = await asyncio.to_thread(
            lambda: (self.store.provinces(), self.store.timestamp(), self.store.published_snapshot()))
        return pb.PublicationStatus(
            now=_ts(now),
            snapshot_version=snapshot.version if snapshot is not None else 0,
            snapshot_expires=_ts(snapshot.expires) if snapshot is not None else None,
            timestamp_version=timestamp.version, timestamp_expires=_ts(timestamp.expires),
            last_publication=_ts(self.store.last_publication),
            provinces=[pb.ProvincePublication(
                province=p.province, published_version=p.published_version, published_at=_ts(p.published_at),
                accepted_version=p.accepted_version, accepted_at=_ts(p.accepted_at),
                role_expires=_ts(p.role_expires)) for p in provinces])
