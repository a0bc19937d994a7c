"""Key ceremonies: the library that ``healthcode-keys`` and the issuer's KeyAdmin API are thin shells over.

This module: the national ceremonies (the root, the online roles, delegating a
province) and what every ceremony shares (:class:`Outcome`, the directory
layouts). A province's own keys (generate, rotate, retire, mark compromised,
expire, publish its key list): :mod:`keys.province_keys`. What a repository
publishes at a moment (``healthcode-keys status``): :mod:`keys.repo_status`.

Every operation takes ``now`` (no clock is read here), takes secrets as
parameters (a :data:`Passphrases` callback, an open keystore), and returns an
:class:`Outcome` that says what it changed: files written, versions, kids,
and warnings. Refusals are :class:`~keys.errors.KeyManagementError` (the key
lifecycle, keystores, role key files; :class:`~keys.errors.TrustRepoError` for
the repository); nothing is written when one is raised, except where a
docstring says so.

**Where things live.** National (:class:`NationalKeys`)::

    <national-keys>/official-<n>/root.pem, root.pub.json        one root key per official ...
    <national-keys>/official-<n>/targets.pem, targets.pub.json  ... and one national targets key
    <national-keys>/online/snapshot.pem, timestamp.pem (+ .pub.json)   the online roles' keys
    <repo>/metadata/, <repo>/targets/                               the trust repository (keys/trustrepo.py)

A province (:class:`ProvinceHome`)::

    <home>/key-set.json          the province key set (keys/lifecycle.py); the issuer's keys.key_set
    <home>/keystore/             file keystore of code-signing keys; the issuer's keys.keystore_dir
    <home>/tuf-<code>/role-<n>.pem, role-<n>.pub.json   the TUF keys of role province-<code>

A directory of role keys is a *holder* (one person or host, one passphrase);
:data:`Passphrases` is asked per holder.

**Concurrency.** Changes to a key set run under an exclusive ``flock`` on
``key-set.json.lock`` (:func:`keys.key_set_file.key_set_lock`); changes to the
repository under one on ``<repo>/.lock`` (:meth:`TrustRepository.lock`; the CLI, a serving issuer's KeyAdmin,
and the issuer's write-back of its codes-signed counts may touch the same
files). Files are replaced atomically, so readers (the issuer's rotating signer,
mirrors) see the old or the new file.
"""

from __future__ import annotations

import datetime as _dt
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from securesystemslib.signer import Key, Signer

from healthcode.errors import InvalidClaims
from healthcode.model import ProvinceCode, parse_province

from .errors import KeyNotFound, PolicyViolation, TrustRepoError
from .key_set_file import key_set_lock, save_key_set
from .lifecycle import ProvinceKeySet
from .managed_key import ManagedKey, RotationPolicy
from .signers import RoleKeyFile, generate_role_key, load_role_signer, read_public_key, role_key_names
from .trustrepo import TrustRepository
from .trustrepo_files import Change, RepoConfig, province_role

__all__ = [
    "Outcome",
    "Passphrases",
    "NationalKeys",
    "ProvinceHome",
    "init_root",
    "load_officials",
    "load_online",
    "open_repository",
    "add_province",
    "publish",
    "refresh_timestamp",
    "rotate_root",
    "province_signers",
    "read_role_public_keys",
    "check_root_threshold",
    "KEY_SET_NAME",
]

#: ``passphrase(holder_directory, new=...)``: the holder's passphrase (``new``: being set now, confirm it).
Passphrases = Callable[..., bytes]

