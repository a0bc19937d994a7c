"""The trust repository's files: versioned metadata and content-addressed targets in a directory.

:class:`RepositoryFiles` reads the newest version of each role, stores new
metadata versions (``metadata/<V>.<role>.json``) and target files (under their
SHA-256, ``targets/provinces/33/<SHA256>.keys.json``), never rewriting one, and
holds the repository's lock. The helpers below sign a role and check its
delegator's threshold, so nothing is written that a client would reject for lack
of signatures. What is written, and when, is :class:`keys.trustrepo.TrustRepository`
(the national roles) and :class:`keys.trustrepo_provinces.ProvinceRoles` (a
province's role); the layout is in ``keys/trustrepo.py``.
"""


from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from healthcode.errors import InvalidClaims
from healthcode.keylist import InvalidKeyList, parse_key_list
from healthcode.model import parse_province
from keys.errors import TrustRepoError
from shellkit.files import file_lock, write_file_atomically

__all__ = [
    "RepoConfig",
    "Change",
    "RepositoryFiles",
    "province_role",
    "province_target_path",
    "KEY_LIST_NAME",
    "highest_key_list_serial",
    "PROVINCE_PATH_PATTERNS",
]

_UTC = _dt.timezone.utc
_DAY = _dt.timedelta(days=1)
#: How a listed target is stored (consistent snapshots): ``<SHA256>.<name>``.
HASHED_NAME = re.compile(r"[0-9a-f]{64}\.")

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
    return f"province-{checked_province(code)}"


def highest_key_list_serial(targets: Path, code: str) -> int | None:
    """The highest serial among the key lists stored for province ``code`` below ``targets``
    (``provinces/<code>/<SHA256>.keys.json``, every version kept); None when there is none.
    A file that does not parse as that province's key list is passed over."""
    highest = None
    folder = targets / "provinces" / code
    for path in folder.glob(f"*.{KEY_LIST_NAME}") if folder.is_dir() else ():
        try:
            serial = parse_key_list(path.read_bytes(), province=code).serial
        except InvalidKeyList:
            continue
        highest = serial if highest is None else max(highest, serial)
    return highest


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
    return f"provinces/{checked_province(code)}/{name}"


class RepositoryFiles:
    """The files of the trust repository in ``directory`` (which must hold ``metadata/1.root.json``)."""

    def __init__(self, directory: str | os.PathLike[str], *, config: RepoConfig = RepoConfig()) -> None:
        self.directory = Path(directory)
        self.config = config
        self._metadata = self.directory / "metadata"
        self._targets = self.directory / "targets"
        if not (self._metadata / "1.root.json").is_file():
            raise TrustRepoError(f"{self.directory} is not a trust repository (no metadata/1.root.json)")

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The exclusive advisory lock on ``<repo>/.lock`` that every writer of this repository
        holds for its whole change (the ceremonies, KeyAdmin, the issuer's revocation push).
        Readers need none: files are written atomically and never rewritten, but for
        ``timestamp.json``, which is replaced atomically."""
        return file_lock(self.directory / ".lock")


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
        return (self._targets / hashed_path(info)).read_bytes()

    # ------------------------------------------------------------------ storing

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

    def _store_metadata(self, role: str, md: Metadata) -> str:
        name = f"{md.signed.version}.{role}.json"
        write_repo_file(self._metadata / name, md.to_bytes())
        return f"metadata/{name}"

    def _store_target(self, info: TargetFile, data: bytes) -> str:
        relative = hashed_path(info)
        path = self._targets / relative
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_repo_file(path, data)
        return f"targets/{relative}"


# ---------------------------------------------------------------------- signing and checking


def checked_province(code: str) -> str:
    try:
        return parse_province(code)
    except InvalidClaims as exc:
        raise TrustRepoError(str(exc)) from None


def utc_now_param(now: _dt.datetime) -> _dt.datetime:
    if not isinstance(now, _dt.datetime) or now.tzinfo is None:
        raise TrustRepoError("now must be a timezone-aware datetime")
    return now.astimezone(_UTC)


def unique_signers(signers: Iterable[Signer]) -> list[Signer]:
    seen: dict[str, Signer] = {}
    for signer in signers:
        seen.setdefault(signer.public_key.keyid, signer)
    return list(seen.values())


def public_keys(keys: Iterable[Key | Signer]) -> list[Key]:
    result: dict[str, Key] = {}
    for item in keys:
        key = item.public_key if isinstance(item, Signer) else item
        if not isinstance(key, Key):
            raise TrustRepoError(f"not a key or signer: {type(item).__name__}")
        result.setdefault(key.keyid, key)
    return list(result.values())


def check_threshold(role: str, threshold: int, keys: int) -> None:
    if type(threshold) is not int or not 1 <= threshold <= keys:
        raise TrustRepoError(f"{role}: threshold {threshold} must be between 1 and its {keys} keys")


def delegation_of(national: Targets, role: str) -> DelegatedRole:
    roles = national.delegations.roles if national.delegations is not None else None
    if not roles or role not in roles:
        raise TrustRepoError(f"{role} is not delegated by the national targets")
    return roles[role]


def sign_role(md: Metadata, signers: Sequence[Signer], delegator: Root | Targets, role: str) -> None:
    """Sign ``md`` with ``signers`` (each a key of ``role``) and check the threshold."""
    keyids = delegator.get_delegated_role(role).keyids
    md.signatures.clear()
    for signer in unique_signers(signers):
        keyid = signer.public_key.keyid
        if keyid not in keyids:
            raise TrustRepoError(f"{role}: signer {keyid[:12]} is not one of the role's keys")
        md.sign(signer, append=True)
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as exc:
        raise TrustRepoError(f"not enough signatures: {exc}") from None


def hashed_path(info: TargetFile) -> str:
    """Where a consistent-snapshot client fetches ``info``: ``dir/<SHA256>.name``."""
    parent, sep, name = info.path.rpartition("/")
    return f"{parent}{sep}{info.hashes['sha256']}.{name}"


def write_repo_file(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write ``path`` atomically (temp file + ``os.replace``); refuse to overwrite unless ``replace``."""
    if not replace and path.exists():
        raise TrustRepoError(f"{path} already exists; repository files are never rewritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, data, mode=0o644)  # mirrors serve these files to anyone
