"""Trust data for the verifier: the seam to its source, and the freshness and clock policy.

The seam
--------
A :class:`TrustSource` has two methods, and the verifier needs nothing else:

* ``refresh(now, progress=None) -> SyncReport``: fetch and verify new trust
  data (keys and revocation) and persist it; raises :class:`SyncFailed` when the
  mirror cannot be reached and :class:`TrustDataRejected` when what it serves is
  bad (bad signature, rolled back, expired). Either way the data already
  persisted stays in force.
* ``load(now) -> TrustState``: the persisted, verified data: a keyring, a
  revocation checker (or None) and the time of the last verified refresh.
  Needs no network. Raises :class:`NoTrustData` before the first sync.

:class:`TufTrustSource` is the production source (the national TUF trust
repository through ``verifier.trustsync``, revocation through
``healthcode.revocation``). :class:`DevBundleSource` is an *unsigned* JSON
bundle for development, tests and benchmarks only.

The policy (pure; table-tested in ``tests/unit/test_verifier_policy.py``)
------------------------------------------------------------------------
:func:`assess` turns (system clock, last verified refresh) into a
:class:`TrustAssessment`, which is also the core's
:class:`~healthcode.TrustFreshness` hook:

1. **Clock floor.** The verifier never uses a time earlier than the last
   verified refresh. If the system clock is behind it, ``now`` is the last
   verified refresh time; if it is behind by more than the clock-skew
   tolerance the assessment is flagged ``clock_behind`` (shown to the
   operator and in the JSON). Codes are still checked, at the floor time:
   that is the earliest moment the terminal can prove, so a code cannot be
   made to look unexpired by winding the clock back past a refresh. (No
   in-run high-water mark is kept on purpose: one transient jump of the
   clock into the future would otherwise refuse every code until restart.)
2. **Age** = ``now - last_verified``.
3. **Level.** MISSING when there was never a verified refresh; STALE when the
   age is over ``max_age`` (codes refused with ``trust_data_stale``); AGING
   when over ``warn_age`` (the display warns; codes verify); else FRESH.
"""

from __future__ import annotations

import base64
import datetime as _dt
import enum
import hashlib
import json
import os
import pathlib
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import healthcode as hc
from shellkit.files import write_file_atomically

from .config import FreshnessPolicy
from .errors import NoTrustData, SyncFailed, TrustDataRejected, TrustError

__all__ = [
    "Freshness",
    "TrustAssessment",
    "assess",
    "format_age",
    "format_age_zh",
    "key_can_have_codes",
    "revocation_warnings",
    "sync_failure",
    "TrustState",
    "SyncReport",
    "Progress",
    "TrustSource",
    "TrustError",
    "SyncFailed",
    "TrustDataRejected",
    "NoTrustData",
    "SetRevocation",
    "DevBundleSource",
    "dev_bundle_bytes",
    "TufTrustSource",
]

_ZERO = _dt.timedelta(0)
_new = tuple.__new__  # builds a named tuple from a full tuple without its Python-level __new__


# --- the policy ----------------------------------------------------------------------------


class Freshness(str, enum.Enum):
    FRESH = "fresh"
    AGING = "aging"  # past warn_age: warn
    STALE = "stale"  # past max_age: refuse
    MISSING = "missing"  # never verified: refuse

    def __str__(self) -> str:
        return self.value


