"""Key ceremonies: the library that ``healthcode-keys`` and the issuer's KeyAdmin API are thin shells over.

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

import contextlib
import datetime as _dt
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata, Snapshot, Targets, Timestamp

import healthcode
from healthcode import Algorithm, CompromisePolicy, TrustedKey
from healthcode.errors import InvalidClaims
from healthcode.keylist import InvalidKeyList, KeyList, parse_key_list
from healthcode.model import parse_province
from shellkit.times import beijing, human_duration, iso_utc

from .errors import InvalidKeySet, KeyNotFound, NoActiveKey, PolicyViolation, TrustRepoError
from .keystore.base import Keystore
from .key_set_file import key_set_lock, load_key_set, save_key_set
from .lifecycle import PlanReason, ProvinceKeySet, RotationPlan
from .managed_key import KeyState, ManagedKey, RotationPolicy
from .signers import RoleKeyFile, generate_role_key, load_role_signer, read_public_key, role_key_names
from .trustrepo import KEY_LIST_NAME, Change, RepoConfig, TrustRepository, province_role

__all__ = [
    "Outcome",
    "Passphrases",
    "NationalKeys",
    "ProvinceHome",
    "ProvinceKeyAdmin",
    "KeyInfo",
    "RepoStatus",
    "init_root",
    "load_officials",
    "load_online",
    "open_repository",
    "add_province",
    "publish",
    "refresh_timestamp",
    "rotate_root",
    "repository_status",
    "published_key_list",
    "resolve_kid",
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
        merged = dict(key=self.key, key_set=self.key_set, serial=self.serial, role_version=self.role_version,
                      published=self.published)
        merged.update(values)
        return Outcome(f"{self.summary}\n{other.summary}", self.written + tuple(other.written),
                       self.warnings + tuple(other.warnings), **merged)


def _aware(now: _dt.datetime) -> _dt.datetime:
    if not isinstance(now, _dt.datetime) or now.tzinfo is None:
        raise PolicyViolation("now must be a timezone-aware datetime")
    return now.astimezone(_UTC)


def _province(code: str) -> str:
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
        object.__setattr__(self, "code", _province(self.code))
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
    now = _aware(now)
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
    root_signers, targets_signers = [], []
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
    signers = []
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
        return _in_repo(repo, repo.publish(now=_aware(now), force=force))


def refresh_timestamp(repo: TrustRepository, *, now: _dt.datetime) -> Outcome:
    """A new timestamp over the published snapshot (at least daily; hourly by cron)."""
    with repo.lock():
        return _in_repo(repo, repo.refresh_timestamp(now=_aware(now)))


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
    now = _aware(now)
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
    now = _aware(now)
    code = home.code
    if code in repo.provinces():
        raise TrustRepoError(f"province {code} is already delegated")
    written: list[str] = []
    signers: list[Signer] | None = None
    if public_keys:
        keys = list(public_keys)
        count = len({k.keyid for k in keys})
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
    keys = []
    for path in (pathlib.Path(p) for p in paths):
        if not path.name.endswith(".pub.json"):
            raise PolicyViolation(f"{path}: expected a .pub.json role public key file")
        keys.append(read_public_key(RoleKeyFile(path.parent, path.name[: -len(".pub.json")])))
    return keys


# --------------------------------------------------------------------------- a province's keys


def resolve_kid(key_set: ProvinceKeySet, kid: bytes | str) -> bytes:
    """The kid of ``key_set`` named by ``kid``: bytes, full hex, or a unique hex prefix of 8+ digits."""
    if isinstance(kid, bytes):
        key_set.find(kid)
        return kid
    text = kid.strip().lower()
    if len(text) < 8 or any(c not in "0123456789abcdef" for c in text):
        raise KeyNotFound(f"{kid!r} is not a kid: give at least 8 hex digits")
    matches = [k.kid for k in key_set.keys if k.kid.hex().startswith(text)]
    if not matches:
        raise KeyNotFound(f"province {key_set.province} has no key {text}")
    if len(matches) > 1:
        raise KeyNotFound(f"{text} names {len(matches)} keys of province {key_set.province}: give more digits")
    return matches[0]


@dataclass(frozen=True)
class KeyInfo:
    """One key as an admin sees it at ``now``: the managed key and its effective state."""

    key: ManagedKey
    state: KeyState
    signing: bool


def _describe(key: ManagedKey) -> str:
    return (f"key {key.kid.hex()} ({key.algorithm.value}"
            + (f", {key.handle.backend} keystore, label {key.handle.label!r}" if key.handle else "")
            + f"): signs {iso_utc(key.use_from)} .. {iso_utc(key.use_until)}, "
              f"verifies until {iso_utc(key.verify_until)}")


@dataclass
class ProvinceKeyAdmin:
    """A province's key operations over its key-set file, keystore and (for publishing) repository.

    The CLI builds one per command; the issuer's KeyAdmin service keeps one.
    ``on_change`` is called after each change of the key set (the issuer
    reloads its rotating signer at once instead of at the next file check).
    ``live_codes_signed`` returns the serving issuer's per-key counts (its
    rotating signer's ``codes_signed``): listings and plans then use them
    where they are ahead of the counts last written back to the file.
    """

    province: str
    key_set_path: pathlib.Path
    keystore: Keystore | None = None
    repo: TrustRepository | None = None
    tuf_signers: Sequence[Signer] = ()
    publish_snapshot: bool = False
    on_change: Callable[[ProvinceKeySet], None] | None = None
    policy_for_new: RotationPolicy | None = None
    live_codes_signed: Callable[[], Mapping[bytes, int]] | None = None

    def __post_init__(self) -> None:
        self.province = _province(self.province)
        self.key_set_path = pathlib.Path(self.key_set_path)

    # -- reading

    def key_set(self) -> ProvinceKeySet:
        key_set = load_key_set(self.key_set_path)
        if key_set.province != self.province:
            raise InvalidKeySet(f"{self.key_set_path} is province {key_set.province}'s, not {self.province}'s")
        return key_set

    def _with_live_counts(self, key_set: ProvinceKeySet) -> ProvinceKeySet:
        """``key_set`` with the serving issuer's live counts where they are ahead (same revision)."""
        return key_set if self.live_codes_signed is None else key_set.with_codes_signed(self.live_codes_signed())

    def list_keys(self, now: _dt.datetime) -> tuple[ProvinceKeySet, tuple[KeyInfo, ...]]:
        """The key set (with live counts, if any) and each key's state at ``now``."""
        key_set = self._with_live_counts(self.key_set())
        now = _aware(now)
        return key_set, tuple(KeyInfo(k, k.state_at(now), k.signs_at(now)) for k in key_set.keys)

    def plan(self, now: _dt.datetime) -> RotationPlan | None:
        """The next rotation due at ``now`` (live counts, if any: the 80 % cap plan sees them)."""
        return self._with_live_counts(self.key_set()).plan_next(_aware(now))

    # -- changing

    @contextlib.contextmanager
    def _changing(self) -> Iterator[list]:
        """Lock, load (or start) the key set; the block appends the new key set; save it."""
        self.key_set_path.parent.mkdir(parents=True, exist_ok=True)
        with key_set_lock(self.key_set_path):
            if self.key_set_path.exists():
                current = self.key_set()
            elif self.policy_for_new is not None:
                current = ProvinceKeySet(province=self.province, policy=self.policy_for_new)
            else:
                raise InvalidKeySet(f"no key set at {self.key_set_path}: add the province first "
                                    "(healthcode-keys province add)")
            box = [current]
            yield box
            if len(box) == 2 and box[1] is not current:
                save_key_set(self.key_set_path, box[1])
        if len(box) == 2 and self.on_change is not None:
            self.on_change(box[1])

    def add_key(
        self,
        now: _dt.datetime,
        *,
        algorithm: Algorithm = Algorithm.ES256,
        use_from: _dt.datetime | None = None,
        use_until: _dt.datetime | None = None,
        label: str | None = None,
        rotate: bool = False,
    ) -> Outcome:
        """Generate a key in the keystore and add it pre-published to the key set.

        When it signs from (unless ``use_from`` is given):

        * nothing signs now and nothing is scheduled (the first key, after a
          compromise): from ``now``, until the usage period or the next key;
        * ``rotate``: the successor :meth:`ProvinceKeySet.plan_next` proposes
          (from the end of the current key's use), or, if nothing is due yet,
          ``now + lead_time`` (an early rotation cuts the current key short);
        * otherwise ``now + lead_time``: published now, the key signs only when
          every verifier that syncs within the lead time already holds it.

        The window is checked against the policy *before* the key is
        generated, so a refused request leaves no orphan key in an HSM.
        """
        if self.keystore is None:
            raise PolicyViolation("no keystore to generate the key in")
        now = _aware(now)
        algorithm = Algorithm(algorithm)
        with self._changing() as box:
            key_set: ProvinceKeySet = box[0]
            policy = key_set.policy
            note = ""
            plan = self._with_live_counts(key_set).plan_next(now)
            if use_from is None:
                if plan is not None and (plan.reason is PlanReason.NO_SIGNING_KEY or rotate):
                    use_from, use_until = plan.use_from, use_until or plan.use_until
                    note = f" ({plan.reason.value} plan)"
                else:
                    use_from = now + policy.lead_time
                    note = " (now + lead time" + (": early rotation" if rotate else "") + ")"
            use_from = _aware(use_from)
            # (1) the policy's checks with a throwaway public key of the same algorithm
            probe = healthcode.generate_signing_key(algorithm).public_key()
            key_set.add_prepublished(probe, use_from=use_from, now=now, use_until=use_until, kid=b"\x00probe")
            # (2) the real key
            label = label or f"{self.province}-{algorithm.value.lower()}-{use_from:%Y%m%d}"
            handle = self.keystore.generate(algorithm, label=label)
            try:
                public = self.keystore.public_key(handle)
                new = key_set.add_prepublished(public, use_from=use_from, now=now, handle=handle,
                                               use_until=use_until)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.keystore.destroy(handle)
                raise
            box.append(new)
        key = new.find(handle.kid)
        warnings = []
        notice = key.use_from - now
        if key.use_from > now and notice < policy.lead_time:
            warnings.append(f"short notice: the key signs {human_duration(notice)} after now, less than the lead "
                            f"time of {human_duration(policy.lead_time)}; offline verifiers may not have it yet")
        for other in new.keys:
            if other.kid != key.kid and other.use_until == key.use_from and other.use_until != box[0].find(
                    other.kid).use_until:
                warnings.append(f"key {other.kid.hex()} now stops signing at {iso_utc(other.use_until)}")
        warnings.append(_publish_by(self.province, key, policy.lead_time, now))
        summary = f"{_describe(key)}{note}; pre-published in key set revision {new.revision}"
        return Outcome(summary, (str(self.key_set_path),), tuple(warnings), key=key, key_set=new)

    def mark_compromised(
        self, kid: bytes | str, *, since: _dt.datetime, now: _dt.datetime, reject_all: bool = False
    ) -> Outcome:
        """Mark a key compromised since ``since`` (not in the future): codes it signed at or after
        ``since`` (all of them with ``reject_all``) are rejected once verifiers have the published list."""
        now, since = _aware(now), _aware(since)
        if since > now:
            raise PolicyViolation(f"a compromise cannot start in the future ({iso_utc(since)} is after {iso_utc(now)})")
        policy = CompromisePolicy.REJECT_ALL if reject_all else CompromisePolicy.REJECT_FROM_COMPROMISE
        with self._changing() as box:
            kid = resolve_kid(box[0], kid)
            box.append(box[0].mark_compromised(kid, since, policy))
        new = box[1]
        key = new.find(kid)
        warnings = [f"verifiers reject it only after `healthcode-keys province publish {self.province}` "
                    "and their next refresh"]
        if _signing_key(new, now) is None:
            warnings.append("no key signs now: issuance stops until a new key is generated "
                            f"(`healthcode-keys province key generate {self.province}`)")
        what = "all its codes" if reject_all else f"codes signed at or after {iso_utc(since)}"
        return Outcome(f"key {kid.hex()} marked compromised since {iso_utc(since)}: {what} will be rejected; "
                       f"key set revision {new.revision}", (str(self.key_set_path),), tuple(warnings),
                       key=key, key_set=new)

    def retire(self, kid: bytes | str, *, now: _dt.datetime, force: bool = False) -> Outcome:
        """End the active key's use now (it verifies its codes for ``max_code_validity`` more).

        Refused, unless ``force``, when no key would sign afterwards (issuance would stop).
        """
        now = _aware(now)
        with self._changing() as box:
            kid = resolve_kid(box[0], kid)
            new = box[0].retire(kid, now)
            if _signing_key(new, now) is None and not force:
                upcoming = min((k for k in new.keys if k.state_at(now) is KeyState.PREPUBLISHED),
                               key=lambda k: k.use_from, default=None)
                raise PolicyViolation(
                    f"retiring key {kid.hex()} leaves no key signing now"
                    + (f" (the next one signs from {iso_utc(upcoming.use_from)})" if upcoming else "")
                    + ": issuance would stop; generate a successor first, or force it")
            box.append(new)
        key = new.find(kid)
        return Outcome(f"key {kid.hex()} retired at {iso_utc(key.use_until)}: verifies its codes until "
                       f"{iso_utc(key.verify_until)}; key set revision {new.revision}", (str(self.key_set_path),),
                       (f"publish it: `healthcode-keys province publish {self.province}`",), key=key, key_set=new)

    def expire(self, *, now: _dt.datetime, destroy: bool = False) -> Outcome:
        """Drop the keys past ``verify_until``; with ``destroy`` also delete their private keys."""
        now = _aware(now)
        with self._changing() as box:
            due = box[0].due_to_expire(now)
            if due:
                box.append(box[0].expire_due(now))
        if not due:
            return Outcome(f"no key of province {self.province} is past its verify_until", key_set=box[0])
        new = box[1]
        lines = [f"dropped key {k.kid.hex()} (verified until {iso_utc(k.verify_until)})" for k in due]
        warnings = []
        if destroy:
            if self.keystore is None:
                raise PolicyViolation("no keystore to destroy keys in")
            for k in due:
                if k.handle is None or k.handle.backend != self.keystore.backend:
                    warnings.append(f"key {k.kid.hex()} is not in this keystore: not destroyed")
                    continue
                try:
                    self.keystore.destroy(k.handle)
                    lines.append(f"destroyed private key {k.kid.hex()} ({k.handle.backend})")
                except KeyNotFound:
                    warnings.append(f"key {k.kid.hex()} was already gone from the keystore")
        return Outcome(f"{len(due)} key(s) expired; key set revision {new.revision}\n  " + "\n  ".join(lines),
                       (str(self.key_set_path),), tuple(warnings), key_set=new)

    def publish(self, *, now: _dt.datetime, snapshot: bool | None = None) -> Outcome:
        """Sign ``provinces/<code>/keys.json`` (the key set's ``trusted_keys(now)``, serial one
        above the last published) with the province's role keys; then, with ``snapshot``
        (default ``publish_snapshot``), snapshot and timestamp, so verifiers see it at their
        next refresh."""
        if self.repo is None:
            raise PolicyViolation("no trust repository configured to publish to")
        if not self.tuf_signers:
            raise PolicyViolation(f"no TUF role keys of province {self.province} to sign with")
        now = _aware(now)
        snapshot = self.publish_snapshot if snapshot is None else snapshot
        key_set = self.key_set()
        trusted = key_set.trusted_keys(now)
        warnings = []
        if _signing_key(key_set, now) is None:
            warnings.append(f"no key of province {self.province} signs now")
        with self.repo.lock():
            previous = published_key_list(self.repo, self.province)
            serial = 1 if previous is None else previous.serial + 1
            key_list = KeyList(province=self.province, serial=serial, keys=trusted)
            change = self.repo.publish_key_list(key_list, list(self.tuf_signers), now=now)
            role_version = self.repo.province_targets(self.province).version
            written = [str(self.repo.directory / p) for p in change.written]
            plural = "" if len(trusted) == 1 else "s"
            outcome = Outcome(
                f"province {self.province} key list serial {serial} ({len(trusted)} key{plural}: "
                + ", ".join(f"{t.kid.hex()} {_trusted_state(t, now)}" for t in trusted) + f")\n{change.summary}",
                tuple(written), tuple(warnings) + change.warnings, serial=serial, role_version=role_version,
                key_set=key_set)
            if snapshot:
                published = self.repo.publish(now=now)
                outcome = outcome.then(Outcome(published.summary,
                                               tuple(str(self.repo.directory / p) for p in published.written),
                                               published.warnings), published=True)
            else:
                outcome = outcome.then(Outcome("not visible to verifiers until the next `healthcode-keys publish`"))
        return outcome