KEY_SET_NAME = "key-set.json"
MAX_OFFICIALS = 15
_UTC = _dt.timezone.utc
#: The expiry defaults of :class:`RepoConfig` (frozen, so one shared default instance is safe).
_DEFAULT_REPO_CONFIG = RepoConfig()


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Outcome:
    """What an operation changed: a summary, files written, warnings, and the values it made."""

    summary: str
    written: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    key: ManagedKey | None = None
    key_set: ProvinceKeySet | None = None
    serial: int | None = None
    role_version: int | None = None
    published: bool = False

    def lines(self) -> list[str]:
        out = [self.summary]
        out += [f"  wrote {path}" for path in self.written]
        out += [f"  warning: {text}" for text in self.warnings]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def then(self, other: "Outcome | Change", **values: Any) -> "Outcome":
        """This outcome followed by ``other`` (summaries joined, files and warnings concatenated)."""
        merged: dict[str, Any] = dict(key=self.key, key_set=self.key_set, serial=self.serial,
                                      role_version=self.role_version, published=self.published)
        merged.update(values)
        return Outcome(f"{self.summary}\n{other.summary}", self.written + tuple(other.written),
                       self.warnings + tuple(other.warnings), **merged)


def aware_utc(now: _dt.datetime) -> _dt.datetime:
    """``now`` in UTC (:class:`~keys.errors.PolicyViolation` if it is naive): every operation's clock reading."""
    if not isinstance(now, _dt.datetime) or now.tzinfo is None:
        raise PolicyViolation("now must be a timezone-aware datetime")
    return now.astimezone(_UTC)


def province_code(code: str) -> ProvinceCode:
    """A province code checked (:class:`~keys.errors.PolicyViolation` if it is not one)."""
    try:
        return parse_province(code)
    except InvalidClaims as exc:
        raise PolicyViolation(str(exc)) from None


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class NationalKeys:
    """The national key directory: one holder directory per official, and ``online/``."""

    directory: pathlib.Path

    def official(self, n: int) -> pathlib.Path:
        return pathlib.Path(self.directory) / f"official-{n}"

    @property
    def online(self) -> pathlib.Path:
        return pathlib.Path(self.directory) / "online"

    def officials(self) -> tuple[pathlib.Path, ...]:
        """Every ``official-*`` directory holding a root key, in numeric order."""
        base = pathlib.Path(self.directory)
        found = [p for p in base.glob("official-*") if RoleKeyFile(p, "root").exists()] if base.is_dir() else []

        def order(path: pathlib.Path) -> tuple[int, str]:
            suffix = path.name.removeprefix("official-")
            return (int(suffix), "") if suffix.isdigit() else (1 << 30, suffix)

        return tuple(sorted(found, key=order))


@dataclass(frozen=True)
class ProvinceHome:
    """A province's working directory: key set, file keystore, TUF role keys."""

    code: str
    directory: pathlib.Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", province_code(self.code))
        object.__setattr__(self, "directory", pathlib.Path(self.directory))

    @property
    def key_set_path(self) -> pathlib.Path:
        return self.directory / KEY_SET_NAME

    @property
    def keystore_dir(self) -> pathlib.Path:
        return self.directory / "keystore"

    @property
    def tuf_dir(self) -> pathlib.Path:
        return self.directory / f"tuf-{self.code}"


# --------------------------------------------------------------------------- national: root and online roles


def check_root_threshold(threshold: int, keys: int) -> None:
    """A root threshold must be at least 2 and a strict majority: two disjoint groups of
    officials could otherwise sign two different roots."""
    if type(threshold) is not int or type(keys) is not int:
        raise PolicyViolation("root threshold and key count must be integers")
    if not 1 <= keys <= MAX_OFFICIALS:
        raise PolicyViolation(f"the root needs 1 to {MAX_OFFICIALS} keys, not {keys}")
    if threshold < 2 and keys > 1 or threshold > keys or 2 * threshold <= keys:
        raise PolicyViolation(
            f"root threshold {threshold} of {keys} is unsafe: it must be a majority (more than {keys // 2}), "
            "at least 2, and at most the number of keys")