def format_age(age: _dt.timedelta) -> str:
    """A short, human duration: ``"45 min"``, ``"5 h 12 min"``, ``"3 d 4 h"``."""
    seconds = max(0, int(age.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


_ZH_UNITS = {"d": "天", "h": "小时", "min": "分钟", "s": "秒"}


def format_age_zh(age: _dt.timedelta) -> str:
    """:func:`format_age` in Chinese units: ``"3 天 4 小时"``, ``"45 分钟"``."""
    return " ".join(_ZH_UNITS.get(word, word) for word in format_age(age).split())


class TrustAssessment(NamedTuple):
    """The verifier's time and trust-data freshness for one operation.

    Implements the core's ``TrustFreshness`` hook (:meth:`stale_detail`).
    (An immutable named tuple rather than a frozen dataclass: one is built per
    scan, and a tuple is built several times faster.)
    """

    now: _dt.datetime
    system_now: _dt.datetime
    last_verified: _dt.datetime | None
    age: _dt.timedelta | None
    level: Freshness
    clock_behind: _dt.timedelta | None
    policy: FreshnessPolicy

    def stale_detail(self, now: _dt.datetime) -> str | None:
        """None while the data may be used at ``now``; else why not (the core's hook)."""
        if self.last_verified is None:
            return "no verified trust data: run a sync"
        age = now - self.last_verified
        if age > self.policy.max_age:
            return f"trust data is {format_age(age)} old; the limit is {format_age(self.policy.max_age)}"
        return None

    @property
    def warning(self) -> str | None:
        """The operator's warning, ``中文 / English``, or None when all is well."""
        parts = []
        if self.level is Freshness.MISSING:
            parts.append("无信任数据，需要同步 / no trust data: sync needed")
        elif self.level is Freshness.STALE:
            parts.append(f"信任数据已 {format_age_zh(self.age)} 未更新，同步前拒绝核验 / "
                         f"trust data {format_age(self.age)} old: codes refused until a sync")
        elif self.level is Freshness.AGING:
            parts.append(f"信任数据已 {format_age_zh(self.age)} 未更新，请尽快同步 / "
                         f"trust data {format_age(self.age)} old: sync soon")
        if self.clock_behind is not None:
            parts.append(f"本机时钟比上次验证时间慢 {format_age_zh(self.clock_behind)}，请校准 / "
                         f"system clock {format_age(self.clock_behind)} behind the last verified time")
        return "; ".join(parts) or None


def assess(
    policy: FreshnessPolicy,
    *,
    system_now: _dt.datetime,
    last_verified: _dt.datetime | None,
) -> TrustAssessment:
    """Apply the clock floor and the age limits (module docstring, steps 1-3)."""
    if system_now.tzinfo is None:
        raise ValueError("system_now must be timezone-aware")
    # (1) clock floor: never before the last verified refresh
    now = system_now
    behind = None
    if last_verified is not None and system_now < last_verified:
        now = last_verified
        if last_verified - system_now > policy.clock_skew:
            behind = last_verified - system_now
    # (2) age, (3) level
    if last_verified is None:
        return TrustAssessment(now, system_now, None, None, Freshness.MISSING, behind, policy)
    age = now - last_verified
    if age > policy.max_age:
        level = Freshness.STALE
    elif age > policy.warn_age:
        level = Freshness.AGING
    else:
        level = Freshness.FRESH
    return _new(TrustAssessment, (now, system_now, last_verified, age, level, behind, policy))  # per scan


# --- the seam ------------------------------------------------------------------------------
# Its errors (TrustError: SyncFailed, TrustDataRejected, NoTrustData) are in verifier.errors,
# under the package's root VerifierError, and re-exported here.


@dataclass(frozen=True, slots=True)
class TrustState:
    """Verified trust data, as loaded from the cache.

    ``warnings`` hold at one moment: a pre-published key without revocation data is
    no warning until its ``use_from``, a key is none once its ``verify_until`` has
    passed. ``recheck_at`` is the next such moment (None: never); past it the loop
    takes :meth:`at` (one comparison per clock reading, nothing per scan).
    """

    keyring: hc.Keyring
    revocation: hc.RevocationChecker | None
    last_verified_refresh: _dt.datetime | None
    #: what the operator should know about this data (e.g. keys without revocation data)
    warnings: tuple[str, ...] = ()
    #: the keys this data holds no revocation data for (whether or not they can have codes yet)
    uncovered: tuple[hc.TrustedKey, ...] = ()
    #: when ``warnings`` change next (see :meth:`at`)
    recheck_at: _dt.datetime | None = None

    def at(self, now: _dt.datetime) -> "TrustState":
        """This state with the revocation warnings of ``now`` (:func:`revocation_warnings`)."""
        warnings, recheck_at = revocation_warnings(self.uncovered, now)
        return TrustState(self.keyring, self.revocation, self.last_verified_refresh, warnings,
                          self.uncovered, recheck_at)


def key_can_have_codes(key: hc.TrustedKey, now: _dt.datetime) -> bool:
    """Whether a code signed by ``key`` can verify at ``now`` (so its revocations matter).

    Not when the key is not in use yet (``use_from`` after ``now``: it has signed
    nothing a terminal accepts, since a code issued before ``use_from`` is refused),
    not once its ``verify_until`` has passed (every code is expired), and not when it
    is compromised for all its codes (``reject_all``, or compromised since before
    its ``use_from``): every code is refused as ``key_compromised``.
    """
    if now < key.use_from or now > key.verify_until:
        return False
    if key.status is hc.KeyStatus.COMPROMISED and (
            key.compromise_policy is hc.CompromisePolicy.REJECT_ALL
            or (key.compromised_since is not None and key.compromised_since <= key.use_from)):
        return False
    return True


#: Keys named in one warning; more are counted.
_KEYS_NAMED = 4


def _key_name(key: hc.TrustedKey) -> str:
    """``33 浙江 kid edf0803d``: province and the kid's first 4 bytes (what the operator reports)."""
    return f"{key.province} {hc.PROVINCES.get(key.province, '?')} kid {key.kid.hex()[:8]}"


def revocation_warnings(
    uncovered: Iterable[hc.TrustedKey], now: _dt.datetime
) -> tuple[tuple[str, ...], _dt.datetime | None]:
    """(warnings, next moment they change) for the keys without revocation data, at ``now``.

    One warning naming the keys that can have codes at ``now`` (:func:`key_can_have_codes`),
    in Chinese and English; none when there are none. The next moment is the earliest
    ``use_from`` still ahead or ``verify_until`` not yet passed among ``uncovered``.
    """
    uncovered = tuple(uncovered)
    live = [key for key in uncovered if key_can_have_codes(key, now)]
    moments = [key.use_from for key in uncovered if key.use_from > now]
    moments += [key.verify_until + _ONE_SECOND for key in uncovered if key.verify_until >= now]
    recheck_at = min(moments) if moments else None
    if not live:
        return (), recheck_at
    names = ", ".join(_key_name(key) for key in live[:_KEYS_NAMED])
    if len(live) > _KEYS_NAMED:
        names += f" (+{len(live) - _KEYS_NAMED})"
    warning = (f"{len(live)} 个签名密钥无撤销数据，其已撤销的健康码无法识别 / "
               f"no revocation data for {len(live)} signing key(s): their revoked codes are not detected: "
               f"{names}")
    return (warning,), recheck_at


_ONE_SECOND = _dt.timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one refresh did: provinces whose keys or revocations changed, bytes fetched."""

    changed: tuple[str, ...]
    bytes_downloaded: int
    last_verified_refresh: _dt.datetime | None
    notes: tuple[str, ...] = ()


#: ``progress(done_bytes, total_bytes_or_None)``, called as a download advances.
Progress = Callable[[int, "int | None"], None]


class TrustSource(Protocol):
    """Where trust data comes from (see the module docstring for the contract)."""

    def refresh(self, now: _dt.datetime, *, progress: Progress | None = None) -> SyncReport: ...

    def load(self, now: _dt.datetime) -> TrustState: ...


class SetRevocation:
    """An in-memory :class:`~healthcode.RevocationChecker` over sets of serials per (province, kid)."""

    __slots__ = ("_shards",)

    def __init__(self, shards: Mapping[tuple[str, bytes], Iterable[int]] = ()) -> None:
        self._shards = {key: frozenset(serials) for key, serials in dict(shards).items()}

    def is_revoked(self, province: str, kid: bytes, serial: int) -> bool:
        shard = self._shards.get((province, kid))
        return shard is not None and serial in shard

    def __len__(self) -> int:
        return sum(len(s) for s in self._shards.values())


# --- a failed sync, in words -----------------------------------------------------------------

#: Transport failures by what their text says (urllib3, python-tuf, the OS): (pattern, 中文, English).
_TRANSPORT_CAUSES = (
    (re.compile(r"HTTP (\d{3})"), "镜像返回 HTTP {0}", "mirror answered HTTP {0}"),
    (re.compile(r"connection refused", re.I), "镜像拒绝连接", "mirror refused the connection"),
    (re.compile(r"name or service not known|nodename nor servname|getaddrinfo|name resolution|"
                r"temporary failure in name", re.I), "镜像主机名无法解析", "mirror host name not found"),
    (re.compile(r"timed? ?out", re.I), "连接镜像超时", "mirror timed out"),
    (re.compile(r"network is unreachable|no route to host", re.I), "网络不可达", "network unreachable"),
    (re.compile(r"certificate|ssl|tls", re.I), "镜像证书验证失败", "mirror certificate not trusted"),
    (re.compile(r"no such file or directory|not found", re.I), "找不到信任数据源", "trust source not found"),
    (re.compile(r"permission denied", re.I), "无权读取信任数据源", "permission denied reading the trust source"),
    (re.compile(r"no trust (?:mirror|source) configured", re.I), "未配置信任数据源 (--source)",
     "no trust source configured (--source)"),
)
_URLLIB3_NOISE = re.compile(r"\s*\((?:Caused by|Failed to establish).*$|\s*HTTP(?:S)?ConnectionPool\(.*$", re.S)
_MAX_CAUSE = 160


def sync_failure(exc: BaseException) -> str:
    """``trust sync failed / 信任数据同步失败: <short cause>``: one line for the operator and the HIS.

    A transport failure (:class:`SyncFailed`, or anything else a source raises)
    is named by its cause (connection refused, host not found, timed out,
    HTTP status...) in both languages, never by the raw urllib3 exception text;
    rejected data (:class:`TrustDataRejected`) says so, with the first clause of
    why (in English: it names TUF roles and files). Times stay UTC here (the JSON
    line carries this text); the display shows them in Beijing time.
    """
    text = " ".join(str(exc).split())
    if isinstance(exc, TrustDataRejected):
        short = _URLLIB3_NOISE.sub("", text)[:_MAX_CAUSE]
        return f"trust sync failed / 信任数据同步失败: 镜像数据未通过验证 / mirror data rejected: {short}"
    for pattern, zh, en in _TRANSPORT_CAUSES:
        match = pattern.search(text)
        if match:
            return f"trust sync failed / 信任数据同步失败: {zh.format(*match.groups())} / {en.format(*match.groups())}"
    short = _URLLIB3_NOISE.sub("", text).rsplit(": ", 1)[-1][:_MAX_CAUSE] or type(exc).__name__
    return f"trust sync failed / 信任数据同步失败: 无法读取信任数据 / cannot fetch trust data: {short}"


# --- the development bundle ------------------------------------------------------------------

DEV_BUNDLE_FORMAT = "healthcode-dev-trust-bundle/1"
DEV_BUNDLE_NAME = "bundle.json"
_STATE_NAME = "state.json"


def _iso(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _parse_time(value: str) -> _dt.datetime:
    moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("times must carry a zone")
    return moment


def dev_bundle_bytes(
    keys: Iterable[hc.TrustedKey],
    *,
    version: int,
    revoked: Mapping[tuple[str, bytes], Iterable[int]] | None = None,
) -> bytes:
    """Serialise a development trust bundle (what a test mirror serves)."""
    entries = []
    for key in keys:
        entries.append({
            "province": key.province,
            "kid": key.kid.hex(),
            "public_key": base64.b64encode(key.public_key.spki_der()).decode("ascii"),
            "use_from": _iso(key.use_from),
            "use_until": _iso(key.use_until),
            "verify_until": _iso(key.verify_until),
            "status": key.status.value,
            "compromised_since": _iso(key.compromised_since) if key.compromised_since else None,
            "compromise_policy": key.compromise_policy.value,
        })
    shards = [
        {"province": province, "kid": kid.hex(), "serials": sorted(set(serials))}
        for (province, kid), serials in sorted((revoked or {}).items())
    ]
    return json.dumps(
        {"format": DEV_BUNDLE_FORMAT, "version": version, "keys": entries, "revoked": shards},
        sort_keys=True, separators=(",", ":"),
    ).encode()


def _parse_dev_bundle(raw: bytes) -> tuple[int, hc.Keyring, SetRevocation, dict[str, str]]:
    """(version, keyring, revocation, digest per province) or TrustDataRejected."""
    try:
        doc = json.loads(raw)
        if doc.get("format") != DEV_BUNDLE_FORMAT:
            raise ValueError(f"not a {DEV_BUNDLE_FORMAT} document")
        version = doc["version"]
        if type(version) is not int or version < 1:
            raise ValueError("version must be a positive integer")
        keys = []
        per_province: dict[str, list] = {}
        for entry in doc["keys"]:
            keys.append(hc.TrustedKey(
                kid=bytes.fromhex(entry["kid"]),
                province=entry["province"],
                public_key=hc.load_public_key_der(base64.b64decode(entry["public_key"], validate=True)),
                use_from=_parse_time(entry["use_from"]),
                use_until=_parse_time(entry["use_until"]),
                verify_until=_parse_time(entry["verify_until"]),
                status=hc.KeyStatus(entry["status"]),
                compromised_since=_parse_time(entry["compromised_since"]) if entry["compromised_since"] else None,
                compromise_policy=hc.CompromisePolicy(entry["compromise_policy"]),
            ))
            per_province.setdefault(entry["province"], []).append(entry)
        shards = {}
        for shard in doc["revoked"]:
            serials = shard["serials"]
            if not all(type(s) is int and 0 <= s < 2**64 for s in serials):
                raise ValueError("serials must be unsigned 64-bit integers")
            shards[(shard["province"], bytes.fromhex(shard["kid"]))] = serials
            per_province.setdefault(shard["province"], []).append(shard)
        keyring = hc.Keyring(keys)
    except (ValueError, KeyError, TypeError, AttributeError, hc.HealthCodeError) as exc:
        raise TrustDataRejected(f"bad trust bundle: {exc}") from None
    digests = {
        province: hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
        for province, items in per_province.items()
    }
    return version, keyring, SetRevocation(shards), digests


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Replace ``path`` atomically (owner-only, fsynced, no temp file left behind on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, data)


class DevBundleSource:
    """An UNSIGNED JSON trust bundle: for development, tests and benchmarks only.

    ``source`` is a directory holding ``bundle.json``, a file path, or an
    ``http(s)://`` URL of the bundle. The verified copy and the time of the
    last successful refresh are kept in ``cache_dir``. A bundle with a lower
    version than the cached one is refused (rollback), as the TUF source does.
    It has no signature: anyone who can write the source can change the trust.
    """

    def __init__(self, cache_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None = None,
                 *, max_bytes: int = 256 * 1024 * 1024, timeout: float = 30.0) -> None:
        self.cache_dir = pathlib.Path(cache_dir)
        self.source = source
        self.max_bytes = max_bytes
        self.timeout = timeout

    def _fetch(self, progress: Progress | None) -> bytes:
        source = str(self.source)
        scheme = urllib.parse.urlsplit(source).scheme
        try:
            if scheme in ("http", "https", "file"):
                with urllib.request.urlopen(source, timeout=self.timeout) as response:
                    length = response.headers.get("Content-Length")
                    return self._read_capped(response, int(length) if length else None, progress)
            path = pathlib.Path(source)
            if path.is_dir():
                path = path / DEV_BUNDLE_NAME
            with open(path, "rb") as f:
                return self._read_capped(f, os.fstat(f.fileno()).st_size, progress)
        except (OSError, ValueError) as exc:
            raise SyncFailed(f"cannot read trust bundle from {source}: {exc}") from None

    def _read_capped(self, stream, total: int | None, progress: Progress | None) -> bytes:
        if total is not None and total > self.max_bytes:
            raise TrustDataRejected(f"trust bundle is {total} bytes; the limit is {self.max_bytes}")
        chunks, done = [], 0
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                return b"".join(chunks)
            done += len(chunk)
            if done > self.max_bytes:
                raise TrustDataRejected(f"trust bundle is over {self.max_bytes} bytes")
            chunks.append(chunk)
            if progress is not None:
                progress(done, total)

    def _cached(self) -> tuple[bytes, dict] | None:
        try:
            raw = (self.cache_dir / DEV_BUNDLE_NAME).read_bytes()
            state = json.loads((self.cache_dir / _STATE_NAME).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise TrustDataRejected(f"cached trust data unreadable: {exc}") from None
        return raw, state

    def refresh(self, now: _dt.datetime, *, progress: Progress | None = None) -> SyncReport:
        if self.source is None:
            raise SyncFailed("no trust source configured")
        raw = self._fetch(progress)
        version, _, _, digests = _parse_dev_bundle(raw)
        try:
            cached = self._cached()
            old_version, _, _, old_digests = _parse_dev_bundle(cached[0]) if cached else (0, None, None, {})
        except TrustDataRejected:  # a corrupt cache is replaced by good data, never a reason to stay stuck
            cached, old_version, old_digests = None, 0, {}
        if cached is not None:
            if version < old_version:
                raise TrustDataRejected(f"rollback refused: version {version} is older than {old_version}")
        changed = tuple(sorted(p for p in digests.keys() | old_digests.keys()
                               if digests.get(p) != old_digests.get(p)))
        if cached is None or cached[0] != raw:
            _write_atomic(self.cache_dir / DEV_BUNDLE_NAME, raw)
        _write_atomic(self.cache_dir / _STATE_NAME,
                      json.dumps({"version": version, "last_verified_refresh": _iso(now)}).encode())
        return SyncReport(changed, len(raw), now, (f"version {version}",))

    def load(self, now: _dt.datetime) -> TrustState:
        cached = self._cached()
        if cached is None:
            raise NoTrustData(f"no trust data in {self.cache_dir}: run a sync")
        raw, state = cached
        _, keyring, revocation, _ = _parse_dev_bundle(raw)
        try:
            refreshed = _parse_time(state["last_verified_refresh"])
        except (KeyError, ValueError, TypeError, AttributeError):
            raise TrustDataRejected("cached trust state is corrupt") from None
        return TrustState(keyring, revocation, refreshed)


# --- the production source: TUF trust repository + revocation -------------------------------


class TufTrustSource:
    """The national TUF trust repository and its revocation data, behind the seam.

    Everything is ``verifier.trustsync.TrustSync``: ``refresh`` verifies the
    keys (python-tuf, province delegations) and then brings every live
    revocation shard up to date (``verifier.revocation_sync``: deltas or the
    snapshot, each shard committed on its own); ``load_cached`` and
    ``load_revocation`` re-verify the committed data from the bootstrap root,
    offline. This class maps their errors and reports onto the seam's.

    Layout under ``trust_dir``: ``metadata/`` (python-tuf's verified cache),
    ``targets/`` (trustsync's committed state, objects and revocation state)
    and ``bootstrap-root.json``: the root this terminal was set up with, given
    once with ``--root`` for the first sync and pinned there once it succeeds
    (root rotation then follows the signed chain).

    Live keys without revocation data (never published, or a shard whose
    cache failed verification) are a warning of the state: their revoked
    codes cannot be detected, and the operator and the HIS are told so.
    """

    ROOT_NAME = "bootstrap-root.json"

    def __init__(self, trust_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None, *,
                 bootstrap_root: str | os.PathLike[str] | None = None) -> None:
        from . import trustsync

        self._ts = trustsync
        self.trust_dir = pathlib.Path(trust_dir)
        self.source = os.fspath(source) if source is not None else None
        self._given_root = pathlib.Path(bootstrap_root) if bootstrap_root is not None else None
        self._client_cache = None

    @staticmethod
    def available() -> str | None:
        """None when usable; else what is missing."""
        try:
            from . import trustsync  # noqa: F401
        except ImportError as exc:
            return f"cannot import the trust sync: {exc}"
        return None

    def _root(self) -> bytes:
        pinned = self.trust_dir / self.ROOT_NAME
        try:
            return pinned.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TrustDataRejected(f"cannot read {pinned}: {exc}") from None
        if self._given_root is None:
            raise NoTrustData("no bootstrap root: give --root root.json for the first sync")
        try:
            return self._given_root.read_bytes()
        except OSError as exc:
            raise SyncFailed(f"cannot read the bootstrap root {self._given_root}: {exc}") from None

    def _client(self):
        if self._client_cache is not None:
            return self._client_cache
        ts = self._ts
        source = self.source if self.source is not None else self.trust_dir / "no-mirror"
        try:
            client = ts.TrustSync(self.trust_dir / "metadata", self.trust_dir / "targets", source, self._root())
        except ts.SyncError as exc:
            raise TrustDataRejected(str(exc)) from None
        except OSError as exc:
            raise TrustDataRejected(f"trust store unusable: {exc}") from None
        self._client_cache = client  # one per directory, like python-tuf
        return client

    def refresh(self, now: _dt.datetime, *, progress: Progress | None = None) -> SyncReport:
        ts = self._ts
        if self.source is None:
            raise SyncFailed("no trust mirror configured (--source URL|DIR)")
        client = self._client()
        try:
            result = client.refresh(now)
        except ts.MirrorUnavailable as exc:
            raise SyncFailed(str(exc)) from None
        except ts.SyncError as exc:  # bad, rolled back or frozen data
            raise TrustDataRejected(str(exc)) from None
        pinned = self.trust_dir / self.ROOT_NAME
        if not pinned.exists():
            _write_atomic(pinned, self._root())
        if progress is not None:  # trustsync reports no progress while fetching: one step at the end
            progress(result.bytes_transferred, result.bytes_transferred)
        notes = [f"root v{result.root_version}", f"{result.files_transferred} files"]
        notes += [f"province {code} kept its last good keys: {error}" for code, error in sorted(result.failed.items())]
        notes += [f"province {code} removed" for code in result.removed]
        changed = set(result.changed) | set(result.removed)
        revocation = getattr(result, "revocation", None)
        if revocation is not None:
            changed |= {shard.province for shard in revocation.changed}
            if revocation.changed:
                notes.append(f"revocation: {len(revocation.changed)} shard(s) updated")
            notes += [f"revocation {shard} kept its last good state" for shard in revocation.failed]
            if revocation.error:
                notes.append(f"revocation not committed: {revocation.error}")
        return SyncReport(tuple(sorted(changed)), result.bytes_transferred, result.last_verified_refresh,
                          tuple(notes))

    def load(self, now: _dt.datetime) -> TrustState:
        ts = self._ts
        client = self._client()
        try:
            keyring, last = client.load_cached(now)
            revocation = client.load_revocation(now) if hasattr(client, "load_revocation") else None
        except ts.NotSynced as exc:
            raise NoTrustData(str(exc)) from None
        except ts.SyncError as exc:
            raise TrustDataRejected(str(exc)) from None
        if revocation is None:
            uncovered = tuple(keyring)
        else:
            missing = set(revocation.missing(keyring, now=now))
            uncovered = tuple(key for key in keyring if (key.province, key.kid) in missing)
        return TrustState(keyring, revocation, last, uncovered=uncovered).at(now)
