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

This module writes the national roles (creation, delegations, snapshot and
timestamp, root rotation); a province's role is ``keys/trustrepo_provinces.py``,
the files and the signing checks ``keys/trustrepo_files.py``.

Signers are any ``securesystemslib.signer.Signer`` (``CryptoSigner`` over
Ed25519 or ECDSA keys in tests; file or HSM signers from the key stores).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path
from typing import Sequence

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, MetaFile, Root, Snapshot, Targets, Timestamp

from shellkit.times import iso_utc

from .errors import TrustRepoError
from .trustrepo_files import (
    PROVINCE_PATH_PATTERNS,
    Change,
    RepoConfig,
    check_threshold,
    checked_province,
    delegation_of,
    province_role,
    public_keys,
    sign_role,
    unique_signers,
    utc_now_param,
    write_repo_file,
)
from .trustrepo_provinces import ProvinceRoles

__all__ = ["TrustRepository"]

_DAY = _dt.timedelta(days=1)
#: The expiry defaults (frozen, so one shared instance is safe).
_DEFAULT_CONFIG = RepoConfig()


class TrustRepository(ProvinceRoles):
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
        config: RepoConfig = _DEFAULT_CONFIG,
    ) -> None:
        self._snapshot_signers = tuple(snapshot_signers)
        self._timestamp_signers = tuple(timestamp_signers)
        super().__init__(directory, config=config)

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
        config: RepoConfig = _DEFAULT_CONFIG,
    ) -> tuple["TrustRepository", Change]:
        """Create a repository: root v1, targets v1 (no provinces yet), snapshot v1, timestamp v1.

        Every root and targets signer signs its v1 (a key ceremony has them all in
        the room); the thresholds apply from then on. Online roles need all their
        signers (threshold = number of online keys).
        """
        now = utc_now_param(now)
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
            keys = public_keys(signers)
            check_threshold(role, threshold, len(keys))
            for key in keys:
                root.add_key(key, role)
            root.roles[role].threshold = threshold
        root_md = Metadata(root)
        sign_role(root_md, root_signers, root, "root")
        targets_md = Metadata(
            Targets(expires=now + config.targets_expiry, delegations=Delegations(keys={}, roles={}))
        )
        sign_role(targets_md, targets_signers, root, "targets")
        (directory / "metadata").mkdir(parents=True)
        (directory / "targets").mkdir(exist_ok=True)
        write_repo_file(directory / "metadata" / "1.root.json", root_md.to_bytes())
        write_repo_file(directory / "metadata" / "1.targets.json", targets_md.to_bytes())
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
        now = utc_now_param(now)
        code = checked_province(code)
        role = province_role(code)
        md = self._next_version("targets", now + self.config.targets_expiry)
        delegations = md.signed.delegations
        if delegations is None:
            delegations = md.signed.delegations = Delegations(keys={}, roles={})
        if delegations.roles is None:
            raise TrustRepoError("national targets uses succinct delegations; not supported")
        if role in delegations.roles:
            raise TrustRepoError(f"province {code} is already delegated (use rekey_province)")
        public = public_keys(keys)
        check_threshold(role, threshold, len(public))
        delegations.roles[role] = DelegatedRole(
            name=role,
            keyids=[],
            threshold=threshold,
            terminating=True,
            paths=[pattern.format(code=code) for pattern in PROVINCE_PATH_PATTERNS],
        )
        for key in public:
            md.signed.add_key(key, role)
        sign_role(md, targets_signers, self.root(), "targets")
        written = [self._store_metadata("targets", md)]
        summary = (
            f"targets v{md.signed.version}: delegated provinces/{code}/ to {role} "
            f"({threshold} of {len(public)} keys)"
        )
        if province_signers is not None:
            role_md = self._province_version(code, md.signed, {}, now, keep_targets=False)
            sign_role(role_md, province_signers, md.signed, role)
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
        now = utc_now_param(now)
        code = checked_province(code)
        role = province_role(code)
        md = self._next_version("targets", now + self.config.targets_expiry)
        delegation = delegation_of(md.signed, role)
        public = public_keys(keys)
        check_threshold(role, threshold, len(public))
        old = list(delegation.keyids)
        for keyid in old:
            md.signed.revoke_key(keyid, role)
        for key in public:
            md.signed.add_key(key, role)
        delegation.threshold = threshold
        sign_role(md, targets_signers, self.root(), "targets")
        written = [self._store_metadata("targets", md)]
        removed = sorted(set(old) - set(delegation.keyids))
        summary = (
            f"targets v{md.signed.version}: {role} now {threshold} of {len(public)} keys "
            f"(removed {', '.join(k[:12] for k in removed) or 'none'})"
        )
        warnings: tuple[str, ...] = ()
        if province_signers is not None:
            role_md = self._province_version(code, md.signed, {}, now)
            sign_role(role_md, province_signers, md.signed, role)
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
        now = utc_now_param(now)
        code = checked_province(code)
        role = province_role(code)
        md = self._next_version("targets", now + self.config.targets_expiry)
        delegation = delegation_of(md.signed, role)
        for keyid in list(delegation.keyids):
            md.signed.revoke_key(keyid, role)
        del md.signed.delegations.roles[role]
        sign_role(md, targets_signers, self.root(), "targets")
        written = self._store_metadata("targets", md)
        return Change(
            f"targets v{md.signed.version}: removed the delegation to {role}; "
            "publish() makes verifiers drop its keys",
            (written,),
        )

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
        now = utc_now_param(now)
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
            sign_role(snapshot, self._online("snapshot"), root, "snapshot")
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
        now = utc_now_param(now)
        snapshot = self._published_snapshot()
        if snapshot is None:
            raise TrustRepoError("nothing published yet: run publish()")
        timestamp = self._write_timestamp(snapshot, now)
        warnings: tuple[str, ...] = ()
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
        now = utc_now_param(now)
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
            keys = public_keys(signers)
            check_threshold(role, role_threshold, len(keys))
            for keyid in list(new.roles[role].keyids):
                new.revoke_key(keyid, role)
            for key in keys:
                new.add_key(key, role)
            new.roles[role].threshold = role_threshold
            replaced.append(f"{role} {role_threshold} of {len(keys)}")
        new_md.signatures.clear()
        for signer in unique_signers([*old_root_signers, *new_root_signers]):
            new_md.sign(signer, append=True)
        for name, delegator in (("old", old), ("new", new)):
            try:
                delegator.verify_delegate("root", new_md.signed_bytes, new_md.signatures)
            except UnsignedMetadataError as exc:
                raise TrustRepoError(f"root v{new.version} lacks the {name} root threshold: {exc}") from None
        written = [self._store_metadata("root", new_md)]
        if targets_signers is not None:
            targets_md = self._next_version("targets", now + self.config.targets_expiry)
            sign_role(targets_md, targets_signers, new, "targets")
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
        sign_role(timestamp, self._online("timestamp"), self.root(), "timestamp")
        write_repo_file(path, timestamp.to_bytes(), replace=True)
        return timestamp

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
