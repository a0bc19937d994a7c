"""The national trust repository: TUF metadata in a plain directory, on python-tuf's Metadata API.

Every hospital verifier learns each province's signing keys (and later its
revocation data) from this repository through ``verifier/trustsync.py``. The
directory is all a mirror needs: any static HTTP server, CDN or USB stick can
serve it, because snapshots are consistent and only ``timestamp.json`` is
ever rewritten in place::

    <repo>/metadata/<V>.root.json                  root, every version kept (clients walk N -> N+1)
    <repo>/metadata/<V>.targets.json               national targets: the province delegations
    <repo>/metadata/<V>.province-<code>.json       a province's own targets role
    <repo>/metadata/<V>.snapshot.json              versions of all targets roles
    <repo>/metadata/timestamp.json                 the one file changed in place
    <repo>/targets/provinces/<code>/<SHA256>.keys.json
    <repo>/targets/provinces/<code>/revocation/<SHA256>.<name>   (revocation issue)

Roles, who signs them, and default expiry (:class:`RepoConfig`):

==================  =====================================  ===============
role                keys                                   expiry
==================  =====================================  ===============
``root``            national, offline, threshold (3 of 5)  365 days
``targets``         national, offline, threshold (3 of 5)  180 days
``province-<code>`` the province's own, threshold (2 of 3)  30 days
``snapshot``        national online key                    7 days
``timestamp``       national online key                    1 day
==================  =====================================  ===============

``targets`` delegates ``provinces/<code>/...`` (up to three path levels) to
``province-<code>`` as a *terminating* delegation: a province signs its own
key list and revocation files, and can sign nothing outside its own prefix.

Offline roles write a new version as soon as they change; clients see it
only after :meth:`TrustRepository.publish` (run by the online service) writes
the snapshot and timestamp that name it. Every operation takes ``now`` and
returns a :class:`Change` that says what was written. Nothing is written that
a client would reject for lack of signatures: every new metadata version is
checked against its delegator's threshold first.

Signers are any ``securesystemslib.signer.Signer`` (``CryptoSigner`` over
Ed25519 or ECDSA keys in tests; file or HSM signers from the key stores).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from healthcode.errors import InvalidClaims
from healthcode.keylist import InvalidKeyList, KeyList, parse_key_list
from healthcode.model import parse_province
from keys.errors import TrustRepoError
from shellkit.files import file_lock, write_file_atomically
from shellkit.times import iso_utc

__all__ = [
    "RepoConfig",
    "Change",
    "TrustRepository",
    "province_role",
    "province_target_path",
    "KEY_LIST_NAME",
    "PROVINCE_PATH_PATTERNS",
]

_UTC = _dt.timezone.utc
_DAY = _dt.timedelta(days=1)
#: How a listed target is stored (consistent snapshots): ``<SHA256>.<name>``.
_HASHED_NAME = re.compile(r"[0-9a-f]{64}\.")

#: The name of a province's key list below ``provinces/<code>/``.
KEY_LIST_NAME = "keys.json"
#: What ``targets`` delegates to ``province-<code>``: up to three path levels below the
#: province, e.g. ``keys.json`` and ``revocation/<kid>/full-000012.bin``. TUF's
#: ``fnmatch`` patterns match one path segment per ``*``.
PROVINCE_PATH_PATTERNS = ("provinces/{code}/*", "provinces/{code}/*/*", "provinces/{code}/*/*/*")
_NAME_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_VERSIONED = re.compile(r"([1-9][0-9]{0,17})\.(.+)\.json")
_TOP_LEVEL = ("root", "targets", "snapshot", "timestamp")


@dataclass(frozen=True)
class RepoConfig:
    """Expiry of each role's metadata, counted from the ``now`` of the operation that signs it."""

    root_expiry: _dt.timedelta = 365 * _DAY
    targets_expiry: _dt.timedelta = 180 * _DAY
    province_expiry: _dt.timedelta = 30 * _DAY
    snapshot_expiry: _dt.timedelta = 7 * _DAY
    timestamp_expiry: _dt.timedelta = 1 * _DAY


@dataclass(frozen=True)
class Change:
    """What an operation did: one summary line, the files it wrote, and warnings."""

    summary: str
    written: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [self.summary]
        lines += [f"  wrote {path}" for path in self.written]
        lines += [f"  warning: {text}" for text in self.warnings]
        return "\n".join(lines)


def province_role(code: str) -> str:
    """The TUF role name of a province: ``province-33``."""
    return f"province-{_province(code)}"