def init_root(
    repo_dir: os.PathLike | str,
    national: NationalKeys,
    *,
    officials: int,
    threshold: int,
    passphrase: Passphrases,
    now: _dt.datetime,
    targets_threshold: int | None = None,
    config: RepoConfig = _DEFAULT_REPO_CONFIG,
) -> tuple[TrustRepository, Outcome]:
    """The national root ceremony: a root key and a national targets key for each of
    ``officials`` officials (each in its own holder directory, under its own
    passphrase), an online snapshot and timestamp key, and the repository at v1.

    Every official's keys sign v1; from then on ``threshold`` of them must sign
    a new root (and ``targets_threshold``, default ``threshold``, a new targets).
    """
    now = aware_utc(now)
    check_root_threshold(threshold, officials)
    targets_threshold = threshold if targets_threshold is None else targets_threshold
    if type(targets_threshold) is not int or not 1 <= targets_threshold <= officials:
        raise PolicyViolation(f"targets threshold must be between 1 and {officials}")
    repo_dir = pathlib.Path(repo_dir)
    if (repo_dir / "metadata").exists():
        raise TrustRepoError(f"{repo_dir} already holds a trust repository: refusing to overwrite it")
    holders = [national.official(n) for n in range(1, officials + 1)]
    taken = [str(RoleKeyFile(h, role).public_path) for h in [*holders, national.online]
             for role in ("root", "targets", "snapshot", "timestamp") if RoleKeyFile(h, role).exists()]
    if taken:
        raise PolicyViolation("role keys already exist (a previous ceremony?): " + ", ".join(taken))
    written: list[str] = []
    root_signers: list[Signer] = []
    targets_signers: list[Signer] = []
    for holder in holders:
        secret = passphrase(holder, new=True)
        for role, signers in (("root", root_signers), ("targets", targets_signers)):
            where = RoleKeyFile(holder, role)
            signers.append(generate_role_key(where, secret))
            written += [str(where.private_path), str(where.public_path)]
    secret = passphrase(national.online, new=True)
    online = {}
    for role in ("snapshot", "timestamp"):
        where = RoleKeyFile(national.online, role)
        online[role] = generate_role_key(where, secret)
        written += [str(where.private_path), str(where.public_path)]
    repo, change = TrustRepository.init(
        repo_dir, root_signers=root_signers, root_threshold=threshold, targets_signers=targets_signers,
        targets_threshold=targets_threshold, snapshot_signers=[online["snapshot"]],
        timestamp_signers=[online["timestamp"]], now=now, config=config)
    written += [str(repo_dir / path) for path in change.written]
    keyids = ", ".join(s.public_key.keyid[:12] for s in root_signers)
    summary = (f"national root created in {repo_dir}: {change.summary}\n"
               f"root keys ({threshold} of {officials}): {keyids}")
    return repo, Outcome(summary, tuple(written), change.warnings)


def load_officials(
    national: NationalKeys, role: str, passphrase: Passphrases, *, holders: Sequence[os.PathLike | str] | None = None
) -> list[Signer]:
    """The ``role`` (``root`` or ``targets``) signers of the officials present (``holders``,
    default every official directory); each holder's passphrase is asked once."""
    if role not in ("root", "targets"):
        raise PolicyViolation("officials hold root and targets keys only")
    directories = [pathlib.Path(h) for h in holders] if holders else list(national.officials())
    if not directories:
        raise KeyNotFound(f"no official directories with a root key under {national.directory}")
    signers: list[Signer] = []
    for holder in directories:
        where = RoleKeyFile(holder, role)
        if not where.exists():
            raise KeyNotFound(f"{holder} holds no {role} key")
        signers.append(load_role_signer(where, passphrase(holder, new=False)))
    return signers


def load_online(national: NationalKeys, passphrase: Passphrases) -> tuple[list[Signer], list[Signer]]:
    """The online (snapshot, timestamp) signers from ``<national-keys>/online``."""
    secret = passphrase(national.online, new=False)
    return ([load_role_signer(RoleKeyFile(national.online, "snapshot"), secret)],
            [load_role_signer(RoleKeyFile(national.online, "timestamp"), secret)])


def open_repository(
    repo_dir: os.PathLike | str, *, online: tuple[Sequence[Signer], Sequence[Signer]] | None = None,
    config: RepoConfig = _DEFAULT_REPO_CONFIG,
) -> TrustRepository:
    snapshot, timestamp = online or ((), ())
    return TrustRepository(repo_dir, snapshot_signers=snapshot, timestamp_signers=timestamp, config=config)