def _publish_by(province: str, key: ManagedKey, lead_time: _dt.timedelta, now: _dt.datetime) -> str:
    """When a new key must be published: ``lead_time`` before it signs (its ``use_from``), so
    every verifier that syncs within the lead time holds it by then. Beijing time for people,
    with the time left."""
    run = f"not yet published: run `healthcode-keys province publish {province}`"
    lead = human_duration(lead_time)
    deadline = key.use_from - lead_time
    if key.use_from <= now:
        return (f"{run} now: the key signs from now on, and verifiers refuse its codes until they have "
                "synced the published key list")
    if deadline <= now:
        return (f"{run} now: the key signs from {beijing(key.use_from)} (in {human_duration(key.use_from - now)}), "
                f"and verifiers need the lead time of {lead} to fetch it")
    return (f"{run} before {beijing(deadline)} (in {human_duration(deadline - now)}): verifiers need the lead "
            f"time of {lead} to fetch it before it signs from {beijing(key.use_from)}")


def _signing_key(key_set: ProvinceKeySet, now: _dt.datetime) -> ManagedKey | None:
    try:
        return key_set.signing_key_at(now)
    except NoActiveKey:
        return None


def _trusted_state(key: TrustedKey, now: _dt.datetime) -> str:
    if key.status.value == "compromised":
        return "compromised"
    if now > key.verify_until:
        return "expired"
    if key.status.value == "retired" or now >= key.use_until:
        return "retired"
    return "prepublished" if now < key.use_from else "active"