def province_target_path(code: str, name: str) -> str:
    """The target path of a province file: ``provinces/33/keys.json``.

    ``name`` is relative to the province: one to three ``/``-separated segments
    of letters, digits, ``.``, ``_`` and ``-``, none starting with a dot.
    """
    segments = name.split("/") if isinstance(name, str) else []
    if not 1 <= len(segments) <= 3 or not all(_NAME_SEGMENT.fullmatch(s) for s in segments):
        raise TrustRepoError(
            f"bad target name {name!r}: 1 to 3 segments of [A-Za-z0-9._-], none starting with '.'"
        )
    return f"provinces/{_province(code)}/{name}"


class TrustRepository:
    """The national trust repository in ``directory``.

    ``snapshot_signers`` and ``timestamp_signers`` are the online keys, used by
    :meth:`publish` and :meth:`refresh_timestamp`; offline signers are passed to
    each operation that needs them.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        snapshot_signers: Sequence[Signer] = (),
        timestamp_signers: Sequence[Signer] = (),
        config: RepoConfig = RepoConfig(),
    ) -> None:
        self.directory = Path(directory)
        self.config = config
        self._metadata = self.directory / "metadata"
        self._targets = self.directory / "targets"
        self._snapshot_signers = tuple(snapshot_signers)
        self._timestamp_signers = tuple(timestamp_signers)
        if not (self._metadata / "1.root.json").is_file():
            raise TrustRepoError(f"{self.directory} is not a trust repository (no metadata/1.root.json)")

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The exclusive advisory lock on ``<repo>/.lock`` that every writer of this repository
        holds for its whole change (the ceremonies, KeyAdmin, the issuer's revocation push).
        Readers need none: files are written atomically and never rewritten, but for
        ``timestamp.json``, which is replaced atomically."""
        return file_lock(self.directory / ".lock")

    # ------------------------------------------------------------------ creation

    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        *,
        root_signers: Sequence[Signer],
        root_threshold: int,
        targets_signers: Sequence[Signer],
        targets_threshold: int,
        snapshot_signers: Sequence[Signer],
        timestamp_signers: Sequence[Signer],
        now: _dt.datetime,
        config: RepoConfig = RepoConfig(),
    ) -> tuple["TrustRepository", Change]:
        """Create a repository: root v1, targets v1 (no provinces yet), snapshot v1, timestamp v1.

        Every root and targets signer signs its v1 (a key ceremony has them all in
        the room); the thresholds apply from then on. Online roles need all their
        signers (threshold = number of online keys).
        """
        now = _utc(now)
        directory = Path(directory)
        if (directory / "metadata").exists():
            raise TrustRepoError(f"{directory}/metadata already exists")
        root = Root(expires=now + config.root_expiry, consistent_snapshot=True)
        for role, signers, threshold in (
            ("root", root_signers, root_threshold),
            ("targets", targets_signers, targets_threshold),
            ("snapshot", snapshot_signers, len(snapshot_signers)),
            ("timestamp", timestamp_signers, len(timestamp_signers)),
        ):
            keys = _public_keys(signers)
            _check_threshold(role, threshold, len(keys))
            for key in keys:
                root.add_key(key, role)
            root.roles[role].threshold = threshold
        root_md = Metadata(root)
        _sign(root_md, root_signers, root, "root")
        targets_md = Metadata(
            Targets(expires=now + config.targets_expiry, delegations=Delegations(keys={}, roles={}))
        )
        _sign(targets_md, targets_signers, root, "targets")
        (directory / "metadata").mkdir(parents=True)
        (directory / "targets").mkdir(exist_ok=True)
        _write(directory / "metadata" / "1.root.json", root_md.to_bytes())
        _write(directory / "metadata" / "1.targets.json", targets_md.to_bytes())
        repo = cls(
            directory,
            snapshot_signers=snapshot_signers,
            timestamp_signers=timestamp_signers,
            config=config,
        )
        published = repo.publish(now=now)
        change = Change(
            f"initialised: root v1 ({root_threshold} of {len(root_signers)}), "
            f"targets v1 ({targets_threshold} of {len(targets_signers)}), {published.summary}",
            ("metadata/1.root.json", "metadata/1.targets.json", *published.written),
            published.warnings,
        )
        return repo, change

    # ------------------------------------------------------------------ reading

    def root_bytes(self, version: int | None = None) -> bytes:
        """A root version's exact bytes (the newest by default); v1 is a verifier's bootstrap."""
        return self._read(f"{version or self._versions()['root']}.root.json")

    def root(self) -> Root:
        """The newest root."""
        return self._newest("root").signed

    def targets(self) -> Targets:
        """The newest national targets (possibly not yet published)."""
        return self._newest("targets").signed

    def provinces(self) -> tuple[str, ...]:
        """Codes of the provinces the newest national targets delegates to, in order."""
        delegations = self.targets().delegations
        roles = delegations.roles if delegations is not None and delegations.roles else {}
        return tuple(name.removeprefix("province-") for name in roles if name.startswith("province-"))

    def province_targets(self, code: str) -> Targets | None:
        """The newest metadata of ``province-<code>``, if the province ever signed one."""
        role = province_role(code)
        return self._newest(role).signed if role in self._versions() else None

    def target_bytes(self, path: str, targets: Targets | None = None) -> bytes:
        """The bytes of target ``path`` as listed by ``targets`` (its province's newest role by default)."""
        if targets is None:
            code = path.split("/")[1] if path.startswith("provinces/") else ""
            targets = self.province_targets(code)
        info = targets.targets.get(path) if targets is not None else None
        if info is None:
            raise TrustRepoError(f"no target {path}")
        return (self._targets / _hashed_path(info)).read_bytes()

    # ------------------------------------------------------------------ national targets

    def add_province(
        self,
        code: str,
        keys: Sequence[Key | Signer],
        threshold: int,
        *,
        targets_signers: Sequence[Signer],
        now: _dt.datetime,
        province_signers: Sequence[Signer] | None = None,
    ) -> Change:
        """Delegate ``provinces/<code>/...`` to a new role ``province-<code>``.

        ``keys`` are the province's public keys (or its signers). With
        ``province_signers`` the province also signs an empty first version of
        its role at once, so verifiers see the province (with no keys) from the
        next publish instead of failing to find its metadata.
        """
        now = _utc(now)
        code = _province(code)
        role = province_role(code)
        md = self._next_version("targets", now + self.config.targets_expiry)
        delegations = md.signed.delegations
        if delegations is None:
            delegations = md.signed.delegations = Delegations(keys={}, roles={})
        if delegations.roles is None:
            raise TrustRepoError("national targets uses succinct delegations; not supported")
        if role in delegations.roles:
            raise TrustRepoError(f"province {code} is already delegated (use rekey_province)")
        public = _public_keys(keys)
        _check_threshold(role, threshold, len(public))
        delegations.roles[role] = DelegatedRole(
            name=role,
            keyids=[],
            threshold=threshold,
            terminating=True,
            paths=[pattern.format(code=code) for pattern in PROVINCE_PATH_PATTERNS],
        )
        for key in public:
            md.signed.add_key(key, role)
        _sign(md, targets_signers, self.root(), "targets")
        written = [self._store_metadata("targets", md)]
        summary = (
            f"targets v{md.signed.version}: delegated provinces/{code}/ to {role} "
            f"({threshold} of {len(public)} keys)"
        )
        if province_signers is not None:
            role_md = self._province_version(code, md.signed, {}, now, keep_targets=False)
            _sign(role_md, province_signers, md.signed, role)
            written.append(self._store_metadata(role, role_md))
            summary += f"; {role} v{role_md.signed.version} (empty) signed"
        return Change(summary + "; publish() makes it visible", tuple(written))

    def rekey_province(
        self,
        code: str,
        keys: Sequence[Key | Signer],
        threshold: int,
        *,
        targets_signers: Sequence[Signer],
        now: _dt.datetime,
        province_signers: Sequence[Signer] | None = None,
    ) -> Change:
        """Replace the TUF keys of ``province-<code>`` (cut off a lost or compromised key).

        Metadata signed by the old keys stops verifying at once, so the province
        must re-sign with the new keys: pass ``province_signers`` to re-sign its
        newest content now (review it first: a compromised key may have signed
        it), or call :meth:`publish_province_targets` with the new signers.
        Until then verifiers keep the province's last good key list.
        """
        now = _utc(now)
        code = _province(code)
        role = province_role(code)
        md = self._next_version("targets", now + self.config.targets_expiry)
        delegation = _delegation(md.signed, role)
        public = _public_keys(keys)
        _check_threshold(role, threshold, len(public))
        old = list(delegation.keyids)
        for keyid in old:
            md.signed.revoke_key(keyid, role)
        for key in public:
            md.signed.add_key(key, role)
        delegation.threshold = threshold
        _sign(md, targets_signers, self.root(), "targets")
        written = [self._store_metadata("targets", md)]
        removed = sorted(set(old) - set(delegation.keyids))
        summary = (
            f"targets v{md.signed.version}: {role} now {threshold} of {len(public)} keys "
            f"(removed {', '.join(k[:12] for k in removed) or 'none'})"
        )
        warnings: tuple[str, ...] = ()
        if province_signers is not None:
            role_md = self._province_version(code, md.signed, {}, now)
            _sign(role_md, province_signers, md.signed, role)
            written.append(self._store_metadata(role, role_md))
            summary += (
                f"; {role} v{role_md.signed.version} re-signed with the new keys "
                f"({len(role_md.signed.targets)} files kept)"
            )
        else:
            warnings = (f"{role} must be re-signed with the new keys before verifiers accept it",)
        return Change(summary + "; publish() makes it visible", tuple(written), warnings)

    def remove_province(
        self, code: str, *, targets_signers: Sequence[Signer], now: _dt.datetime
    ) -> Change:
        """Remove the delegation of ``province-<code>``: after the next publish and
        refresh, verifiers drop every key of the province (its codes answer
        ``unknown_key``). The province's old metadata stays listed in the snapshot,
        because TUF clients refuse a snapshot that drops a role (rollback rule).
        """
        now = _utc(now)
        code = _province(code)
        role = province_role(code)
        md = self._next_version("targets", now + self.config.targets_expiry)
        delegation = _delegation(md.signed, role)
        for keyid in list(delegation.keyids):
            md.signed.revoke_key(keyid, role)
        del md.signed.delegations.roles[role]
        _sign(md, targets_signers, self.root(), "targets")
        written = self._store_metadata("targets", md)
        return Change(
            f"targets v{md.signed.version}: removed the delegation to {role}; "
            "publish() makes verifiers drop its keys",
            (written,),
        )

    # ------------------------------------------------------------------ province roles

    def publish_province_targets(
        self,
        code: str,
        files: Mapping[str, bytes],
        signers: Sequence[Signer],
        *,
        now: _dt.datetime,
        remove: Iterable[str] = (),
        custom: Mapping[str, Mapping[str, object]] | None = None,
    ) -> Change:
        """Sign a new version of ``province-<code>`` that adds or replaces ``files``.

        ``files`` maps names below ``provinces/<code>/`` (``"keys.json"``,
        ``"revocation/full-000012.bin"``...) to their bytes; ``remove`` names
        files to drop (e.g. superseded revocation snapshots). Other files stay.
        ``custom`` gives some of ``files`` a TUF ``custom`` object, signed with
        the role (a revocation snapshot's ``seq``).
        With no files at all this just re-signs the role with a fresh expiry,
        which a province must do within ``province_expiry``.

        A ``keys.json`` must parse as the province's key list
        (:func:`healthcode.keylist.parse_key_list`) with a serial higher than
        any key list the province published before. The target files are
        written under their SHA-256 (``targets/provinces/33/<SHA256>.keys.json``)
        and never overwritten. :meth:`publish` makes the new version visible.
        """
        now = _utc(now)
        code = _province(code)
        role = province_role(code)
        national = self.targets()
        delegation = _delegation(national, role)
        new_files: dict[str, bytes] = {}
        notes = []
        for name, data in files.items():
            path = province_target_path(code, name)
            if not delegation.is_delegated_path(path):
                raise TrustRepoError(f"{path} is outside the delegation of {role}")
            if not isinstance(data, (bytes, bytearray)):
                raise TrustRepoError(f"{path}: content must be bytes")
            if name == KEY_LIST_NAME:
                key_list = self._check_key_list(code, bytes(data))
                notes.append(f"{path} serial {key_list.serial} ({len(key_list.keys)} keys)")
            else:
                notes.append(f"{path} ({len(data)} bytes)")
            new_files[path] = bytes(data)
        extra = {}
        for name, fields in (custom or {}).items():
            path = province_target_path(code, name)
            if path not in new_files:
                raise TrustRepoError(f"custom fields for {path}, which is not among the files")
            extra[path] = dict(fields)
        removed = [province_target_path(code, name) for name in remove]
        md = self._province_version(code, national, new_files, now, remove=removed, custom=extra)
        _sign(md, signers, national, role)
        written = []
        for path, data in new_files.items():
            written.append(self._store_target(md.signed.targets[path], data))
        written.append(self._store_metadata(role, md))
        what = "; ".join(notes + [f"removed {p}" for p in removed]) or "re-signed"
        return Change(
            f"{role} v{md.signed.version}: {what}; expires {iso_utc(md.signed.expires)}; "
            "publish() makes it visible",
            tuple(written),
        )

    def publish_key_list(
        self, key_list: KeyList, signers: Sequence[Signer], *, now: _dt.datetime
    ) -> Change:
        """Sign ``key_list`` as ``provinces/<code>/keys.json`` (see :meth:`publish_province_targets`)."""
        return self.publish_province_targets(
            key_list.province, {KEY_LIST_NAME: key_list.to_bytes()}, signers, now=now
        )

    # ------------------------------------------------------------------ unlisted files

    def put_unlisted(self, code: str, files: Mapping[str, bytes], *, remove: Iterable[str] = ()) -> tuple[str, ...]:
        """Write (or replace) ``files`` and delete ``remove`` where the mirror serves them by name.

        Names are below ``provinces/<code>/``, inside the province's delegation,
        stored as ``targets/provinces/<code>/<name>``: **outside the signed
        metadata**, so nothing vouches for them and a client must verify them by
        other means (revocation deltas: the state they lead to must hash to a
        snapshot the province role lists, ``verifier/revocation_sync.py``). A
        name may not look like a listed target's stored name (``<SHA256>.<name>``).
        Returns the paths written, relative to the repository.
        """
        code = _province(code)
        role = province_role(code)
        delegation = _delegation(self.targets(), role)

        def checked(name: str) -> Path:
            path = province_target_path(code, name)
            if not delegation.is_delegated_path(path):
                raise TrustRepoError(f"{path} is outside the delegation of {role}")
            if _HASHED_NAME.match(path.rpartition("/")[2]):
                raise TrustRepoError(f"{path}: an unlisted file may not be named like a listed target")
            return self._targets / path

        written = []
        for name, data in files.items():
            if not isinstance(data, (bytes, bytearray)):
                raise TrustRepoError(f"{name}: content must be bytes")
            target = checked(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            _write(target, bytes(data), replace=True)
            written.append(f"targets/{province_target_path(code, name)}")
        for name in remove:
            checked(name).unlink(missing_ok=True)
        return tuple(written)

    def unlisted(self, code: str, folder: str) -> dict[str, bytes]:
        """The unlisted files (:meth:`put_unlisted`) below ``provinces/<code>/<folder>/``, by name below
        ``provinces/<code>/``."""
        code = _province(code)
        root = self._targets / "provinces" / code
        directory = self._targets / province_target_path(code, folder)
        if not directory.is_dir():
            return {}
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
                if p.is_file() and not _HASHED_NAME.match(p.name) and not p.name.startswith(".")}

    # ------------------------------------------------------------------ online roles

    def publish(self, *, now: _dt.datetime, force: bool = False) -> Change:
        """Write a snapshot naming the newest version of every targets role (if any
        changed, if the current one would expire before the new timestamp, or
        ``force``), then a new timestamp. Run by the online service.

        Roles are never dropped from the snapshot, even a removed province's.
        Warnings name what verifiers will refuse: a delegated province without
        metadata, or whose newest metadata its current keys did not sign, and
        metadata that expires before the next snapshot would.
        """
        now = _utc(now)
        versions = self._versions()
        root = self.root()
        previous = self._published_snapshot()
        meta = dict(previous.signed.meta) if previous is not None else {}
        for role, version in versions.items():
            if role in ("root", "snapshot", "timestamp"):
                continue
            data = self._read(f"{version}.{role}.json")
            meta[f"{role}.json"] = MetaFile(version=version, length=len(data))
        written = []
        # the snapshot is renewed when it would expire before the timestamp written now
        expiring = previous is not None and previous.signed.expires <= now + self.config.timestamp_expiry
        if previous is None or force or expiring or meta != previous.signed.meta:
            changed = sorted(
                name.removesuffix(".json")
                for name, info in meta.items()
                if previous is None or previous.signed.meta.get(name) != info
            )
            snapshot = Metadata(
                Snapshot(
                    version=previous.signed.version + 1 if previous is not None else 1,
                    expires=now + self.config.snapshot_expiry,
                    meta=meta,
                )
            )
            _sign(snapshot, self._online("snapshot"), root, "snapshot")
            written.append(self._store_metadata("snapshot", snapshot))
            snapshot_text = f"snapshot v{snapshot.signed.version} ({', '.join(changed) or 'renewed'})"
        else:
            snapshot = previous
            snapshot_text = f"snapshot v{snapshot.signed.version} unchanged"
        timestamp = self._write_timestamp(snapshot, now)
        written.append("metadata/timestamp.json")
        return Change(
            f"{snapshot_text}, timestamp v{timestamp.signed.version} "
            f"(expires {iso_utc(timestamp.signed.expires)})",
            tuple(written),
            self._warnings(now, snapshot.signed),
        )

    def refresh_timestamp(self, *, now: _dt.datetime) -> Change:
        """Re-sign the timestamp over the published snapshot (hourly, by the online service).

        Only the timestamp: :meth:`publish` also renews a snapshot close to expiry.
        """
        now = _utc(now)
        snapshot = self._published_snapshot()
        if snapshot is None:
            raise TrustRepoError("nothing published yet: run publish()")
        timestamp = self._write_timestamp(snapshot, now)
        warnings = ()
        if snapshot.signed.expires < timestamp.signed.expires:
            warnings = (
                f"snapshot v{snapshot.signed.version} expires {iso_utc(snapshot.signed.expires)}, "
                "before this timestamp: run publish()",
            )
        return Change(
            f"timestamp v{timestamp.signed.version} over snapshot v{snapshot.signed.version} "
            f"(expires {iso_utc(timestamp.signed.expires)})",
            ("metadata/timestamp.json",),
            warnings,
        )

    # ------------------------------------------------------------------ root

    def rotate_root(
        self,
        *,
        old_root_signers: Sequence[Signer],
        new_root_signers: Sequence[Signer],
        now: _dt.datetime,
        threshold: int | None = None,
        targets_signers: Sequence[Signer] | None = None,
        targets_threshold: int | None = None,
        snapshot_signers: Sequence[Signer] | None = None,
        timestamp_signers: Sequence[Signer] | None = None,
    ) -> Change:
        """Write root N+1 with the keys of ``new_root_signers`` (``threshold`` of them,
        the current threshold by default), signed by a threshold of the old root
        keys *and* a threshold of the new ones, as TUF clients require (§5.3).

        Optionally replace the keys of the other top-level roles in the same
        version: ``targets_signers`` (the national targets is then re-signed with
        them), ``snapshot_signers`` and ``timestamp_signers`` (which become this
        repository's online signers). When any of those change, a new snapshot
        and timestamp are published at once, so verifiers never see a root whose
        online keys signed nothing yet.
        """
        now = _utc(now)
        old_md = self._newest("root")
        old = old_md.signed
        new_md: Metadata[Root] = Metadata.from_bytes(old_md.to_bytes())
        new = new_md.signed
        new.version = old.version + 1
        new.expires = now + self.config.root_expiry
        replaced = []
        for role, signers, role_threshold in (
            ("root", new_root_signers, threshold or old.roles["root"].threshold),
            ("targets", targets_signers, targets_threshold or old.roles["targets"].threshold),
            ("snapshot", snapshot_signers, len(snapshot_signers or ())),
            ("timestamp", timestamp_signers, len(timestamp_signers or ())),
        ):
            if signers is None:
                continue
            keys = _public_keys(signers)
            _check_threshold(role, role_threshold, len(keys))
            for keyid in list(new.roles[role].keyids):
                new.revoke_key(keyid, role)
            for key in keys:
                new.add_key(key, role)
            new.roles[role].threshold = role_threshold
            replaced.append(f"{role} {role_threshold} of {len(keys)}")
        new_md.signatures.clear()
        for signer in _unique([*old_root_signers, *new_root_signers]):
            new_md.sign(signer, append=True)
        for name, delegator in (("old", old), ("new", new)):
            try:
                delegator.verify_delegate("root", new_md.signed_bytes, new_md.signatures)
            except UnsignedMetadataError as exc:
                raise TrustRepoError(f"root v{new.version} lacks the {name} root threshold: {exc}") from None
        written = [self._store_metadata("root", new_md)]
        if targets_signers is not None:
            targets_md = self._next_version("targets", now + self.config.targets_expiry)
            _sign(targets_md, targets_signers, new, "targets")
            written.append(self._store_metadata("targets", targets_md))
        if snapshot_signers is not None:
            self._snapshot_signers = tuple(snapshot_signers)
        if timestamp_signers is not None:
            self._timestamp_signers = tuple(timestamp_signers)
        summary = f"root v{new.version} ({', '.join(replaced)}), signed by old and new root keys"
        warnings: tuple[str, ...] = ()
        if targets_signers is not None or snapshot_signers is not None or timestamp_signers is not None:
            published = self.publish(now=now, force=True)
            written += published.written
            warnings = published.warnings
            summary += f"; {published.summary}"
        return Change(summary, tuple(written), warnings)

    # ------------------------------------------------------------------ internals

    def _versions(self) -> dict[str, int]:
        """The newest version of each versioned role file in ``metadata/``."""
        newest: dict[str, int] = {}
        with os.scandir(self._metadata) as entries:
            for entry in entries:
                match = _VERSIONED.fullmatch(entry.name)
                if match:
                    version, role = int(match[1]), match[2]
                    if version > newest.get(role, 0):
                        newest[role] = version
        return newest

    def _read(self, name: str) -> bytes:
        return (self._metadata / name).read_bytes()

    def _newest(self, role: str) -> Metadata:
        version = self._versions().get(role)
        if version is None:
            raise TrustRepoError(f"no metadata for role {role}")
        return Metadata.from_bytes(self._read(f"{version}.{role}.json"))

    def _next_version(self, role: str, expires: _dt.datetime) -> Metadata:
        md = self._newest(role)
        md.signed.version += 1
        md.signed.expires = expires
        md.signatures.clear()
        return md

    def _published_snapshot(self) -> Metadata[Snapshot] | None:
        path = self._metadata / "timestamp.json"
        if not path.exists():
            return None
        timestamp = Metadata[Timestamp].from_bytes(path.read_bytes()).signed
        return Metadata.from_bytes(self._read(f"{timestamp.snapshot_meta.version}.snapshot.json"))

    def _online(self, role: str) -> tuple[Signer, ...]:
        signers = self._snapshot_signers if role == "snapshot" else self._timestamp_signers
        if not signers:
            raise TrustRepoError(f"no {role} signer: pass {role}_signers to TrustRepository")
        return signers

    def _write_timestamp(self, snapshot: Metadata[Snapshot], now: _dt.datetime) -> Metadata[Timestamp]:
        data = self._read(f"{snapshot.signed.version}.snapshot.json")
        path = self._metadata / "timestamp.json"
        previous = Metadata[Timestamp].from_bytes(path.read_bytes()).signed if path.exists() else None
        timestamp = Metadata(
            Timestamp(
                version=previous.version + 1 if previous is not None else 1,
                expires=now + self.config.timestamp_expiry,
                snapshot_meta=MetaFile(
                    version=snapshot.signed.version,
                    length=len(data),
                    hashes={"sha256": hashlib.sha256(data).hexdigest()},
                ),
            )
        )
        _sign(timestamp, self._online("timestamp"), self.root(), "timestamp")
        _write(path, timestamp.to_bytes(), replace=True)
        return timestamp

    def _province_version(
        self,
        code: str,
        national: Targets,
        files: Mapping[str, bytes],
        now: _dt.datetime,
        *,
        remove: Sequence[str] = (),
        keep_targets: bool = True,
        custom: Mapping[str, dict] | None = None,
    ) -> Metadata[Targets]:
        """The next version of ``province-<code>`` with ``files`` added and ``remove`` dropped."""
        role = province_role(code)
        _delegation(national, role)
        version = self._versions().get(role)
        if version is None:
            md = Metadata(Targets(version=1, expires=now + self.config.province_expiry))
        else:
            md = self._next_version(role, now + self.config.province_expiry)
            if not keep_targets:
                md.signed.targets = {}
        for path in remove:
            if md.signed.targets.pop(path, None) is None:
                raise TrustRepoError(f"cannot remove {path}: {role} does not list it")
        for path, data in files.items():
            info = TargetFile.from_data(path, data, ["sha256"])
            if custom and path in custom:
                info.unrecognized_fields["custom"] = custom[path]
            md.signed.targets[path] = info
        return md

    def _check_key_list(self, code: str, data: bytes) -> KeyList:
        try:
            key_list = parse_key_list(data, province=code)
        except InvalidKeyList as exc:
            raise TrustRepoError(f"provinces/{code}/{KEY_LIST_NAME}: {exc}") from None
        highest = None
        folder = self._targets / "provinces" / code
        for path in folder.glob(f"*.{KEY_LIST_NAME}") if folder.is_dir() else ():
            try:
                serial = parse_key_list(path.read_bytes(), province=code).serial
            except InvalidKeyList:
                continue
            highest = serial if highest is None else max(highest, serial)
        if highest is not None and key_list.serial <= highest:
            raise TrustRepoError(
                f"provinces/{code}/{KEY_LIST_NAME}: serial {key_list.serial} must exceed "
                f"{highest}, the highest the province published (verifiers refuse lower serials)"
            )
        return key_list

    def _store_metadata(self, role: str, md: Metadata) -> str:
        name = f"{md.signed.version}.{role}.json"
        _write(self._metadata / name, md.to_bytes())
        return f"metadata/{name}"

    def _store_target(self, info: TargetFile, data: bytes) -> str:
        relative = _hashed_path(info)
        path = self._targets / relative
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, data)
        return f"targets/{relative}"

    def _warnings(self, now: _dt.datetime, snapshot: Snapshot) -> tuple[str, ...]:
        warnings = []
        horizon = now + self.config.snapshot_expiry
        root = self.root()
        if root.expires < now + 30 * _DAY:
            warnings.append(f"root v{root.version} expires {iso_utc(root.expires)}: rotate the root")
        national_version = snapshot.meta["targets.json"].version
        national = Metadata[Targets].from_bytes(self._read(f"{national_version}.targets.json")).signed
        if national.expires < horizon:
            warnings.append(f"targets v{national.version} expires {iso_utc(national.expires)}")
        roles = national.delegations.roles if national.delegations and national.delegations.roles else {}
        for role in roles:
            info = snapshot.meta.get(f"{role}.json")
            if info is None:
                warnings.append(f"{role} is delegated but has published no metadata")
                continue
            data = self._read(f"{info.version}.{role}.json")
            md = Metadata[Targets].from_bytes(data)
            try:
                national.verify_delegate(role, md.signed_bytes, md.signatures)
            except UnsignedMetadataError as exc:
                warnings.append(f"{role} v{info.version} does not verify with its current keys: {exc}")
            if md.signed.expires < horizon:
                warnings.append(f"{role} v{info.version} expires {iso_utc(md.signed.expires)}: re-sign it")
        return tuple(warnings)