def publish(repo: TrustRepository, *, now: _dt.datetime, force: bool = False) -> Outcome:
    """Snapshot (if anything changed) and timestamp: makes written offline metadata visible."""
    with repo.lock():
        return _in_repo(repo, repo.publish(now=aware_utc(now), force=force))


def refresh_timestamp(repo: TrustRepository, *, now: _dt.datetime) -> Outcome:
    """A new timestamp over the published snapshot (at least daily; hourly by cron)."""
    with repo.lock():
        return _in_repo(repo, repo.refresh_timestamp(now=aware_utc(now)))


def _in_repo(repo: TrustRepository, change: Change) -> Outcome:
    return Outcome(change.summary, tuple(str(repo.directory / p) for p in change.written), change.warnings,
                   published=True)


def rotate_root(
    repo: TrustRepository,
    national: NationalKeys,
    *,
    old_holders: Sequence[os.PathLike | str] | None,
    new_holders: Sequence[os.PathLike | str] | None,
    passphrase: Passphrases,
    now: _dt.datetime,
    threshold: int | None = None,
) -> Outcome:
    """Root N+1 whose root keys are those of ``new_holders`` (a holder without a root key
    gets a new one), signed by a threshold of the current root's keys (``old_holders``
    present) and a threshold of the new keys. Without ``new_holders`` the same keys
    re-sign the root with a fresh expiry.

    New keys are written before the new root; if the root is then refused
    (too few signatures) they stay, and a second run uses them.
    """
    now = aware_utc(now)
    current = repo.root()
    old_signers = load_officials(national, "root", passphrase, holders=old_holders)
    current_ids = set(current.roles["root"].keyids)
    strangers = [str(h) for h, s in zip(old_holders or national.officials(), old_signers)
                 if s.public_key.keyid not in current_ids]
    if strangers:
        raise PolicyViolation("not keys of the current root: " + ", ".join(strangers))
    written: list[str] = []
    if new_holders:
        new_signers = []
        by_path = {pathlib.Path(h).resolve(): s for h, s in zip(old_holders or national.officials(), old_signers)}
        for holder in (pathlib.Path(h) for h in new_holders):
            where = RoleKeyFile(holder, "root")
            if holder.resolve() in by_path:
                new_signers.append(by_path[holder.resolve()])
            elif where.exists():
                new_signers.append(load_role_signer(where, passphrase(holder, new=False)))
            else:
                new_signers.append(generate_role_key(where, passphrase(holder, new=True)))
                written += [str(where.private_path), str(where.public_path)]
    else:
        new_signers = old_signers
        if len(old_signers) < len(current_ids):
            present = {s.public_key.keyid for s in old_signers}
            raise PolicyViolation(
                f"re-signing the root with its own keys needs all its keys as new keys; {len(current_ids - present)} "
                "are absent: name the holders of the new root with --new-official")
    count = len({s.public_key.keyid for s in new_signers})
    threshold = threshold or current.roles["root"].threshold
    check_root_threshold(threshold, count)
    with repo.lock():
        change = repo.rotate_root(old_root_signers=old_signers, new_root_signers=new_signers, threshold=threshold,
                                  now=now)
    written += [str(repo.directory / path) for path in change.written]
    removed = sorted(current_ids - {s.public_key.keyid for s in new_signers})
    added = sorted({s.public_key.keyid for s in new_signers} - current_ids)
    summary = (f"{change.summary}\nroot keys: added {', '.join(k[:12] for k in added) or 'none'}; "
               f"removed {', '.join(k[:12] for k in removed) or 'none'}; clients follow v{current.version} -> "
               f"v{current.version + 1} on their next refresh")
    return Outcome(summary, tuple(written), change.warnings)


# --------------------------------------------------------------------------- provinces (national side)