def published_key_list(repo: TrustRepository, code: str) -> KeyList | None:
    """The newest key list the province signed (None before its first)."""
    targets = repo.province_targets(code)
    path = f"provinces/{code}/{KEY_LIST_NAME}"
    if targets is None or path not in targets.targets:
        return None
    try:
        return parse_key_list(repo.target_bytes(path, targets), province=code)
    except InvalidKeyList as exc:
        raise TrustRepoError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class RepoStatus:
    """What is in a repository at ``now``; :meth:`to_json` for scripts, :meth:`lines` for people."""

    directory: str
    now: _dt.datetime
    roles: Mapping[str, Mapping[str, Any]]
    provinces: Mapping[str, Mapping[str, Any]]
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "now": iso_utc(self.now), "roles": self.roles,
                "provinces": self.provinces, "warnings": list(self.warnings)}

    def lines(self) -> list[str]:
        out = [f"trust repository {self.directory} at {iso_utc(self.now)}"]
        for name, role in self.roles.items():
            keys = f"  {role['threshold']} of {role['keys']} keys" if "threshold" in role else ""
            unpublished = (f"  (v{role['newest_version']} written, not yet published)"
                           if role.get("newest_version", role["version"]) != role["version"] else "")
            out.append(f"  {name:<10} v{role['version']:<4} expires {role['expires']} "
                       f"({role['expires_in']}){keys}{unpublished}")
        listed = f" ({', '.join(self.provinces)})" if self.provinces else ""
        out.append(f"  provinces: {len(self.provinces)}{listed}")
        for code, info in self.provinces.items():
            head = (f"  province {code}: role v{info['role_version']} ({info['threshold']} of {info['keys']} keys"
                    f", expires {info['expires']})" if info.get("role_version") else
                    f"  province {code}: no metadata yet ({info['threshold']} of {info['keys']} keys)")
            if info.get("serial") is not None:
                head += f", key list serial {info['serial']}, {len(info['key_list'])} keys"
            out.append(head)
            for key in info.get("key_list", ()):
                extra = f", compromised since {key['compromised_since']}" if key["compromised_since"] else ""
                out.append(f"    {key['kid']} {key['algorithm']:<7} {key['state']:<12} signs {key['use_from']} .. "
                           f"{key['use_until']}, verifies until {key['verify_until']}{extra}")
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def _left(expires: _dt.datetime, now: _dt.datetime) -> str:
    delta = expires - now
    if delta.total_seconds() < 0:
        return "EXPIRED"
    if delta >= _dt.timedelta(days=2):
        return f"{delta.days}d left"
    return f"{int(delta.total_seconds() // 3600)}h{int(delta.total_seconds() % 3600 // 60):02d}m left"


