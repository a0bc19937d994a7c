"""Pushes staged durably, then published: the publisher's state beside the trust repository.

A push that passed :func:`publisher.checks.check_push` is **staged** before it
is acknowledged: one file ``<state>/staged/<code>-<version>.push`` written
atomically and fsynced (:meth:`PublisherStore.stage`). :meth:`PublisherStore.publish_staged`
later, under the repository's lock (``<repo>/.lock``, shared with the
ceremonies), steps marked in the code:

1. writes each staged push into the repository, oldest first: the files it
   carries (content-addressed, never rewritten), the province's unlisted
   revocation files (made equal to the push's set), then the role metadata's
   exact bytes as ``metadata/<V>.province-<code>.json``;
2. signs one snapshot and timestamp over all of them
   (:meth:`keys.trustrepo.TrustRepository.publish`), the commit point;
3. records each province's publication in ``<state>/ledger.json`` and deletes
   the staged files.

A staged push that cannot be read or written (a path the writer refuses, staged
by a publisher older than its checks; a damaged file) is **quarantined**: moved
to ``<state>/quarantine/``, logged at ERROR with its province and why, and the
rest is published; so one bad push never stops the other provinces' pushes nor
the timestamp refresh. The province may push again (its accepted version falls
back to the one published); an operator inspects the quarantined file.

Every step can be repeated: a publisher killed anywhere redoes (1)-(3) for what
is still staged when it starts again, so an acknowledged push is always
published. The state directory holds only public data (signed metadata and
revocation files) but is not for mirrors: keep it outside the repository.

One publisher process per repository and state directory.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import pathlib
import re
import threading
from dataclasses import dataclass

from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, Snapshot, TargetFile, Targets, Timestamp

from healthcode.keylist import parse_key_list
from keys.errors import TrustRepoError
from keys.trustrepo import TrustRepository
from keys.trustrepo_files import KEY_LIST_NAME, hashed_path, highest_key_list_serial, province_role, write_repo_file
from shellkit.files import fsync_directory, write_file_atomically
from shellkit.times import iso_utc

from .checks import (
    DEFAULT_LIMITS,
    DEFAULT_MIN_VALIDITY,
    Accepted,
    CheckedPush,
    Limits,
    check_push,
    province_file,
    role_digest,
)
from .retention import Pruned, prune

__all__ = ["PublisherStore", "ProvinceState", "Publication"]

log = logging.getLogger("publisher.store")

_STAGED = re.compile(r"([0-9]{2})-([0-9]{12})\.push")
_MAGIC = b"HCPUSH1\n"
#: What reading a damaged staged file raises.
_UNREADABLE = (ValueError, KeyError, TypeError, RepositoryError)


@dataclass(frozen=True)
class ProvinceState:
    """One province as accepted and as published (times aware UTC, None when unknown)."""

    province: str
    published_version: int
    published_at: _dt.datetime | None
    accepted_version: int
    accepted_at: _dt.datetime | None
    role_expires: _dt.datetime | None


@dataclass(frozen=True)
class Publication:
    """What one :meth:`PublisherStore.publish_staged` did."""

    pushes: int  # staged pushes written
    summary: str  # the snapshot/timestamp summary
    provinces: tuple[str, ...]  # provinces whose published role changed
    quarantined: tuple[str, ...] = ()  # staged files moved aside, unwritable (module docstring)


def _parse_time(text: str | None) -> _dt.datetime | None:
    return None if text is None else _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class PublisherStore:
    """The staged pushes and publication ledger in ``state_dir`` for the repository ``repo``.

    ``repo`` must hold the online (snapshot, timestamp) signers; ``min_validity``
    is how long a pushed role must still be valid (:func:`publisher.checks.check_push`).
    Thread-safe: :meth:`accept` and :meth:`publish_staged` may run in different threads.
    """

    def __init__(self, repo: TrustRepository, state_dir: str | os.PathLike[str], *,
                 limits: Limits = DEFAULT_LIMITS, min_validity: _dt.timedelta = DEFAULT_MIN_VALIDITY) -> None:
        self.repo = repo
        self.state_dir = pathlib.Path(state_dir)
        self.limits = limits
        self.min_validity = min_validity
        self._staged_dir = self.state_dir / "staged"
        self._quarantine_dir = self.state_dir / "quarantine"
        self._staged_dir.mkdir(parents=True, exist_ok=True)
        self._ledger_path = self.state_dir / "ledger.json"
        self._lock = threading.RLock()
        self._accepted: dict[str, Accepted] = {}
        self._accepted_at: dict[str, _dt.datetime] = {}
        self._serials: dict[str, int] = {}
        self._pending: set[tuple[str, str]] = set()  # (target path, sha256) carried by staged pushes
        ledger = json.loads(self._ledger_path.read_bytes()) if self._ledger_path.exists() else {}
        self._published_at: dict[str, str] = dict(ledger.get("published_at", {}))
        self._published_version: dict[str, int] = dict(ledger.get("published_version", {}))
        self._accepted_at_text: dict[str, str] = dict(ledger.get("accepted_at", {}))
        self.last_publication: _dt.datetime | None = _parse_time(ledger.get("last_publication"))
        self._load()
        self._seed_ledger()

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        """What the repository holds and what is staged: the accepted role and key-list serial per province."""
        for code in self.repo.provinces():
            self._load_province(code)
        for path in self.staged():
            try:
                push, at = self._read_staged(path)
            except _UNREADABLE as exc:  # a damaged file: not to stop the start
                self._quarantine(path, path.name[:2], f"unreadable: {exc}")
                continue
            self._note_staged(push, at)

    def _load_province(self, code: str) -> None:
        """The accepted role and key-list serial of ``code`` as the repository holds them."""
        self._accepted.pop(code, None)
        self._accepted_at.pop(code, None)
        self._serials.pop(code, None)
        targets = self.repo.province_targets(code)
        if targets is not None:
            data = (self.repo.directory / "metadata" / f"{targets.version}.{province_role(code)}.json").read_bytes()
            self._accepted[code] = Accepted(targets.version, role_digest(data))
            accepted_at = _parse_time(self._accepted_at_text.get(code))
            if accepted_at is not None:
                self._accepted_at[code] = accepted_at
        serial = highest_key_list_serial(self.repo.directory / "targets", code)
        if serial is not None:
            self._serials[code] = serial

    def _seed_ledger(self) -> None:
        """Provinces published before this ledger existed (by the ``healthcode-keys publish`` cron, or a
        lost state directory): their publication time is taken from the role file's modification time."""
        for code, version in self._published_versions().items():
            if code not in self._published_version:
                path = self.repo.directory / "metadata" / f"{version}.{province_role(code)}.json"
                moment = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc)
                self._published_version[code] = version
                self._published_at[code] = iso_utc(moment)

    def _note_staged(self, push: CheckedPush, at: _dt.datetime) -> None:
        code = push.province
        current = self._accepted.get(code)
        if current is None or push.version > current.version:
            self._accepted[code] = Accepted(push.version, role_digest(push.role_bytes))
            self._accepted_at[code] = at
        for path, data in push.targets.items():
            self._pending.add((path, hashlib.sha256(data).hexdigest()))
        key_list = push.targets.get(f"provinces/{code}/{KEY_LIST_NAME}")
        if key_list is not None:
            serial = parse_key_list(key_list, province=code).serial
            self._serials[code] = max(serial, self._serials.get(code, serial))

    # ------------------------------------------------------------------ accepting

    def accept(
        self,
        *,
        caller_province: str,
        province: str,
        role_bytes: bytes,
        targets: list[tuple[str, bytes]],
        unlisted: list[tuple[str, bytes]],
        now: _dt.datetime,
    ) -> tuple[CheckedPush, _dt.datetime]:
        """Check a push (:func:`publisher.checks.check_push`) and stage it durably; return it and
        when it was first accepted. Raises :class:`publisher.errors.PushRefused` (nothing stored)."""
        with self._lock:
            code = province
            push = check_push(
                caller_province=caller_province, province=province, role_bytes=role_bytes, targets=targets,
                unlisted=unlisted, national=self.repo.targets(), accepted=self._accepted.get(code),
                key_list_serial=self._serials.get(code), held=self._held, was_accepted=self._was_accepted,
                now=now, limits=self.limits, min_validity=self.min_validity)
            if push.already_accepted:
                return push, self._accepted_at.get(push.province, now)
            self._stage(push, now)
            self._note_staged(push, now)
            self._accepted_at_text[push.province] = iso_utc(now)
            return push, now

    def _held(self, info: TargetFile) -> bool:
        if (info.path, info.hashes.get("sha256")) in self._pending:
            return True
        path = self.repo.directory / "targets" / hashed_path(info)
        try:
            return path.stat().st_size == info.length
        except FileNotFoundError:
            return False

    def _was_accepted(self, version: int, role_bytes: bytes) -> bool:
        for path in (self.repo.directory / "metadata").glob(f"{version}.province-*.json"):
            if path.read_bytes() == role_bytes:
                return True
        for staged in self.staged():
            try:
                if self._read_staged(staged)[0].role_bytes == role_bytes:
                    return True
            except _UNREADABLE:  # damaged: quarantined at the next publication
                continue
        return False

    def _stage(self, push: CheckedPush, now: _dt.datetime) -> None:
        header = {
            "province": push.province,
            "version": push.version,
            "accepted_at": iso_utc(now),
            "role": len(push.role_bytes),
            "targets": [[path, len(data)] for path, data in push.targets.items()],
            "unlisted": [[path, len(data)] for path, data in push.unlisted.items()],
        }
        body = [_MAGIC, json.dumps(header, separators=(",", ":")).encode(), b"\n", push.role_bytes,
                *push.targets.values(), *push.unlisted.values()]
        path = self._staged_dir / f"{push.province}-{push.version:012d}.push"
        write_file_atomically(path, b"".join(body))  # fsync of the file and the directory: then acknowledged

    def staged(self) -> list[pathlib.Path]:
        """The staged pushes, oldest first (by province, then version)."""
        return sorted(p for p in self._staged_dir.iterdir() if _STAGED.fullmatch(p.name))

    def _read_staged(self, path: pathlib.Path) -> tuple[CheckedPush, _dt.datetime]:
        data = path.read_bytes()
        if not data.startswith(_MAGIC):
            raise ValueError(f"{path}: not a staged push")
        end = data.index(b"\n", len(_MAGIC))
        header = json.loads(data[len(_MAGIC):end])
        offset = end + 1
        role_bytes = data[offset:offset + header["role"]]
        offset += header["role"]
        files: dict[str, dict[str, bytes]] = {"targets": {}, "unlisted": {}}
        for kind in ("targets", "unlisted"):
            for name, length in header[kind]:
                files[kind][name] = data[offset:offset + length]
                offset += length
        if offset != len(data):
            raise ValueError(f"{path}: {len(data)} bytes, the header describes {offset}")
        role = Metadata[Targets].from_bytes(role_bytes).signed
        push = CheckedPush(header["province"], header["version"], role_bytes, role, files["targets"],
                           files["unlisted"], already_accepted=False)
        return push, _parse_time(header["accepted_at"]) or _dt.datetime.now(_dt.timezone.utc)

    # ------------------------------------------------------------------ publishing

    def publish_staged(self, *, now: _dt.datetime, force: bool = False) -> Publication | None:
        """Write every staged push into the repository and publish them in one snapshot and timestamp
        (module docstring); with nothing staged, only when ``force`` (a timestamp refresh). Returns
        None when nothing was staged and not ``force``."""
        with self._lock:
            staged = self.staged()
            if not staged and not force:
                return None
            quarantined: list[str] = []
            written: list[pathlib.Path] = []
            with self.repo.lock():
                # (1) into the repository, oldest first; what cannot be written is moved aside
                for path in staged:
                    try:
                        push = self._read_staged(path)[0]
                    except _UNREADABLE as exc:
                        self._quarantine(path, path.name[:2], f"unreadable: {exc}")
                        quarantined.append(path.name)
                        continue
                    try:
                        self._write(push)
                    except (TrustRepoError, ValueError) as exc:  # not OSError: a full disk is retried
                        self._quarantine(path, push.province, f"cannot be written: {exc}")
                        quarantined.append(path.name)
                        continue
                    written.append(path)
                for code in sorted({name[:2] for name in quarantined}):
                    self._load_province(code)  # its accepted version falls back to what the repository holds
                # (2) the commit point
                change = self.repo.publish(now=now)
            # (3) the ledger, then the staged files go
            changed = []
            published = self._published_versions()
            for code, version in published.items():
                if self._published_version.get(code) != version:
                    self._published_version[code] = version
                    self._published_at[code] = iso_utc(now)
                    changed.append(code)
            self.last_publication = now
            self._write_ledger()
            for path in written:
                path.unlink()
            if staged:
                fsync_directory(self._staged_dir)
            self._pending.clear()
            for warning in change.warnings:
                log.warning("publication: %s", warning, extra={"event": "publication_warning"})
            return Publication(len(written), change.summary, tuple(sorted(changed)), tuple(quarantined))

    def _quarantine(self, path: pathlib.Path, code: str, why: str) -> None:
        """Move the staged ``path`` to ``<state>/quarantine/`` and log it (module docstring)."""
        self._quarantine_dir.mkdir(exist_ok=True)
        os.replace(path, self._quarantine_dir / path.name)
        fsync_directory(self._quarantine_dir)
        fsync_directory(self._staged_dir)
        log.error("province-%s: staged push %s quarantined in %s: %s", code, path.name, self._quarantine_dir,
                  why[:300], extra={"event": "push_quarantined", "province": code, "reason": "quarantined"})

    def _write(self, push: CheckedPush) -> None:
        """Write ``push`` into the repository (step 1). Raises :class:`TrustRepoError` before writing anything
        when a path is not one the repository takes (a push staged before the checks refused it)."""
        code, role = push.province, push.role
        bad = sorted(p for p in (*push.targets, *role.targets, *push.unlisted) if not province_file(code, p))
        if bad:
            raise TrustRepoError(f"province-{code} v{push.version}: paths the repository does not take: "
                                 f"{', '.join(repr(p[:120]) for p in bad[:3])}")
        for path, data in push.targets.items():
            target = self.repo.directory / "targets" / hashed_path(role.targets[path])
            if not target.exists():
                write_repo_file(target, data)
        prefix = f"provinces/{code}/"
        want = {path.removeprefix(prefix): data for path, data in push.unlisted.items()}
        served = self.repo.unlisted(code, "revocation")
        write = {name: data for name, data in want.items() if served.get(name) != data}
        drop = sorted(name for name in served if name not in want)
        if write or drop:
            self.repo.put_unlisted(code, write, remove=drop)
        role_path = self.repo.directory / "metadata" / f"{push.version}.{province_role(code)}.json"
        if role_path.exists():
            if role_path.read_bytes() != push.role_bytes:  # another writer (a ceremony) took the version
                log.error("province-%s v%d: the repository holds other metadata under this version; the push "
                          "is dropped", code, push.version,
                          extra={"event": "push_conflict", "province": code, "reason": "conflict"})
            return
        write_repo_file(role_path, push.role_bytes)

    def _published_versions(self) -> dict[str, int]:
        snapshot = self.repo._published_snapshot()  # the repository's own reading of what is published
        meta = snapshot.signed.meta if snapshot is not None else {}
        return {name.removeprefix("province-").removesuffix(".json"): info.version
                for name, info in meta.items() if name.startswith("province-")}

    def _write_ledger(self) -> None:
        ledger = {
            "published_version": self._published_version,
            "published_at": self._published_at,
            "accepted_at": self._accepted_at_text,
            "last_publication": iso_utc(self.last_publication) if self.last_publication else None,
        }
        write_file_atomically(self._ledger_path, json.dumps(ledger, indent=1, sort_keys=True).encode(), mode=0o644)

    # ------------------------------------------------------------------ status

    def provinces(self) -> list[ProvinceState]:
        """Every delegated province: its published and accepted role versions and times."""
        with self._lock:
            published = self._published_versions()
            snapshot = self.repo._published_snapshot()
            result = []
            for code in sorted(self.repo.provinces()):
                version = published.get(code, 0)
                expires = None
                if version and snapshot is not None:
                    data = (self.repo.directory / "metadata" / f"{version}.{province_role(code)}.json").read_bytes()
                    expires = Metadata[Targets].from_bytes(data).signed.expires
                accepted = self._accepted.get(code)
                result.append(ProvinceState(
                    province=code, published_version=version,
                    published_at=_parse_time(self._published_at.get(code)) if version else None,
                    accepted_version=accepted.version if accepted else 0,
                    accepted_at=self._accepted_at.get(code), role_expires=expires))
            return result

    def prune(self, *, now: _dt.datetime, retention: _dt.timedelta) -> Pruned:
        """Delete old snapshots, role versions and unlisted-by-any-role files (:mod:`publisher.retention`)."""
        with self._lock, self.repo.lock():
            return prune(self.repo, now=now, retention=retention)

    def published_snapshot(self) -> Snapshot | None:
        """The snapshot the published timestamp names."""
        snapshot = self.repo._published_snapshot()
        return snapshot.signed if snapshot is not None else None

    def timestamp(self) -> Timestamp:
        """The published timestamp."""
        return Metadata[Timestamp].from_bytes((self.repo.directory / "metadata" / "timestamp.json").read_bytes()).signed