def add_province(
    repo: TrustRepository,
    home: ProvinceHome,
    *,
    targets_signers: Sequence[Signer],
    passphrase: Passphrases,
    now: _dt.datetime,
    tuf_keys: int = 3,
    tuf_threshold: int = 2,
    public_keys: Sequence[Key] = (),
    policy: RotationPolicy | None = None,
) -> Outcome:
    """Delegate ``provinces/<code>/...`` to a new role ``province-<code>``.

    Without ``public_keys``, ``tuf_keys`` role keys are generated in
    ``home.tuf_dir`` and sign an empty first version of the role at once (the
    province is visible, with no keys, after the next publish). With
    ``public_keys`` (the province generated its role keys itself and sent only
    the ``.pub.json`` files) the province must publish its role before verifiers
    see it. Creates ``home.key_set_path`` with ``policy`` if it does not exist.
    """
    now = aware_utc(now)
    code = home.code
    if code in repo.provinces():
        raise TrustRepoError(f"province {code} is already delegated")
    written: list[str] = []
    signers: list[Signer] | None = None
    keys: Sequence[Key | Signer]
    if public_keys:
        keys = list(public_keys)
        count = len({k.keyid for k in public_keys})
    else:
        if type(tuf_keys) is not int or not 1 <= tuf_keys <= 10:
            raise PolicyViolation("a province has 1 to 10 TUF role keys")
        existing = role_key_names(home.tuf_dir) if home.tuf_dir.exists() else ()
        if existing:
            raise PolicyViolation(f"{home.tuf_dir} already holds role keys ({', '.join(existing)}): "
                                  "pass their public keys instead")
        secret = passphrase(home.tuf_dir, new=True)
        signers = []
        for n in range(1, tuf_keys + 1):
            where = RoleKeyFile(home.tuf_dir, f"role-{n}")
            signers.append(generate_role_key(where, secret))
            written += [str(where.private_path), str(where.public_path)]
        keys = signers
        count = tuf_keys
    if type(tuf_threshold) is not int or not 1 <= tuf_threshold <= count:
        raise PolicyViolation(f"province threshold {tuf_threshold} must be between 1 and its {count} keys")
    with repo.lock():
        change = repo.add_province(code, keys, tuf_threshold, targets_signers=targets_signers, now=now,
                                   province_signers=signers)
    written += [str(repo.directory / path) for path in change.written]
    warnings = list(change.warnings)
    if signers is None:
        warnings.append(f"{province_role(code)} has no metadata yet: the province must run "
                        f"`healthcode-keys province publish {code}`")
    if not home.key_set_path.exists():
        home.directory.mkdir(parents=True, exist_ok=True)
        with key_set_lock(home.key_set_path):
            if not home.key_set_path.exists():
                save_key_set(home.key_set_path, ProvinceKeySet(province=code, policy=policy or RotationPolicy()))
                written.append(str(home.key_set_path))
    return Outcome(f"province {code} added: {change.summary}", tuple(written), tuple(warnings))


def province_signers(home: ProvinceHome, passphrase: Passphrases) -> list[Signer]:
    """Every TUF role key of the province in ``home.tuf_dir`` (one passphrase: the holder's)."""
    names = role_key_names(home.tuf_dir)
    if not names:
        raise KeyNotFound(f"no TUF role keys of province {home.code} in {home.tuf_dir}")
    secret = passphrase(home.tuf_dir, new=False)
    return [load_role_signer(RoleKeyFile(home.tuf_dir, name), secret) for name in names]


def read_role_public_keys(paths: Sequence[os.PathLike | str]) -> list[Key]:
    """Public keys from ``.pub.json`` files (a province's role keys sent to the national ceremony)."""
    keys: list[Key] = []
    for path in (pathlib.Path(p) for p in paths):
        if not path.name.endswith(".pub.json"):
            raise PolicyViolation(f"{path}: expected a .pub.json role public key file")
        keys.append(read_public_key(RoleKeyFile(path.parent, path.name[: -len(".pub.json")])))
    return keys
