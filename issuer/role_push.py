"""The province role pushed over the network to the national trust publisher (``push_mode = "network"``).

In network mode the issuer signs its province role exactly as in repository
mode, into a **working copy** of the trust repository on its own machine
(``key_admin.trust_repo``: the revocation job's :func:`issuer.revocation_job.push_directory`
and KeyAdmin's key-list changes both write there), and :class:`RolePusher`
sends the newest role version, the files it lists and the unlisted revocation
deltas to the publisher (``publisher/``, RPC ``PushProvinceRole``) until the
publisher acknowledges it. An acknowledged push is the publisher's to publish,
even if it is killed at once; anything not acknowledged is pushed again:

* **triggered** after each revocation run, and **polled** every ``poll``
  seconds (a KeyAdmin change, e.g. MarkCompromised, is seen within that);
* **retried** with exponential backoff (``backoff_initial`` doubling to
  ``backoff_max``) while the publisher is unreachable or refuses;
* **idempotent**: a push the publisher already holds is answered
  ``already_accepted``, so a restarted issuer simply pushes its newest role
  again at start (nothing needs remembering across restarts);
* **incremental**: only the files that changed since the last acknowledged
  push are sent; when the publisher lacks one (``missing_target``, e.g. after
  its own restore from backup) every file is sent at once.

The working copy needs the national root and targets: it starts as a copy of
the national repository (``cp -r``, or what ``healthcode-keys province add``
handed the province), and must be refreshed from the national repository
when the national targets changes the province's delegation (a re-key).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RolePusher", "open_role_pusher"]

log = logging.getLogger("issuer.role_push")


class RolePusher:
    """Pushes ``province``'s newest role in ``repository`` (a :class:`keys.trustrepo.TrustRepository`
    working copy) through ``connect()`` (a :class:`publisher.client.PublisherClient` factory) until
    acknowledged (module docstring). Times in seconds."""

    def __init__(
        self,
        *,
        repository: Any,
        province: str,
        connect: Callable[[], Any],
        poll: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (poll > 0 and 0 < backoff_initial <= backoff_max):
            raise ValueError("poll and backoff_initial must be positive, backoff_initial <= backoff_max")
        self.repository = repository
        self.province = province
        self._connect = connect
        self._client: Any = None
        self.poll, self.backoff_initial, self.backoff_max = poll, backoff_initial, backoff_max
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._wanted = True  # at start: push the newest role (the publisher may not have it)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.acknowledged = 0  # the role version the publisher acknowledged
        self._acked_key: tuple[int, str] | None = None  # (version, unlisted digest) acknowledged
        self._acked_files: dict[str, str] | None = None  # target path -> sha256 the publisher holds
        self.failures = 0
        self.pushes = 0
        self.last_error: BaseException | None = None

    # -- one push

    def _read(self) -> tuple[int, bytes, dict[str, bytes], list[tuple[str, bytes]]] | None:
        """The newest role's version and bytes, its listed files and the unlisted deltas, read together."""
        from tuf.api.metadata import Metadata, Targets

        from keys.trustrepo_files import province_role

        with self.repository.lock():  # the role and its deltas as one writer left them
            role = self.repository.province_targets(self.province)
            if role is None:
                return None
            name = f"{role.version}.{province_role(self.province)}.json"
            role_bytes = (self.repository.directory / "metadata" / name).read_bytes()
            role = Metadata[Targets].from_bytes(role_bytes).signed
            files = {path: self.repository.target_bytes(path, role) for path in role.targets}
            unlisted = sorted((f"provinces/{self.province}/{n}", data)
                              for n, data in self.repository.unlisted(self.province, "revocation").items())
        return role.version, role_bytes, files, unlisted

    def push_once(self, *, full: bool = True) -> Any:
        """Push the newest role if it was not acknowledged yet; the acknowledgement, or None when
        there was nothing to push. Without ``full`` (a poll) only a new role version is looked for,
        not changed unlisted deltas (a revocation run triggers a full look). Raises
        ``grpc.RpcError`` (or OSError) on failure."""
        import grpc

        from keys.trustrepo_files import province_role
        from publisher.client import refusal_reason

        if not full and self._acked_key is not None:
            newest = self.repository._versions().get(province_role(self.province))  # one directory scan
            if newest == self._acked_key[0]:
                return None
        read = self._read()
        if read is None:
            return None
        version, role_bytes, files, unlisted = read
        key = (version, hashlib.sha256(b"".join(p.encode() + b"\0" + d for p, d in unlisted)).hexdigest())
        if key == self._acked_key:
            return None
        digests = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
        send = [(p, d) for p, d in files.items()
                if self._acked_files is None or self._acked_files.get(p) != digests[p]]
        if self._client is None:
            self._client = self._connect()
        try:
            ack = self._client.push(self.province, role_bytes, targets=send, unlisted=unlisted)
        except grpc.RpcError as error:
            if refusal_reason(error) != "missing_target" or self._acked_files is None:
                raise
            self._acked_files = None  # the publisher lacks a file it had: send every file
            ack = self._client.push(self.province, role_bytes, targets=list(files.items()), unlisted=unlisted)
        self.acknowledged, self._acked_key, self._acked_files = ack.version, key, digests
        self.pushes += 1
        log.info("province-%s v%d pushed to the publisher (%d file(s) sent, %d unlisted)%s", self.province,
                 ack.version, len(send), len(unlisted), "; already accepted" if ack.already_accepted else "",
                 extra={"event": "role_pushed", "province": self.province})
        return ack

    # -- the thread

    def trigger(self) -> None:
        """Push soon (after a revocation run). Cheap and thread-safe."""
        with self._cond:
            self._wanted = True
            self._cond.notify_all()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the role pusher is already started")
        self._thread = threading.Thread(target=self._loop, name="role-pusher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread (a push in flight finishes or fails; nothing is lost: the working copy holds it)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._client is not None:
            self._client.close()
            self._client = None

    def wait_acknowledged(self, version: int, timeout: float) -> bool:
        """Wait until the publisher acknowledged ``version`` or a later one."""
        with self._cond:
            return self._cond.wait_for(lambda: self.acknowledged >= version, timeout)

    def _loop(self) -> None:
        delay = self.backoff_initial
        failing = False
        while True:
            with self._cond:
                if not self._wanted and not self._stopping:
                    self._cond.wait(self.poll)
                if self._stopping:
                    return
                full, self._wanted = self._wanted, False
            try:
                self.push_once(full=full or failing)
            except Exception as exc:  # noqa: BLE001 - retried with backoff, never fatal
                self.failures += 1
                self.last_error = exc
                if self._client is not None and not _is_refusal(exc):
                    self._client.close()  # a fresh channel after a transport failure
                    self._client = None
                log.warning("push of province-%s failed: %s (retried in %.1f s)", self.province, _brief(exc),
                            delay, extra={"event": "role_push_failed", "province": self.province})
                with self._cond:
                    self._wanted = False
                    if not self._stopping:
                        self._cond.wait(delay)
                    self._wanted = True
                delay = min(self.backoff_max, delay * 2)
                failing = True
            else:
                delay, failing = self.backoff_initial, False
                with self._cond:
                    self._cond.notify_all()


def _is_refusal(exc: BaseException) -> bool:
    import grpc

    return isinstance(exc, grpc.RpcError) and exc.code() in (
        grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED)


def _brief(exc: BaseException) -> str:
    import grpc

    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def open_role_pusher(config: Any, repository: Any) -> RolePusher:
    """The pusher an :class:`issuer.config.IssuerConfig` with ``push_mode = "network"`` describes.
    Raises :class:`issuer.config.ConfigError` when its certificate files cannot be read."""
    from issuer.config import ConfigError
    from publisher.client import PublisherClient
    from shellkit.files import read_secret

    try:
        ca = config.revocation_publisher_ca.read_bytes()
        cert = config.revocation_publisher_cert.read_bytes()
        key = read_secret(config.revocation_publisher_key, what="publisher client key")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"revocation: {exc}") from None

    def connect() -> PublisherClient:
        return PublisherClient(config.revocation_publisher, ca_pem=ca, cert_pem=cert, key_pem=key)

    return RolePusher(repository=repository, province=config.province, connect=connect,
                      poll=config.revocation_push_poll)