def repository_status(repo: TrustRepository, *, now: _dt.datetime) -> RepoStatus:
    """Versions, expiry and keys of every role as published (with newer unpublished versions noted),
    the provinces, and their published key lists with each key's state at ``now``."""
    now = _aware(now)
    metadata = repo.directory / "metadata"
    warnings: list[str] = []
    timestamp_path = metadata / "timestamp.json"
    if not timestamp_path.exists():
        raise TrustRepoError(f"{repo.directory}: nothing published (no timestamp.json)")
    timestamp = Metadata[Timestamp].from_bytes(timestamp_path.read_bytes()).signed
    snapshot = Metadata[Snapshot].from_bytes(
        (metadata / f"{timestamp.snapshot_meta.version}.snapshot.json").read_bytes()).signed
    root = repo.root()
    newest_targets = repo.targets()
    published_targets_version = snapshot.meta["targets.json"].version
    targets = Metadata[Targets].from_bytes((metadata / f"{published_targets_version}.targets.json").read_bytes()).signed
    roles: dict[str, dict[str, Any]] = {}
    for name, signed, extra in (
        ("root", root, {}),
        ("targets", targets, {"newest_version": newest_targets.version}),
        ("snapshot", snapshot, {}),
        ("timestamp", timestamp, {}),
    ):
        entry: dict[str, Any] = {"version": signed.version, "expires": iso_utc(signed.expires),
                                 "expires_in": _left(signed.expires, now), **extra}
        if name in root.roles:
            entry.update(threshold=root.roles[name].threshold, keys=len(root.roles[name].keyids))
        roles[name] = entry
        if signed.expires <= now:
            warnings.append(f"{name} v{signed.version} EXPIRED at {iso_utc(signed.expires)}: verifiers see a freeze")
    if timestamp.expires - now < _dt.timedelta(hours=6) and timestamp.expires > now:
        warnings.append("timestamp expires within 6 hours: run `healthcode-keys timestamp refresh`")
    provinces: dict[str, dict[str, Any]] = {}
    delegations = targets.delegations.roles if targets.delegations and targets.delegations.roles else {}
    for role_name, delegated in delegations.items():
        code = role_name.removeprefix("province-")
        info: dict[str, Any] = {"threshold": delegated.threshold, "keys": len(delegated.keyids)}
        meta = snapshot.meta.get(f"{role_name}.json")
        if meta is not None:
            md = Metadata[Targets].from_bytes((metadata / f"{meta.version}.{role_name}.json").read_bytes()).signed
            info.update(role_version=meta.version, expires=iso_utc(md.expires))
            path = f"provinces/{code}/{KEY_LIST_NAME}"
            if path in md.targets:
                key_list = parse_key_list(repo.target_bytes(path, md), province=code)
                info["serial"] = key_list.serial
                info["key_list"] = [
                    {"kid": k.kid.hex(), "algorithm": k.public_key.algorithm.value, "state": _trusted_state(k, now),
                     "use_from": iso_utc(k.use_from), "use_until": iso_utc(k.use_until),
                     "verify_until": iso_utc(k.verify_until),
                     "compromised_since": iso_utc(k.compromised_since) if k.compromised_since else None}
                    for k in key_list.keys]
            if md.expires <= now:
                warnings.append(f"{role_name} v{meta.version} EXPIRED: the province must re-publish")
        provinces[code] = info
    return RepoStatus(str(repo.directory), now, roles, provinces, tuple(warnings))
