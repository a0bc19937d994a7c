"""The key lifecycle of one province, and the issuer's rotating signer.

**The pure part** (time is always a parameter, nothing here reads a clock or a
file): a :class:`ProvinceKeySet` is a frozen value holding the province's
:class:`ManagedKey` entries and its :class:`RotationPolicy`; every operation
returns a new value with ``revision`` one higher. A key goes through::

    pre-published --use_from--> active (signs) --use_until--> retired --verify_until--> expired (dropped)
          \\___________________________\\__________________________\\
                                            compromised since T (codes signed at or after T refused;
                                            CompromisePolicy.REJECT_ALL refuses all of them)

* Signing windows are half-open, ``use_from <= now < use_until``, and never
  overlap: at any moment at most one key signs. A pre-published key starts
  signing when its ``use_from`` comes, without anyone having to call
  :meth:`ProvinceKeySet.activate_due` at that instant (which only brings the
  recorded status up to date).
* ``verify_until >= use_until + policy.max_code_validity``: a retired key
  keeps verifying what it signed until the last such code expires.
* A key is published (it is in :meth:`ProvinceKeySet.trusted_keys`, with a
  future ``use_from``) at least ``policy.lead_time`` before it signs, so
  offline verifiers already hold it. Shorter notice is accepted only where the
  province would otherwise have no signing key (first key, after a compromise,
  a rotation run too late).
* Marking a key compromised since ``T`` also ends its use at ``T``.
* kids are unique within the province (revocation shards are named by them).

Times are UTC and whole seconds (a code's ``iat`` is whole seconds), floored
on construction.

Persisted as JSON (:meth:`ProvinceKeySet.to_bytes` / ``from_bytes``); the file
helpers :func:`load_key_set` / :func:`save_key_set` are three lines around them
and write atomically. Every read-modify-write of a key-set file (the ceremonies,
KeyAdmin, the issuer's count write-back) holds :func:`key_set_lock`.

**The shell** at the end: :class:`RotatingSigner` gives
:class:`issuer.issuance.CodeIssuer` its ``signer_for(now)``. It preloads the
signers of the keys that sign now or later, re-reads the key-set file when it
changes (:meth:`RotatingSigner.refresh`, driven every few seconds and on
SIGHUP by :meth:`RotatingSigner.watch`), so a rotation while serving is a
dictionary lookup and loses no request, and it enforces the per-key code cap.
It writes its per-key counts back into the key-set file
(:meth:`RotatingSigner.record_codes_signed`: from the watcher, at most every
``record_every`` seconds, and once more at shutdown), so ``healthcode-keys
province key list``, KeyAdmin and :meth:`ProvinceKeySet.plan_next` see them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import enum
import json
import logging
import os
import pathlib
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

from healthcode import CompromisePolicy, KeyStatus, TrustedKey, VerificationKey, load_public_key_der
from healthcode.errors import HealthCodeError, InvalidClaims
from healthcode.model import from_epoch, parse_province, to_epoch
from shellkit.files import file_lock, write_file_atomically

from .errors import (
    CodeCapReached,
    InvalidKeySet,
    KeyManagementError,
    KeyNotFound,
    NoActiveKey,
    PolicyViolation,
)
from .keystore.base import KeyHandle, Keystore, KeystoreSigner

__all__ = [
    "KeyState",
    "RotationPolicy",
    "ManagedKey",
    "PlanReason",
    "RotationPlan",
    "ProvinceKeySet",
    "load_key_set",
    "save_key_set",
    "key_set_lock",
    "RotatingSigner",
    "MAX_KEYS",
    "MAX_KEY_SET_BYTES",
]

log = logging.getLogger("keys.lifecycle")

MAX_KEYS = 64
MAX_KEY_SET_BYTES = 1024 * 1024
_FORMAT = "healthcode-province-key-set"
_DAY = _dt.timedelta(days=1)


def _moment(value: object, name: str) -> _dt.datetime:
    """An aware datetime, in UTC, floored to whole seconds."""
    if not isinstance(value, _dt.datetime) or value.tzinfo is None:
        raise PolicyViolation(f"{name} must be a timezone-aware datetime")
    return from_epoch(to_epoch(value))


def _text(moment: _dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _parse_moment(text: object, name: str) -> _dt.datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise InvalidKeySet(f"{name} must be an RFC 3339 UTC time ending in Z")
    try:
        return _moment(_dt.datetime.fromisoformat(text[:-1] + "+00:00"), name)
    except ValueError:
        raise InvalidKeySet(f"{name} is not a valid time") from None


def _kid_text(kid: bytes) -> str:
    return kid.hex()


# --------------------------------------------------------------------------- values


class KeyState(str, enum.Enum):
    """Where a key is in its life. ``EXPIRED`` is only ever computed: expired keys are dropped."""

    PREPUBLISHED = "prepublished"
    ACTIVE = "active"
    RETIRED = "retired"
    COMPROMISED = "compromised"
    EXPIRED = "expired"

    def __str__(self) -> str:
        return self.value


_STORED_STATES = (KeyState.PREPUBLISHED, KeyState.ACTIVE, KeyState.RETIRED, KeyState.COMPROMISED)


@dataclass(frozen=True, kw_only=True)
class RotationPolicy:
    """How a province rotates. All durations are ``timedelta``; every field is configurable.

    * ``usage_period``: the longest a key signs (90 days);
    * ``max_codes_per_key``: a hard cap on codes one key signs (10 million);
    * ``lead_time``: how long before its first code a key is published (7 days);
    * ``max_code_validity``: the longest validity of a code (7 days), the tail
      a retired key keeps verifying;
    * ``plan_margin``: how much earlier than ``lead_time`` :meth:`ProvinceKeySet.plan_next`
      proposes the next key, so a rotation job run daily or weekly still
      publishes it ``lead_time`` ahead (7 days);
    * ``cap_plan_fraction``: the share of the cap after which the next key is
      planned early (0.8).
    """

    usage_period: _dt.timedelta = _dt.timedelta(days=90)
    max_codes_per_key: int = 10_000_000
    lead_time: _dt.timedelta = _dt.timedelta(days=7)
    max_code_validity: _dt.timedelta = _dt.timedelta(days=7)
    plan_margin: _dt.timedelta = _dt.timedelta(days=7)
    cap_plan_fraction: float = 0.8

    def __post_init__(self) -> None:
        for name in ("usage_period", "lead_time", "max_code_validity", "plan_margin"):
            value = getattr(self, name)
            if not isinstance(value, _dt.timedelta) or value < _dt.timedelta(0) or value.microseconds:
                raise PolicyViolation(f"{name} must be a non-negative whole number of seconds")
        if self.usage_period < _dt.timedelta(seconds=1) or self.max_code_validity < _dt.timedelta(seconds=1):
            raise PolicyViolation("usage_period and max_code_validity must be at least one second")
        if self.lead_time + self.plan_margin >= self.usage_period:
            raise PolicyViolation("lead_time + plan_margin must be shorter than usage_period")
        if type(self.max_codes_per_key) is not int or self.max_codes_per_key < 1:
            raise PolicyViolation("max_codes_per_key must be a positive integer")
        if not isinstance(self.cap_plan_fraction, (int, float)) or not 0 < self.cap_plan_fraction <= 1:
            raise PolicyViolation("cap_plan_fraction must be in (0, 1]")

    def to_json(self) -> dict[str, Any]:
        return {
            "usage_period_s": int(self.usage_period.total_seconds()),
            "max_codes_per_key": self.max_codes_per_key,
            "lead_time_s": int(self.lead_time.total_seconds()),
            "max_code_validity_s": int(self.max_code_validity.total_seconds()),
            "plan_margin_s": int(self.plan_margin.total_seconds()),
            "cap_plan_fraction": self.cap_plan_fraction,
        }

    @classmethod
    def from_json(cls, data: Any) -> "RotationPolicy":
        names = {"usage_period_s", "max_codes_per_key", "lead_time_s", "max_code_validity_s", "plan_margin_s",
                 "cap_plan_fraction"}
        if not isinstance(data, dict) or set(data) != names:
            raise InvalidKeySet("policy has exactly: " + ", ".join(sorted(names)))
        for name in names - {"cap_plan_fraction"}:
            if type(data[name]) is not int:
                raise InvalidKeySet(f"policy.{name} must be an integer")
        if type(data["cap_plan_fraction"]) not in (int, float):
            raise InvalidKeySet("policy.cap_plan_fraction must be a number")
        seconds = lambda name: _dt.timedelta(seconds=data[name])  # noqa: E731
        try:
            return cls(usage_period=seconds("usage_period_s"), max_codes_per_key=data["max_codes_per_key"],
                       lead_time=seconds("lead_time_s"), max_code_validity=seconds("max_code_validity_s"),
                       plan_margin=seconds("plan_margin_s"), cap_plan_fraction=data["cap_plan_fraction"])
        except (PolicyViolation, OverflowError) as exc:
            raise InvalidKeySet(f"policy: {exc.detail if isinstance(exc, PolicyViolation) else exc}") from None


@dataclass(frozen=True, kw_only=True)
class ManagedKey:
    """One key of a province with its windows, status and (issuer side) keystore handle.

    ``handle`` is None where the private key is not ours to hold (a key set
    rebuilt from published data). ``codes_signed`` is the last count the
    issuer wrote back (:meth:`RotatingSigner.record_codes_signed`), for
    :meth:`ProvinceKeySet.plan_next` and the admins' listings; it only grows.
    """

    kid: bytes
    public_key: VerificationKey
    use_from: _dt.datetime
    use_until: _dt.datetime
    verify_until: _dt.datetime
    status: KeyState = KeyState.PREPUBLISHED
    handle: KeyHandle | None = None
    compromised_since: _dt.datetime | None = None
    compromise_policy: CompromisePolicy = CompromisePolicy.REJECT_FROM_COMPROMISE
    codes_signed: int = 0
    _from_s: int = field(init=False, repr=False, compare=False)
    _until_s: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kid, bytes) or not 1 <= len(self.kid) <= 32:
            raise PolicyViolation("kid must be 1 to 32 bytes")
        if not isinstance(self.public_key, VerificationKey):
            raise PolicyViolation("public_key must be a healthcode VerificationKey")
        for name in ("use_from", "use_until", "verify_until"):
            object.__setattr__(self, name, _moment(getattr(self, name), name))
        status = KeyState(self.status)
        if status not in _STORED_STATES:
            raise PolicyViolation("an expired key is dropped, not stored")
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "compromise_policy", CompromisePolicy(self.compromise_policy))
        if not self.use_from <= self.use_until <= self.verify_until:
            raise PolicyViolation(f"key {_kid_text(self.kid)}: need use_from <= use_until <= verify_until")
        if (status is KeyState.COMPROMISED) != (self.compromised_since is not None):
            raise PolicyViolation(f"key {_kid_text(self.kid)}: compromised_since goes with status compromised")
        if self.compromised_since is not None:
            object.__setattr__(self, "compromised_since", _moment(self.compromised_since, "compromised_since"))
        if self.handle is not None:
            if not isinstance(self.handle, KeyHandle):
                raise PolicyViolation("handle must be a KeyHandle")
            if self.handle.kid != self.kid or self.handle.algorithm is not self.public_key.algorithm:
                raise PolicyViolation(f"key {_kid_text(self.kid)}: the handle names another key")
        if type(self.codes_signed) is not int or self.codes_signed < 0:
            raise PolicyViolation("codes_signed must be a non-negative integer")
        object.__setattr__(self, "_from_s", to_epoch(self.use_from))
        object.__setattr__(self, "_until_s", to_epoch(self.use_until))

    @property
    def algorithm(self):
        return self.public_key.algorithm

    def signs_at(self, now: _dt.datetime) -> bool:
        """True if this key is the one to sign at ``now`` (not retired or compromised, window contains now)."""
        if self.status is KeyState.RETIRED or self.status is KeyState.COMPROMISED:
            return False
        now_s = to_epoch(now)
        return self._from_s <= now_s < self._until_s

    def state_at(self, now: _dt.datetime) -> KeyState:
        """The effective state at ``now`` (the recorded status may lag behind the windows)."""
        now = _moment(now, "now")
        if now > self.verify_until:
            return KeyState.EXPIRED
        if self.status is KeyState.COMPROMISED or self.status is KeyState.RETIRED:
            return self.status
        if now < self.use_from:
            return KeyState.PREPUBLISHED
        if now < self.use_until:
            return KeyState.ACTIVE
        return KeyState.RETIRED

    def trusted_key(self, province: str, now: _dt.datetime) -> TrustedKey:
        """What verifiers get for this key (a pre-published key is an active key with a future window)."""
        state = self.state_at(now)
        status = {KeyState.COMPROMISED: KeyStatus.COMPROMISED, KeyState.RETIRED: KeyStatus.RETIRED,
                  KeyState.EXPIRED: KeyStatus.RETIRED}.get(state, KeyStatus.ACTIVE)
        return TrustedKey(
            kid=self.kid, province=province, public_key=self.public_key, use_from=self.use_from,
            use_until=self.use_until, verify_until=self.verify_until, status=status,
            compromised_since=self.compromised_since, compromise_policy=self.compromise_policy,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid.hex(),
            "algorithm": self.algorithm.value,
            "public_key": base64.b64encode(self.public_key.spki_der()).decode("ascii"),
            "use_from": _text(self.use_from),
            "use_until": _text(self.use_until),
            "verify_until": _text(self.verify_until),
            "status": self.status.value,
            "compromised_since": None if self.compromised_since is None else _text(self.compromised_since),
            "compromise_policy": self.compromise_policy.value,
            "codes_signed": self.codes_signed,
            "handle": None if self.handle is None else self.handle.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> "ManagedKey":
        names = {"kid", "algorithm", "public_key", "use_from", "use_until", "verify_until", "status",
                 "compromised_since", "compromise_policy", "codes_signed", "handle"}
        if not isinstance(data, dict) or set(data) != names:
            raise InvalidKeySet("a key has exactly: " + ", ".join(sorted(names)))
        try:
            kid = bytes.fromhex(data["kid"])
            public = load_public_key_der(base64.b64decode(data["public_key"], validate=True))
            if public.algorithm.value != data["algorithm"]:
                raise InvalidKeySet(f"key {data['kid']}: algorithm does not match the public key")
            since = data["compromised_since"]
            return cls(
                kid=kid, public_key=public,
                use_from=_parse_moment(data["use_from"], "use_from"),
                use_until=_parse_moment(data["use_until"], "use_until"),
                verify_until=_parse_moment(data["verify_until"], "verify_until"),
                status=KeyState(data["status"]),
                handle=None if data["handle"] is None else KeyHandle.from_json(data["handle"]),
                compromised_since=None if since is None else _parse_moment(since, "compromised_since"),
                compromise_policy=CompromisePolicy(data["compromise_policy"]),
                codes_signed=data["codes_signed"],
            )
        except InvalidKeySet:
            raise
        except PolicyViolation as exc:
            raise InvalidKeySet(exc.detail) from None
        except (TypeError, ValueError, AttributeError, HealthCodeError):
            raise InvalidKeySet(f"malformed key entry {str(data.get('kid'))[:64]!r}") from None


class PlanReason(str, enum.Enum):
    SCHEDULED = "scheduled"  # the active key's usage period ends soon
    CODE_CAP = "code_cap"  # the active key nears its code cap
    NO_SIGNING_KEY = "no_signing_key"  # nothing signs now (first key, after a compromise, a missed rotation)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RotationPlan:
    """What :meth:`ProvinceKeySet.plan_next` proposes: generate a key, then ``add_prepublished`` it."""

    reason: PlanReason
    use_from: _dt.datetime
    use_until: _dt.datetime
    replaces: bytes | None


# --------------------------------------------------------------------------- the key set


@dataclass(frozen=True)
class ProvinceKeySet:
    """A province's keys and rotation policy. Immutable; invariants checked on construction.

    ``revision`` grows by one with every change of the keys, their windows and
    statuses (a reader refuses to go back). Recording the issuer's counts
    (:meth:`with_codes_signed`) is not such a change and keeps the revision: see there.
    """

    province: str
    policy: RotationPolicy = field(default_factory=RotationPolicy)
    keys: tuple[ManagedKey, ...] = ()
    revision: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "province", parse_province(self.province))
        except InvalidClaims as exc:
            raise PolicyViolation(str(exc)) from None
        if not isinstance(self.policy, RotationPolicy):
            raise PolicyViolation("policy must be a RotationPolicy")
        keys = tuple(self.keys)
        if any(not isinstance(k, ManagedKey) for k in keys):
            raise PolicyViolation("keys must be ManagedKey values")
        if len(keys) > MAX_KEYS:
            raise PolicyViolation(f"a province holds at most {MAX_KEYS} keys")
        keys = tuple(sorted(keys, key=lambda k: (k.use_from, k.kid)))
        object.__setattr__(self, "keys", keys)
        if type(self.revision) is not int or self.revision < 0:
            raise PolicyViolation("revision must be a non-negative integer")
        # (1) kids unique within the province
        kids = [k.kid for k in keys]
        if len(set(kids)) != len(kids):
            raise PolicyViolation("two keys share a kid")
        # (2) verification outlives use by the longest code validity
        for k in keys:
            if k.verify_until < k.use_until + self.policy.max_code_validity:
                raise PolicyViolation(
                    f"key {_kid_text(k.kid)}: verify_until must be at least use_until + max_code_validity")
        # (3) signing windows never overlap (half-open; empty windows sign nothing)
        windows = [k for k in keys if k.use_from < k.use_until]
        for earlier, later in zip(windows, windows[1:]):
            if later.use_from < earlier.use_until:
                raise PolicyViolation(
                    f"signing windows of keys {_kid_text(earlier.kid)} and {_kid_text(later.kid)} overlap")

    # -- looking up

    def find(self, kid: bytes) -> ManagedKey:
        for k in self.keys:
            if k.kid == kid:
                return k
        raise KeyNotFound(f"province {self.province} has no key {_kid_text(kid)}")

    def _signing_or_none(self, now: _dt.datetime) -> ManagedKey | None:
        for k in self.keys:
            if k.signs_at(now):
                return k
        return None

    def _next_signing_after(self, moment: _dt.datetime) -> ManagedKey | None:
        """The first key that will sign from ``moment`` on (not retired or compromised)."""
        for k in self.keys:
            if k.use_from >= moment and k.use_from < k.use_until and k.status in (
                    KeyState.PREPUBLISHED, KeyState.ACTIVE):
                return k
        return None

    def signing_key_at(self, now: _dt.datetime) -> ManagedKey:
        """The one key that signs at ``now``; :class:`~keys.errors.NoActiveKey` if none does."""
        key = self._signing_or_none(now)
        if key is not None:
            return key
        upcoming = self._next_signing_after(_moment(now, "now"))
        hint = f"; key {_kid_text(upcoming.kid)} signs from {_text(upcoming.use_from)}" if upcoming else ""
        raise NoActiveKey(f"province {self.province} has no key that signs at {_text(_moment(now, 'now'))}{hint}")

    def trusted_keys(self, now: _dt.datetime) -> tuple[TrustedKey, ...]:
        """What verifiers get at ``now``: every key not past ``verify_until``, pre-published ones included."""
        now = _moment(now, "now")
        return tuple(k.trusted_key(self.province, now) for k in self.keys if now <= k.verify_until)

    # -- planning

    def plan_next(self, now: _dt.datetime, *, codes_signed: Mapping[bytes, int] | None = None) -> RotationPlan | None:
        """The next key to generate and pre-publish at ``now``, or None if nothing is due.

        ``codes_signed`` (kid -> count, from the issuer) overrides the recorded
        counts. Due when: nothing signs now (a key from now, on short notice);
        the active key's use ends within ``lead_time + plan_margin`` and no
        successor is scheduled (a key from its ``use_until``); or the active key
        has signed ``cap_plan_fraction`` of its cap (a key from ``now +
        lead_time``, which cuts the active key's use short when added).
        """
        now = _moment(now, "now")
        policy = self.policy
        current = self._signing_or_none(now)
        if current is None:
            upcoming = self._next_signing_after(now)
            end = now + policy.usage_period
            if upcoming is not None:
                end = min(end, upcoming.use_from)  # a bridge until the scheduled key
            if end <= now:
                return None
            return RotationPlan(PlanReason.NO_SIGNING_KEY, now, end, None)
        successor = self._next_signing_after(current.use_until)
        count = (codes_signed or {}).get(current.kid, current.codes_signed)
        cap_start = now + policy.lead_time
        if count >= policy.max_codes_per_key * policy.cap_plan_fraction and cap_start < current.use_until:
            end = cap_start + policy.usage_period
            if successor is not None:
                end = min(end, successor.use_from)
            return RotationPlan(PlanReason.CODE_CAP, cap_start, end, current.kid)
        if successor is not None and successor.use_from == current.use_until:
            return None
        if now >= current.use_until - policy.lead_time - policy.plan_margin:
            end = current.use_until + policy.usage_period
            if successor is not None:
                end = min(end, successor.use_from)
            return RotationPlan(PlanReason.SCHEDULED, current.use_until, end, current.kid)
        return None

    # -- changes (each returns a new value, revision + 1)

    def _with(self, keys: Iterable[ManagedKey]) -> "ProvinceKeySet":
        return replace(self, keys=tuple(keys), revision=self.revision + 1)

    def add_prepublished(
        self,
        public_key: VerificationKey,
        *,
        use_from: _dt.datetime,
        now: _dt.datetime,
        handle: KeyHandle | None = None,
        kid: bytes | None = None,
        use_until: _dt.datetime | None = None,
    ) -> "ProvinceKeySet":
        """Publish a new key that signs from ``use_from`` (until ``use_until``, default one usage period).

        ``use_from`` must be at least ``lead_time`` after ``now``, unless no
        key would sign at ``use_from`` otherwise. If the key signing at
        ``use_from`` would go on signing past it, its use ends at ``use_from``
        (cap-driven or early rotation). Refused: a kid already used, a window
        in the past, longer than the usage period, or overlapping a later key.
        """
        policy = self.policy
        now = _moment(now, "now")
        use_from = _moment(use_from, "use_from")
        use_until = use_from + policy.usage_period if use_until is None else _moment(use_until, "use_until")
        if kid is None:
            kid = handle.kid if handle is not None else public_key.key_id()
        if any(k.kid == kid for k in self.keys):
            raise PolicyViolation(f"province {self.province} already has a key {_kid_text(kid)}")
        if use_from < now:
            raise PolicyViolation("a new key cannot start signing in the past")
        if not use_from < use_until <= use_from + policy.usage_period:
            raise PolicyViolation("a key's use must last more than 0 and at most the usage period")
        keys = list(self.keys)
        for i, k in enumerate(keys):
            if k.signs_at(use_from) and k.use_from < use_from:
                if use_from < now + policy.lead_time:
                    raise PolicyViolation(
                        f"key {_kid_text(kid)} would replace the signing key {_kid_text(k.kid)} "
                        f"{use_from - now} after publication; the lead time is {policy.lead_time}")
                keys[i] = replace(k, use_until=use_from,
                                  verify_until=min(k.verify_until, use_from + policy.max_code_validity))
        new = ManagedKey(kid=kid, public_key=public_key, handle=handle, use_from=use_from, use_until=use_until,
                         verify_until=use_until + policy.max_code_validity, status=KeyState.PREPUBLISHED)
        return self._with([*keys, new])

    def activate_due(self, now: _dt.datetime) -> "ProvinceKeySet":
        """Bring recorded statuses up to date: pre-published keys whose use began are active,
        active keys whose use ended are retired. Unchanged (same revision) if nothing is due."""
        now = _moment(now, "now")
        changed = False
        keys = []
        for k in self.keys:
            status = k.status
            if status in (KeyState.PREPUBLISHED, KeyState.ACTIVE):
                if now >= k.use_until:
                    status = KeyState.RETIRED
                elif now >= k.use_from:
                    status = KeyState.ACTIVE
            if status is not k.status:
                changed = True
                k = replace(k, status=status)
            keys.append(k)
        return self._with(keys) if changed else self

    def retire(self, kid: bytes, now: _dt.datetime) -> "ProvinceKeySet":
        """End the use of the *active* key ``kid`` at ``now`` (it verifies its codes for
        ``max_code_validity`` more). Other states are refused."""
        now = _moment(now, "now")
        key = self.find(kid)
        state = key.state_at(now)
        if state is not KeyState.ACTIVE:
            raise PolicyViolation(f"key {_kid_text(kid)} is {state}: only an active key can be retired")
        use_until = max(key.use_from, now)
        retired = replace(key, status=KeyState.RETIRED, use_until=use_until,
                          verify_until=min(key.verify_until, use_until + self.policy.max_code_validity))
        return self._with(retired if k.kid == kid else k for k in self.keys)

    def mark_compromised(
        self,
        kid: bytes,
        since: _dt.datetime,
        policy: CompromisePolicy = CompromisePolicy.REJECT_FROM_COMPROMISE,
    ) -> "ProvinceKeySet":
        """Mark ``kid`` compromised since ``since``: its codes issued at or after ``since`` are
        refused (all of them with ``REJECT_ALL``), and its use ends at ``since``.

        Marking again may only move ``since`` earlier or make the policy
        stricter; any other change is refused.
        """
        since = _moment(since, "since")
        policy = CompromisePolicy(policy)
        key = self.find(kid)
        if key.status is KeyState.COMPROMISED:
            if since > key.compromised_since or (
                    key.compromise_policy is CompromisePolicy.REJECT_ALL and policy is not CompromisePolicy.REJECT_ALL):
                raise PolicyViolation(
                    f"key {_kid_text(kid)} is compromised since {_text(key.compromised_since)}: "
                    "a new marking may only start earlier or reject more")
        use_until = max(key.use_from, min(key.use_until, since))
        marked = replace(key, status=KeyState.COMPROMISED, compromised_since=since, compromise_policy=policy,
                         use_until=use_until)
        return self._with(marked if k.kid == kid else k for k in self.keys)

    def due_to_expire(self, now: _dt.datetime) -> tuple[ManagedKey, ...]:
        """Keys past ``verify_until`` at ``now`` (their private keys can be destroyed)."""
        now = _moment(now, "now")
        return tuple(k for k in self.keys if now > k.verify_until)

    def expire_due(self, now: _dt.datetime) -> "ProvinceKeySet":
        """Drop the keys past ``verify_until``. Unchanged (same revision) if none is."""
        gone = {k.kid for k in self.due_to_expire(now)}
        return self._with(k for k in self.keys if k.kid not in gone) if gone else self

    def with_codes_signed(self, counts: Mapping[bytes, int]) -> "ProvinceKeySet":
        """Record the issuer's per-key counts: each key's count becomes the larger of
        the recorded and the given one (never lowered; unknown kids ignored).

        The revision stays. Counts are an observation merged by maximum, so they
        cannot go back whatever order writers and readers meet in; the revision
        guards what can (a key, a window, a status). Bumping it for counts would
        turn every write-back of a serving issuer into a new key-set revision:
        the numbers operators compare (``key list``, KeyAdmin responses) would
        move every minute, and the issuer's own reload would report a change.
        """
        keys, changed = [], False
        for k in self.keys:
            count = counts.get(k.kid)
            if count is not None and count > k.codes_signed:
                k, changed = replace(k, codes_signed=int(count)), True
            keys.append(k)
        return replace(self, keys=tuple(keys)) if changed else self

    # -- bytes

    def to_bytes(self) -> bytes:
        document = {
            "format": _FORMAT,
            "version": 1,
            "province": self.province,
            "revision": self.revision,
            "policy": self.policy.to_json(),
            "keys": [k.to_json() for k in self.keys],
        }
        return json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> "ProvinceKeySet":
        """Parse and validate a key set (size-capped before parsing; unknown fields refused)."""
        if len(data) > MAX_KEY_SET_BYTES:
            raise InvalidKeySet(f"key set over {MAX_KEY_SET_BYTES} bytes")
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InvalidKeySet("key set is not JSON") from None
        names = {"format", "version", "province", "revision", "policy", "keys"}
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise InvalidKeySet(f"not a {_FORMAT} document")
        if document.get("version") != 1:
            raise InvalidKeySet("unsupported key set version")
        if set(document) != names:
            raise InvalidKeySet("key set has exactly: " + ", ".join(sorted(names)))
        if not isinstance(document["keys"], list) or len(document["keys"]) > MAX_KEYS:
            raise InvalidKeySet(f"keys must be a list of at most {MAX_KEYS}")
        if type(document["revision"]) is not int or not isinstance(document["province"], str):
            raise InvalidKeySet("malformed revision or province")
        policy = RotationPolicy.from_json(document["policy"])
        keys = tuple(ManagedKey.from_json(k) for k in document["keys"])
        try:
            return cls(province=document["province"], policy=policy, keys=keys, revision=document["revision"])
        except PolicyViolation as exc:
            raise InvalidKeySet(exc.detail) from None


def load_key_set(path: os.PathLike | str) -> ProvinceKeySet:
    """Read a key-set file (:class:`~keys.errors.InvalidKeySet` if it is not one)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_SET_BYTES + 1)
    except OSError as e:
        raise InvalidKeySet(f"cannot read key set {path}: {e.strerror}") from None
    return ProvinceKeySet.from_bytes(data)


