"""A province's role in the trust repository: its key list, revocation files and unlisted deltas.

``targets`` delegates ``provinces/<code>/...`` to ``province-<code>`` (terminating):
the province signs its own files with its own keys (``keys/trustrepo.py``).
:class:`ProvinceRoles` writes a new version of that role (files added, replaced
or removed; a key list checked to be the province's, with a higher serial) and
the unlisted files a mirror serves by name. :meth:`TrustRepository.publish
<keys.trustrepo.TrustRepository.publish>` makes a new version visible.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, TargetFile, Targets

from healthcode.keylist import InvalidKeyList, KeyList, parse_key_list
from shellkit.times import iso_utc

from .errors import TrustRepoError
from .trustrepo_files import (
    HASHED_NAME,
    KEY_LIST_NAME,
    Change,
    RepositoryFiles,
    checked_province,
    delegation_of,
    highest_key_list_serial,
    province_role,
    province_target_path,
    sign_role,
    utc_now_param,
    write_repo_file,
)

__all__ = ["ProvinceRoles"]


class ProvinceRoles(RepositoryFiles):
    """Writing the delegated role of a province (the national roles: :class:`keys.trustrepo.TrustRepository`)."""

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
        now = utc_now_param(now)
        code = checked_province(code)
        role = province_role(code)
        national = self.targets()
        delegation = delegation_of(national, role)
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
        sign_role(md, signers, national, role)
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
        code = checked_province(code)
        role = province_role(code)
        delegation = delegation_of(self.targets(), role)

        def checked(name: str) -> Path:
            path = province_target_path(code, name)
            if not delegation.is_delegated_path(path):
                raise TrustRepoError(f"{path} is outside the delegation of {role}")
            if HASHED_NAME.match(path.rpartition("/")[2]):
                raise TrustRepoError(f"{path}: an unlisted file may not be named like a listed target")
            return self._targets / path

        written = []
        for name, data in files.items():
            if not isinstance(data, (bytes, bytearray)):
                raise TrustRepoError(f"{name}: content must be bytes")
            target = checked(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_repo_file(target, bytes(data), replace=True)
            written.append(f"targets/{province_target_path(code, name)}")
        for name in remove:
            checked(name).unlink(missing_ok=True)
        return tuple(written)

    def unlisted(self, code: str, folder: str) -> dict[str, bytes]:
        """The unlisted files (:meth:`put_unlisted`) below ``provinces/<code>/<folder>/``, by name below
        ``provinces/<code>/``."""
        code = checked_province(code)
        root = self._targets / "provinces" / code
        directory = self._targets / province_target_path(code, folder)
        if not directory.is_dir():
            return {}
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
                if p.is_file() and not HASHED_NAME.match(p.name) and not p.name.startswith(".")}

    # ------------------------------------------------------------------ internals

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
        delegation_of(national, role)
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
        highest = highest_key_list_serial(self._targets, code)
        if highest is not None and key_list.serial <= highest:
            raise TrustRepoError(
                f"provinces/{code}/{KEY_LIST_NAME}: serial {key_list.serial} must exceed "
                f"{highest}, the highest the province published (verifiers refuse lower serials)"
            )
        return key_list
