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

:class:`~verifier.trust_sources.TufTrustSource` is the production source (the
national TUF trust repository through ``verifier.trustsync``, revocation through
``healthcode.revocation``). :class:`~verifier.trust_sources.DevBundleSource` is an
*unsigned* JSON bundle for development, tests and benchmarks only. Both live in
:mod:`verifier.trust_sources`.

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

import datetime as _dt
import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import healthcode as hc

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
            age = self.age
            assert age is not None, "assess() gives STALE only with an age"
            parts.append(f"信任数据已 {format_age_zh(age)} 未更新，同步前拒绝核验 / "
                         f"trust data {format_age(age)} old: codes refused until a sync")
        elif self.level is Freshness.AGING:
            age = self.age
            assert age is not None, "assess() gives AGING only with an age"
            parts.append(f"信任数据已 {format_age_zh(age)} 未更新，请尽快同步 / "
                         f"trust data {format_age(age)} old: sync soon")
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
    #: when this data was last verified (data is loaded only once a refresh verified it)
    last_verified_refresh: _dt.datetime
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

    def __init__(self, shards: Mapping[tuple[str, bytes], Iterable[int]]
                 | Iterable[tuple[tuple[str, bytes], Iterable[int]]] = ()) -> None:
        self._shards = {key: frozenset(serials) for key, serials in dict(shards).items()}

    def is_revoked(self, province: str, kid: bytes, serial: int) -> bool:
        shard = self._shards.get((province, kid))
        return shard is not None and serial in shard

    def __len__(self) -> int:
        return sum(len(s) for s in self._shards.values())


# --- a failed sync, in words -----------------------------------------------------------------

#: Transport failures by what their text says (urllib3, python-tuf, the OS): (pattern, 中文, English).
_TRANSPORT_CAUSES = (
    (re.compile(r"refresh deadline of ([\d.]+) s passed"), "镜像过慢，同步超过 {0} 秒时限",
     "mirror too slow: refresh deadline of {0} s passed"),
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