def save_key_set(path: os.PathLike | str, key_set: ProvinceKeySet) -> None:
    """Write a key-set file atomically (mode 0644: it holds no secret)."""
    write_file_atomically(path, key_set.to_bytes(), mode=0o644)


def key_set_lock(path: os.PathLike | str):
    """The exclusive lock every read-modify-write of the key-set file at ``path`` holds
    (``<path>.lock``, an advisory ``flock``; the ceremonies, KeyAdmin and the issuer's
    count write-back). Readers need none: the file is replaced atomically."""
    path = pathlib.Path(path)
    return file_lock(path.with_name(path.name + ".lock"))


# --------------------------------------------------------------------------- the issuer's rotating signer


@dataclass(frozen=True)
class _Loaded:
    key_set: ProvinceKeySet
    signers: Mapping[bytes, KeystoreSigner]


class RotatingSigner:
    """``signer_for(now)`` for :class:`issuer.issuance.CodeIssuer`: the signer of the key that signs at ``now``.

    * Signers of every key that signs now or later are loaded when a key set
      is installed (at construction and on each :meth:`refresh`), so the
      rotation instant costs a lookup; the key set and its signers are swapped
      together in one assignment, so a request sees the old pair or the new.
    * Each :meth:`signer_for` call counts one code against the key's cap (the
      issuer signs at most once per call); the call that would exceed
      ``policy.max_codes_per_key`` raises :class:`~keys.errors.CodeCapReached`.
      ``codes_signed(kid)`` seeds a key's count the first time it is used
      (the issuer passes its store's next serial, so a restart keeps counting).
    * With ``path``, :meth:`refresh` re-reads the key-set file when it changed
      (inode, size, mtime); a file from another province or with a lower
      revision is refused and the current key set stays.
    * With ``path``, :meth:`record_codes_signed` writes the counts back into the
      file (merged under :func:`key_set_lock`, only ever raising a count);
      :meth:`watch` does it every ``record_every`` seconds when a count moved,
      the issuer once more after its last RPC (:meth:`write_back`).

    Thread-safe: :meth:`refresh` may run in a worker thread while the event
    loop calls :meth:`signer_for`.
    """

    def __init__(
        self,
        keystore: Keystore,
        key_set: ProvinceKeySet,
        *,
        path: os.PathLike | str | None = None,
        codes_signed: Callable[[bytes], int] | None = None,
        _stamp: tuple[int, int, int] | None = None,
    ) -> None:
        self._keystore = keystore
        self._path = None if path is None else pathlib.Path(path)
        self._seed = codes_signed
        self._counts: dict[bytes, int] = {}
        self._count_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._recorded: dict[bytes, int] | None = None  # the counts last written back
        self._loaded = _Loaded(key_set, {})
        with self._refresh_lock:
            if self._path is not None:
                self._stamp = _stamp or self._stat()
            self._install(key_set)

    @classmethod
    def from_file(
        cls, path: os.PathLike | str, keystore: Keystore, *, province: str | None = None,
        codes_signed: Callable[[bytes], int] | None = None,
    ) -> "RotatingSigner":
        """A rotating signer over the key-set file at ``path`` (checked to be ``province``'s)."""
        try:
            st = os.stat(path)  # before reading: a change in between is seen by the next refresh
        except OSError as e:
            raise InvalidKeySet(f"cannot read key set {path}: {e.strerror}") from None
        key_set = load_key_set(path)
        if province is not None and key_set.province != province:
            raise InvalidKeySet(f"key set {path} is province {key_set.province}'s, not {province}'s")
        return cls(keystore, key_set, path=path, codes_signed=codes_signed,
                   _stamp=(st.st_ino, st.st_size, st.st_mtime_ns))

    @property
    def key_set(self) -> ProvinceKeySet:
        return self._loaded.key_set

    def count_codes_from(self, codes_signed: Callable[[bytes], int]) -> None:
        """Seed counts with ``codes_signed(kid)`` (e.g. the store's next serial), for the keys
        loaded now at once and for any other key at its first use. Call before serving."""
        with self._refresh_lock:
            self._seed = codes_signed
            for kid in self._loaded.signers:
                key = self._loaded.key_set.find(kid)
                count = self._initial_count(key)
                with self._count_lock:
                    self._counts[kid] = max(self._counts.get(kid, 0), count)

    def codes_signed(self) -> dict[bytes, int]:
        """Codes counted per kid so far (seeded values included)."""
        with self._count_lock:
            return dict(self._counts)

    # -- the hot path

    def signer_for(self, now: _dt.datetime) -> KeystoreSigner:
        """The signer of the key that signs at ``now``; counts one code against its cap.

        Raises :class:`~keys.errors.NoActiveKey` or :class:`~keys.errors.CodeCapReached`.
        """
        loaded = self._loaded  # one read: key set and signers belong together
        key = loaded.key_set.signing_key_at(now)
        signer = loaded.signers.get(key.kid)
        if signer is None:  # not preloaded (no handle, or a load failed at install): try now
            signer = self._load(key)
        cap = loaded.key_set.policy.max_codes_per_key
        with self._count_lock:
            count = self._counts.get(key.kid)
            if count is None:
                count = self._initial_count(key)
            if count >= cap:
                self._counts[key.kid] = count
                upcoming = loaded.key_set._next_signing_after(key.use_until)
                raise CodeCapReached(
                    f"key {_kid_text(key.kid)} has signed its cap of {cap} codes; "
                    + (f"the next key {_kid_text(upcoming.kid)} signs from {_text(upcoming.use_from)}"
                       if upcoming is not None else "no next key is pre-published: rotate now"))
            self._counts[key.kid] = count + 1
        return signer

    __call__ = signer_for

    def _initial_count(self, key: ManagedKey) -> int:
        seeded = self._seed(key.kid) if self._seed is not None else 0
        return max(int(seeded), key.codes_signed)

    def _load(self, key: ManagedKey) -> KeystoreSigner:
        if key.handle is None:
            raise NoActiveKey(f"key {_kid_text(key.kid)} has no keystore handle: this issuer cannot sign with it")
        signer = self._keystore.load_signer(key.handle)
        if signer.kid != key.kid or signer.public_key() != key.public_key:
            raise KeyNotFound(f"the keystore's key {key.handle.id} is not key {_kid_text(key.kid)}")
        return signer

    # -- installing and reloading

    def _install(self, key_set: ProvinceKeySet) -> None:
        """Load the signers of every key that signs now or later, then swap (refresh lock held)."""
        current = self._loaded
        signers: dict[bytes, KeystoreSigner] = {}
        for key in key_set.keys:
            if key.status not in (KeyState.PREPUBLISHED, KeyState.ACTIVE) or key.handle is None:
                continue
            old = current.signers.get(key.kid)
            old_key = next((k for k in current.key_set.keys if k.kid == key.kid), None)
            if old is not None and old_key is not None and old_key.handle == key.handle:
                signers[key.kid] = old
            else:
                signers[key.kid] = self._load(key)
            if self._seed is not None:
                with self._count_lock:
                    known = key.kid in self._counts
                if not known:
                    count = self._initial_count(key)  # outside the lock: it may read a database
                    with self._count_lock:
                        self._counts.setdefault(key.kid, count)
        self._loaded = _Loaded(key_set, signers)

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self._path)
        except OSError as e:
            raise InvalidKeySet(f"cannot read key set {self._path}: {e.strerror}") from None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def update(self, key_set: ProvinceKeySet) -> None:
        """Install ``key_set`` (same province, revision not lower)."""
        with self._refresh_lock:
            self._check_successor(key_set)
            self._install(key_set)

    def _check_successor(self, key_set: ProvinceKeySet) -> None:
        current = self._loaded.key_set
        if key_set.province != current.province:
            raise InvalidKeySet(f"key set is province {key_set.province}'s, not {current.province}'s")
        if key_set.revision < current.revision:
            raise InvalidKeySet(
                f"key set went back from revision {current.revision} to {key_set.revision}; keeping {current.revision}")

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the key-set file if it changed on disk (always with ``force``); True if installed.

        On a bad file the current key set stays and the error is raised.
        """
        if self._path is None:
            return False
        with self._refresh_lock:
            stamp = self._stat()
            if stamp == self._stamp and not force:
                return False
            key_set = load_key_set(self._path)
            self._stamp = stamp
            if key_set == self._loaded.key_set:
                return False
            self._check_successor(key_set)
            self._install(key_set)
        log.info("key set of province %s reloaded: revision %d", key_set.province, key_set.revision)
        return True

    # -- writing the counts back

    def record_codes_signed(self) -> bool:
        """Write this signer's per-key counts into the key-set file; True if the file changed.

        Holds :func:`key_set_lock` (as the ceremonies and KeyAdmin do), re-reads the
        file, raises each key's count to ours where ours is larger
        (:meth:`ProvinceKeySet.with_codes_signed`: the revision stays), and replaces
        the file only if a count went up. So a ceremony's change, before or after,
        is never lost, and no count ever goes down. When the file is still the one
        this signer last loaded, the written file becomes the loaded one (the next
        :meth:`refresh` sees nothing new); when someone changed it since, the next
        refresh installs that change as usual. Raises :class:`~keys.errors.InvalidKeySet`
        (a missing or foreign file, left alone) or ``OSError`` (cannot write). Never
        blocks :meth:`signer_for`, which takes neither lock.
        """
        if self._path is None:
            return False
        counts = self.codes_signed()
        with self._refresh_lock, key_set_lock(self._path):
            before = self._stat()
            on_disk = load_key_set(self._path)
            current = self._loaded.key_set
            if on_disk.province != current.province:
                raise InvalidKeySet(f"key set {self._path} is province {on_disk.province}'s, not "
                                    f"{current.province}'s: codes signed not recorded")
            merged = on_disk.with_codes_signed(counts)
            if merged is not on_disk:
                save_key_set(self._path, merged)
                if before == self._stamp and on_disk == current:  # our own write: not a change to reload
                    self._stamp = self._stat()
                    self._loaded = _Loaded(merged, self._loaded.signers)
            self._recorded = counts
        if merged is not on_disk:
            log.info("codes signed recorded in the key set of province %s: %s", current.province,
                     ", ".join(f"{kid.hex()[:16]} {n}" for kid, n in sorted(counts.items())))
        return merged is not on_disk

    async def write_back(self) -> bool:
        """:meth:`record_codes_signed` in a worker thread; a failure is logged, never raised
        (the counts stay in memory and the cap is still enforced). The issuer calls it at
        shutdown, after the last RPC."""
        try:
            return await asyncio.to_thread(self.record_codes_signed)
        except KeyManagementError as exc:
            log.error("codes signed not recorded in the key set: %s", exc)
        except OSError as exc:
            log.error("codes signed not recorded in the key set: %s: %s", type(exc).__name__, exc.strerror or exc)
        except Exception as exc:  # never let the watcher die; never log a message that might quote data
            log.error("codes signed not recorded in the key set: %s", type(exc).__name__)
        return False

    async def watch(self, *, every: float, wake: asyncio.Event | None = None,
                    record_every: float | None = 60.0) -> None:
        """Call :meth:`refresh` in a worker thread every ``every`` seconds, and at once
        (forced) when ``wake`` is set (the issuer sets it on SIGHUP). Runs until cancelled;
        a failed refresh is logged and the current key set kept.

        With ``record_every``, the counts are written back (:meth:`write_back`) after a
        refresh when at least ``record_every`` seconds passed since the last write-back
        (and on every wake) and a count moved since."""
        recorded_at = time.monotonic()
        while True:
            forced = False
            if wake is None:
                await asyncio.sleep(every)
            else:
                try:
                    await asyncio.wait_for(wake.wait(), every)
                    forced = True
                except TimeoutError:
                    pass
                wake.clear()
            try:
                await asyncio.to_thread(self.refresh, force=forced)
            except KeyManagementError as exc:
                log.error("key set reload failed, keeping revision %d: %s", self.key_set.revision, exc)
            except Exception as exc:  # never let the watcher die; never log a message that might quote data
                log.error("key set reload failed, keeping revision %d: %s", self.key_set.revision,
                          type(exc).__name__)
            if record_every is not None and (forced or time.monotonic() - recorded_at >= record_every):
                if self.codes_signed() != self._recorded:
                    await self.write_back()
                recorded_at = time.monotonic()

    def __repr__(self) -> str:
        loaded = self._loaded
        return (f"<RotatingSigner province={loaded.key_set.province} revision={loaded.key_set.revision} "
                f"loaded={sorted(k.hex() for k in loaded.signers)}>")