# ---------------------------------------------------------------------- helpers


def _province(code: str) -> str:
    try:
        return parse_province(code)
    except InvalidClaims as exc:
        raise TrustRepoError(str(exc)) from None


def _utc(now: _dt.datetime) -> _dt.datetime:
    if not isinstance(now, _dt.datetime) or now.tzinfo is None:
        raise TrustRepoError("now must be a timezone-aware datetime")
    return now.astimezone(_UTC)


def _unique(signers: Iterable[Signer]) -> list[Signer]:
    seen: dict[str, Signer] = {}
    for signer in signers:
        seen.setdefault(signer.public_key.keyid, signer)
    return list(seen.values())


def _public_keys(keys: Iterable[Key | Signer]) -> list[Key]:
    result: dict[str, Key] = {}
    for item in keys:
        key = item.public_key if isinstance(item, Signer) else item
        if not isinstance(key, Key):
            raise TrustRepoError(f"not a key or signer: {type(item).__name__}")
        result.setdefault(key.keyid, key)
    return list(result.values())


def _check_threshold(role: str, threshold: int, keys: int) -> None:
    if type(threshold) is not int or not 1 <= threshold <= keys:
        raise TrustRepoError(f"{role}: threshold {threshold} must be between 1 and its {keys} keys")


def _delegation(national: Targets, role: str) -> DelegatedRole:
    roles = national.delegations.roles if national.delegations is not None else None
    if not roles or role not in roles:
        raise TrustRepoError(f"{role} is not delegated by the national targets")
    return roles[role]


def _sign(md: Metadata, signers: Sequence[Signer], delegator: Root | Targets, role: str) -> None:
    """Sign ``md`` with ``signers`` (each a key of ``role``) and check the threshold."""
    keyids = delegator.get_delegated_role(role).keyids
    md.signatures.clear()
    for signer in _unique(signers):
        keyid = signer.public_key.keyid
        if keyid not in keyids:
            raise TrustRepoError(f"{role}: signer {keyid[:12]} is not one of the role's keys")
        md.sign(signer, append=True)
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as exc:
        raise TrustRepoError(f"not enough signatures: {exc}") from None


def _hashed_path(info: TargetFile) -> str:
    """Where a consistent-snapshot client fetches ``info``: ``dir/<SHA256>.name``."""
    parent, sep, name = info.path.rpartition("/")
    return f"{parent}{sep}{info.hashes['sha256']}.{name}"


def _write(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write ``path`` atomically (temp file + ``os.replace``); refuse to overwrite unless ``replace``."""
    if not replace and path.exists():
        raise TrustRepoError(f"{path} already exists; repository files are never rewritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, data, mode=0o644)  # mirrors serve these files to anyone
