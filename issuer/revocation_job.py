"""The issuer's revocation job: publish revocations on a schedule and on demand, push them to the trust repository.

:class:`RevocationPublishJob` runs a :class:`~issuer.revocation_publisher.RevocationPublisher`
in its own thread, never on the event loop:

* **on a schedule**: every ``interval`` (hourly by default), and once at
  start, which catches up on anything revoked while the issuer was down or
  by another process (an operator's tool);
* **on demand**: :meth:`RevocationPublishJob.trigger` is called after every
  RPC that revokes (RevokeCode for one code or a resident's codes,
  RenewCode, which supersedes the old code, IssueCode and IssueCredential,
  which supersede the resident's previous code of that channel, and
  MergeResidents) through the port wrappers of :func:`notify_revocations`
  and the wallet issuer's ``on_revoked``. It only sets a flag: a run
  starts ``settle`` seconds after the first trigger, so a burst of
  revocations becomes one publication, and runs at most once every
  ``min_interval`` seconds however many triggers arrive. A failed run is
  retried after ``min_interval``. At stop, a pending trigger gets one last run.

One run (:meth:`RevocationPublishJob.run_once`), steps marked in the code:

1. the shards whose key has passed ``verify_until`` in the province's
   published key list are retired: their files are deleted, and the
   repository drops them (verifiers drop them on their side at the same
   moment, ``RevocationSet.drop_expired``);
2. the publisher writes each live shard's next snapshot and delta into
   ``directory`` (laid out as TUF target names) when serials were added;
3. ``push_mode = "repository"``: the province's revocation files in
   ``directory`` are reconciled into the national trust repository
   (:func:`push_directory`): each shard's snapshot is listed in the province
   role with its seq, and the newest deltas a verifier would use (their
   chain weighs less than the snapshot) are served unlisted beside it; the
   role is re-signed with the province's TUF role keys when what it lists
   under ``provinces/<code>/revocation/`` differs, and the unlisted deltas
   are made equal to the directory's, so a push that failed is completed by
   the next run; with the online keys
   configured (development, or a single-operator deployment) ``publish()``
   then writes the snapshot and timestamp at once, else the national online
   service does at its next run. ``push_mode = "network"``: the same, into the
   province's working copy of the repository, and the role is then pushed to
   the national trust publisher (:mod:`issuer.role_push`), which publishes it.
   ``push_mode = "directory-only"``: nothing is
   pushed; another tool signs ``directory`` into the repository.

Repository changes run under the same ``flock`` on ``<repo>/.lock`` as
``keys.ceremony`` (the CLI and the KeyAdmin service write the same province
role).

**Compromised keys are not revoked here.** All codes of a compromised key are
cut off through the province key list (``KeyStatus.COMPROMISED``, published
by ``healthcode-keys`` or KeyAdmin ``MarkCompromised``): one small signed file
instead of millions of serials, and it also refuses codes the issuer never
recorded (forged with the stolen key). This job keeps publishing the key's
shard until the key's ``verify_until`` passes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import pathlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from healthcode.revocation import read_header, shard_directory

from .revocation_publisher import (
    DEFAULT_KEEP_DELTAS,
    RevocationPublisher,
    RevocationSource,
    ShardPublication,
)
from .store import open_revocation_source

__all__ = [
    "PUSH_MODES",
    "JobRun",
    "PushResult",
    "RevocationPublishJob",
    "notify_revocations",
    "open_revocation_job",
    "push_directory",
]

log = logging.getLogger("issuer.revocation")

#: ``repository``: sign into the trust repository; ``network``: sign into a working copy and push it to
#: the national trust publisher; ``directory-only``: write files only.
PUSH_MODES = ("repository", "network", "directory-only")



def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- the push


@dataclass(frozen=True)
class PushResult:
    """What one push did to the repository: the province role version, the unlisted deltas, the snapshot/timestamp."""

    added: tuple[str, ...]  # listed target names below provinces/<code>/ (snapshots)
    removed: tuple[str, ...]
    summary: str
    published: str | None  # the snapshot/timestamp summary, when this push published
    unlisted: tuple[str, ...] = ()  # deltas written where the mirror serves them by name
    unlisted_removed: tuple[str, ...] = ()


def _local_files(directory: pathlib.Path, province: str) -> tuple[dict[str, bytes], dict[str, int], dict[str, bytes]]:
    """The province's revocation files, by target path: what to list, and what to serve unlisted.

    Listed (signed in the province role): each shard's snapshot, with its
    ``seq`` (returned apart, for the target's ``custom`` object). Unlisted
    (served by name, outside the metadata): the newest deltas, a contiguous
    chain ending at the snapshot's seq, while the chain weighs less than the
    snapshot (a verifier further behind fetches the snapshot). Deltas need no
    signature of their own: a verifier accepts the state they lead to only if
    it hashes to the listed snapshot (``verifier/revocation_sync.py``), so
    listing them would only make every verifier download one metadata entry
    per delta at every publication (``docs/benchmarks.md``: with 168 listed,
    the province role was 92 % of an hourly-refreshing verifier's transfer). A delta at or after the
    snapshot's seq (the remnant of a run that crashed before its commit point,
    which the next run rewrites) is never served.
    """
    listed: dict[str, bytes] = {}
    seqs: dict[str, int] = {}
    unlisted: dict[str, bytes] = {}
    base = directory / "provinces" / province / "revocation"
    if not base.is_dir():
        return listed, seqs, unlisted
    for shard in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            snapshot = (shard / "snapshot.hcrs").read_bytes()
        except FileNotFoundError:
            continue  # no committed publication yet
        prefix = f"provinces/{province}/revocation/{shard.name}/"
        listed[prefix + "snapshot.hcrs"] = snapshot
        seq = seqs[prefix + "snapshot.hcrs"] = read_header(snapshot).to_seq
        chain = 0
        while seq > 0:  # from the newest delta back, while the chain stays lighter than the snapshot
            seq -= 1
            try:
                data = (shard / f"delta-{seq:010d}.hcrd").read_bytes()
            except FileNotFoundError:
                break
            chain += len(data)
            header = read_header(data)
            if chain >= len(snapshot) or (header.from_seq, header.to_seq) != (seq, seq + 1):
                break
            unlisted[prefix + f"delta-{seq:010d}.hcrd"] = data
    return listed, seqs, unlisted


def push_directory(
    repository: Any,
    province: str,
    directory: str | os.PathLike[str],
    signers: Sequence[Any],
    *,
    now: dt.datetime,
    publish: bool = False,
) -> PushResult | None:
    """Make ``province``'s revocation files in ``repository`` equal to the files in ``directory``.

    ``repository`` is a :class:`keys.trustrepo.TrustRepository`; ``signers``
    a threshold of the province role's keys. Each shard's snapshot is listed
    in the province role with its ``seq`` in the target's ``custom`` object;
    the deltas worth following are served unlisted (:func:`_local_files`).
    Order: new deltas are written first, then the role is signed (so a
    verifier that sees a snapshot finds the deltas that lead to it), then
    deltas no longer served are deleted. Targets under
    ``provinces/<code>/revocation/`` not to be listed (a snapshot of a retired
    shard, deltas listed by an older version) are removed in the same role
    version. Nothing is signed when the role already agrees; returns None
    when nothing changed at all. With ``publish``, the snapshot and timestamp
    follow (the repository needs its online signers).
    """
    directory = pathlib.Path(directory)
    prefix = f"provinces/{province}/"
    local, seqs, serve = _local_files(directory, province)
    with repository.lock():  # <repo>/.lock, held by every writer of the repository (keys.trustrepo)
        role = repository.province_targets(province)
        listed = {} if role is None else {
            path: info for path, info in role.targets.items() if path.startswith(prefix + "revocation/")
        }
        files, custom = {}, {}
        for path, data in local.items():
            info = listed.get(path)
            digest = hashlib.sha256(data).hexdigest()
            want = {"seq": seqs[path]}
            if (info is None or info.length != len(data) or info.hashes.get("sha256") != digest
                    or info.unrecognized_fields.get("custom") != want):
                files[path.removeprefix(prefix)] = data
                custom[path.removeprefix(prefix)] = want
        remove = sorted(path.removeprefix(prefix) for path in listed if path not in local)
        served = repository.unlisted(province, "revocation")  # what the mirror serves unlisted now
        write = {path.removeprefix(prefix): data for path, data in serve.items()
                 if served.get(path.removeprefix(prefix)) != data}
        drop = sorted(name for name in served if prefix + name not in serve)
        if not files and not remove and not write and not drop:
            return None
        if write:
            repository.put_unlisted(province, write)
        summary, published = "province role unchanged", None
        if files or remove:
            change = repository.publish_province_targets(province, files, list(signers), now=now, remove=remove,
                                                         custom=custom)
            summary = change.summary
            published = repository.publish(now=now).summary if publish else None
        if drop:
            repository.put_unlisted(province, {}, remove=drop)
    return PushResult(tuple(sorted(files)), tuple(remove), summary, published,
                      tuple(sorted(write)), tuple(drop))


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class JobRun:
    """What one run did."""

    at: dt.datetime
    publications: tuple[ShardPublication, ...]
    retired: tuple[tuple[str, bytes], ...]
    push: PushResult | None
    seconds: float

    @property
    def added(self) -> int:
        return sum(p.added for p in self.publications)

    def __str__(self) -> str:
        parts = [f"{len(self.publications)} shard(s) published (+{self.added} revoked)"]
        if self.retired:
            parts.append(f"{len(self.retired)} retired")
        if self.push is not None:
            parts.append(f"pushed {len(self.push.added)} file(s), removed {len(self.push.removed)}")
            if self.push.published:
                parts.append(self.push.published)
        return ", ".join(parts) + f" in {self.seconds:.3f} s"


class RevocationPublishJob:
    """Publishes ``province``'s revocations from ``source`` into ``directory`` on a schedule
    and on demand (module docstring); ``keep_deltas`` as :class:`RevocationPublisher`.

    ``repository`` and ``signers`` (the province role's TUF keys) make each
    run push into the trust repository; ``publish_snapshot`` also writes its
    snapshot and timestamp (the repository then holds the online signers).
    ``clock`` gives the ``now`` of a run (aware UTC); ``monotonic`` paces the
    runs. Times are in seconds.
    """

    def __init__(
        self,
        *,
        source: RevocationSource,
        directory: str | os.PathLike[str],
        province: str,
        keep_deltas: int = DEFAULT_KEEP_DELTAS,
        fsync: bool = True,
        repository: Any = None,
        signers: Sequence[Any] = (),
        publish_snapshot: bool = False,
        interval: float = 3600.0,
        min_interval: float = 60.0,
        settle: float = 2.0,
        clock: Callable[[], dt.datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        pusher: Any = None,
    ) -> None:
        if not interval > 0 or min_interval < 0 or settle < 0:
            raise ValueError("interval must be positive; min_interval and settle at least 0")
        if repository is not None and not signers:
            raise ValueError("pushing to the repository needs the province role's signers")
        self.source = source
        self.publisher = RevocationPublisher(source=source, directory=directory, keep_deltas=keep_deltas,
                                             fsync=fsync)
        self.province = province
        self.repository = repository
        self.pusher = pusher  # network mode: an issuer.role_push.RolePusher, triggered after each run
        self._signers = tuple(signers)
        self._publish_snapshot = publish_snapshot
        self.interval, self.min_interval, self.settle = interval, min_interval, settle
        self._clock = clock
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._requested = False
        self._requested_at = 0.0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._runs = 0
        self.failures = 0
        self.last_run: JobRun | None = None
        self.last_error: BaseException | None = None

    # -- one run

    def run_once(self, now: dt.datetime) -> JobRun:
        """Retire, publish, push: one run at ``now``, in the calling thread. Raises on failure."""
        start = time.perf_counter()
        # (1) shards of keys past verify_until
        expired = self._expired_kids(now)
        retired = []
        for kid in sorted(expired):
            if (self.publisher.directory / shard_directory(self.province, kid)).is_dir():
                self.publisher.retire(self.province, kid)
                retired.append((self.province, kid))
        # (2) the next snapshot and delta of every live shard that gained serials
        shards = [(p, k) for p, k in self.source.shards() if p == self.province and k not in expired]
        publications = tuple(self.publisher.publish(shards=shards))
        # (3) into the trust repository
        push = None
        if self.repository is not None:
            push = push_directory(self.repository, self.province, self.publisher.directory, self._signers,
                                  now=now, publish=self._publish_snapshot)
        if self.pusher is not None and push is not None:
            self.pusher.trigger()  # (4) network mode: to the national publisher
        return JobRun(now, publications, tuple(retired), push, time.perf_counter() - start)

    def _expired_kids(self, now: dt.datetime) -> set[bytes]:
        if self.repository is None:
            return set()  # without the key list, retirement is the pushing tool's
        from keys.province_keys import published_key_list

        key_list = published_key_list(self.repository, self.province)
        if key_list is None:
            return set()
        return {key.kid for key in key_list.keys if now > key.verify_until}

    # -- scheduling

    def trigger(self) -> None:
        """Ask for a publication soon. Cheap and thread-safe: call it after every revocation."""
        if self._requested:  # unlocked read: at worst one extra pass through the lock
            return
        with self._cond:
            if not self._requested:
                self._requested = True
                self._requested_at = self._monotonic()
                self._cond.notify_all()

    def start(self) -> None:
        """Start the job's thread (its first run is at once)."""
        if self._thread is not None:
            raise RuntimeError("the revocation job is already started")
        self._thread = threading.Thread(target=self._loop, name="revocation-publisher", daemon=True)
        self._thread.start()
        if self.pusher is not None:
            self.pusher.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread: a run in progress finishes, and a pending trigger gets a last run."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.pusher is not None:  # what it did not push is pushed at the next start
            self.pusher.stop(timeout)

    def wait_for_runs(self, count: int, timeout: float) -> int:
        """Wait until ``count`` runs (successful or not) have finished; return how many have."""
        with self._cond:
            self._cond.wait_for(lambda: self._runs >= count, timeout)
            return self._runs

    @property
    def runs(self) -> int:
        return self._runs

    def _loop(self) -> None:
        last_run = float("-inf")
        next_scheduled = self._monotonic()  # at once: catch up on what happened while down
        while True:
            with self._cond:
                while not self._stopping:
                    now_m = self._monotonic()
                    due = next_scheduled
                    if self._requested:
                        due = min(due, max(self._requested_at + self.settle, last_run + self.min_interval))
                    if now_m >= due:
                        break
                    self._cond.wait(due - now_m)
                if self._stopping and not self._requested:
                    return
                final = self._stopping
                self._requested = False
            self._run()
            last_run = self._monotonic()
            next_scheduled = last_run + self.interval
            if final:
                return

    def _run(self) -> None:
        try:
            run = self.run_once(self._clock())
        except Exception as exc:  # noqa: BLE001 - a failed run is logged and retried, never fatal
            self.failures += 1
            self.last_error = exc
            log.error("revocation publication failed: %s: %s (retried in %.0f s)",
                      type(exc).__name__, exc, self.min_interval)
            with self._cond:
                if not self._requested:
                    self._requested, self._requested_at = True, self._monotonic()
        else:
            self.last_run, self.last_error = run, None
            if run.publications or run.retired or run.push is not None:
                log.info("revocation publication: %s", run)
        with self._cond:
            self._runs += 1
            self._cond.notify_all()


# --------------------------------------------------------------------------- the trigger


class _NotifyingCodes:
    """A :class:`~issuer.service.CodeIssuerPort` that calls ``notify`` after each revoking call
    (an IssueCode that supersedes the resident's previous static code is one)."""

    def __init__(self, inner: Any, notify: Callable[[], None]) -> None:
        self._inner = inner
        self._notify = notify
        # the read paths go straight to the inner issuer, without a proxy frame
        self.get_code = inner.get_code
        self.ref_from_text = inner.ref_from_text

    async def issue_code(self, **kwargs: Any) -> Any:
        code = await self._inner.issue_code(**kwargs)
        if kwargs.get("replace_live"):  # the resident's previous static code may now be revoked (superseded)
            self._notify()  # cheap: one attribute read while a publication is already requested
        return code

    async def revoke_code(self, **kwargs: Any) -> Any:
        code = await self._inner.revoke_code(**kwargs)
        self._notify()
        return code

    async def revoke_resident_codes(self, **kwargs: Any) -> int:
        count = await self._inner.revoke_resident_codes(**kwargs)
        if count:
            self._notify()
        return count

    async def renew_code(self, **kwargs: Any) -> Any:
        code = await self._inner.renew_code(**kwargs)  # the renewed code is revoked as superseded
        self._notify()
        return code

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _NotifyingIndex:
    """A :class:`~issuer.service.ResidentIndexPort` that calls ``notify`` after a merge revoked codes."""

    def __init__(self, inner: Any, notify: Callable[[], None]) -> None:
        self._inner = inner
        self._notify = notify
        self.register_resident = inner.register_resident
        self.find_resident = inner.find_resident

    async def merge_residents(self, **kwargs: Any) -> int:
        count = await self._inner.merge_residents(**kwargs)
        if count:
            self._notify()
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def notify_revocations(index: Any, codes: Any, notify: Callable[[], None]) -> tuple[Any, Any]:
    """The two domain ports, calling ``notify`` (e.g. :meth:`RevocationPublishJob.trigger`)
    after each call that revoked codes, once the revocation is durable."""
    return _NotifyingIndex(index, notify), _NotifyingCodes(codes, notify)


# --------------------------------------------------------------------------- wiring


def open_revocation_job(
    config: Any,
    *,
    tuf_passphrase: bytes | None,
    online_passphrase: bytes | None,
    clock: Callable[[], dt.datetime] = _utc_now,
) -> RevocationPublishJob:
    """The job an :class:`issuer.config.IssuerConfig` with ``revocation_directory`` describes.

    In ``repository`` mode it pushes into ``trust_repo`` with the province's TUF
    role keys from ``tuf_keys`` (every key in that holder directory) and, with
    ``online_keys``, publishes the snapshot and timestamp too (the
    ``[key_admin]`` settings). Raises :class:`issuer.config.ConfigError`.
    """
    from issuer.config import ConfigError

    repository, signers, online = None, [], None
    if config.revocation_push_mode in ("repository", "network"):
        from keys.ceremony import open_repository
        from keys.errors import KeyManagementError, TrustRepoError
        from keys.signers import RoleKeyFile, load_role_signer, role_key_names
        from keys.trustrepo_files import province_role

        try:
            names = role_key_names(config.tuf_keys)
            if not names:
                raise ConfigError(f"revocation: no TUF role keys in {config.tuf_keys}")
            if tuf_passphrase is None:
                raise ConfigError("revocation: the TUF role keys need key_admin.tuf_passphrase_env")
            signers = [load_role_signer(RoleKeyFile(config.tuf_keys, name), tuf_passphrase) for name in names]
            if config.online_keys is not None and config.revocation_push_mode == "repository":
                if online_passphrase is None:
                    raise ConfigError("revocation: the online keys need key_admin.online_passphrase_env")
                online = ([load_role_signer(RoleKeyFile(config.online_keys, "snapshot"), online_passphrase)],
                          [load_role_signer(RoleKeyFile(config.online_keys, "timestamp"), online_passphrase)])
            repository = open_repository(config.trust_repo, online=online)
            # refuse at start, not at the first revocation, keys that cannot sign the province role
            delegation = repository.targets().get_delegated_role(province_role(config.province))
            usable = {s.public_key.keyid for s in signers} & set(delegation.keyids)
            if len(usable) < delegation.threshold:
                raise ConfigError(f"revocation: {len(usable)} of the TUF keys in {config.tuf_keys} belong to "
                                  f"{province_role(config.province)}, which needs {delegation.threshold}")
        except (KeyManagementError, TrustRepoError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"revocation: {exc}") from None
    pusher = None
    if config.revocation_push_mode == "network":
        from issuer.role_push import open_role_pusher

        pusher = open_role_pusher(config, repository)
    return RevocationPublishJob(
        pusher=pusher,
        source=open_revocation_source(config.database),
        directory=config.revocation_directory,
        keep_deltas=config.revocation_keep_deltas,
        province=config.province,
        repository=repository,
        signers=signers,
        publish_snapshot=online is not None,
        interval=config.revocation_interval,
        min_interval=config.revocation_min_interval,
        clock=clock,
    )
