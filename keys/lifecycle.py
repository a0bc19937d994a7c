"""The key lifecycle of one province: its key set, and what may happen to it over time.

Pure (time is always a parameter, nothing here reads a clock or a file): a
:class:`ProvinceKeySet` is a frozen value holding the province's
:class:`~keys.managed_key.ManagedKey` entries and its
:class:`~keys.managed_key.RotationPolicy` (``keys/managed_key.py``); every operation
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
(read, written atomically, locked for a change) is ``keys/key_set_file.py``. Where
a rotation takes effect while the issuer serves: ``keys/rotating_signer.py``.
Where people run one: ``keys/province_keys.py`` (``healthcode-keys province key``).
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from healthcode import CompromisePolicy, ProvinceCode, TrustedKey, VerificationKey
from healthcode.errors import InvalidClaims
from healthcode.model import parse_province
from shellkit.times import beijing, human_duration, iso_utc

from .errors import InvalidKeySet, KeyNotFound, NoActiveKey, PolicyViolation
from .keystore.base import KeyHandle
from .managed_key import KeyState, ManagedKey, RotationPolicy, utc_seconds

__all__ = [
    "PlanReason",
    "RotationPlan",
    "ProvinceKeySet",
    "MAX_KEYS",
    "MAX_KEY_SET_BYTES",
]

MAX_KEYS = 64
MAX_KEY_SET_BYTES = 1024 * 1024
_FORMAT = "healthcode-province-key-set"


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
                    f"key {k.kid.hex()}: verify_until must be at least use_until + max_code_validity")
        # (3) signing windows never overlap (half-open; empty windows sign nothing)
        windows = [k for k in keys if k.use_from < k.use_until]
        for earlier, later in zip(windows, windows[1:]):
            if later.use_from < earlier.use_until:
                raise PolicyViolation(
                    f"signing windows of keys {earlier.kid.hex()} and {later.kid.hex()} overlap")

    # -- looking up

    def find(self, kid: bytes) -> ManagedKey:
        for k in self.keys:
            if k.kid == kid:
                return k
        raise KeyNotFound(f"province {self.province} has no key {kid.hex()}")

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
        upcoming = self._next_signing_after(utc_seconds(now, "now"))
        hint = f"; key {upcoming.kid.hex()} signs from {iso_utc(upcoming.use_from)}" if upcoming else ""
        raise NoActiveKey(f"province {self.province} has no key that signs at {iso_utc(utc_seconds(now, 'now'))}{hint}")

    def trusted_keys(self, now: _dt.datetime) -> tuple[TrustedKey, ...]:
        """What verifiers get at ``now``: every key not past ``verify_until``, pre-published ones included."""
        now = utc_seconds(now, "now")
        province = ProvinceCode(self.province)  # a checked code since __post_init__
        return tuple(k.trusted_key(province, now) for k in self.keys if now <= k.verify_until)

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
        now = utc_seconds(now, "now")
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
        emergency: bool = False,
    ) -> "ProvinceKeySet":
        """Publish a new key that signs from ``use_from`` (until ``use_until``, default one usage period).

        ``use_from`` must be at least ``lead_time`` after ``now``, unless no
        key would sign at ``use_from`` otherwise, or ``emergency`` is set and
        the policy's ``allow_emergency`` allows it (an emergency rotation: the
        new key may take over at once). If the key signing at ``use_from``
        would go on signing past it, its use ends at ``use_from`` (cap-driven,
        early or emergency rotation). Refused: a kid already used, a window
        in the past, longer than the usage period, or overlapping a later key;
        an ``emergency`` that would cut a signing key short when the policy
        does not allow it. Refusals name the signing key and the durations,
        in Beijing time.
        """
        policy = self.policy
        now = utc_seconds(now, "now")
        use_from = utc_seconds(use_from, "use_from")
        use_until = use_from + policy.usage_period if use_until is None else utc_seconds(use_until, "use_until")
        if kid is None:
            kid = handle.kid if handle is not None else public_key.key_id()
        if any(k.kid == kid for k in self.keys):
            raise PolicyViolation(f"province {self.province} already has a key {kid.hex()}")
        if use_from < now:
            raise PolicyViolation("a new key cannot start signing in the past")
        if not use_from < use_until <= use_from + policy.usage_period:
            raise PolicyViolation("a key's use must last more than 0 and at most the usage period")
        keys = list(self.keys)
        for i, k in enumerate(keys):
            if k.signs_at(use_from) and k.use_from < use_from:
                if use_from < now + policy.lead_time and emergency and not policy.allow_emergency:
                    raise PolicyViolation(self._emergency_refusal(now))
                if use_from < now + policy.lead_time and not emergency:
                    raise PolicyViolation(
                        f"a new key from {beijing(use_from)} would replace the signing key {k.kid.hex()} only "
                        f"{human_duration(use_from - now)} after publication; the lead time is "
                        f"{human_duration(policy.lead_time)} (from {beijing(now + policy.lead_time)} at the "
                        "earliest), or an emergency rotation where the policy allows it")
                keys[i] = replace(k, use_until=use_from,
                                  verify_until=min(k.verify_until, use_from + policy.max_code_validity))
        new = ManagedKey(kid=kid, public_key=public_key, handle=handle, use_from=use_from, use_until=use_until,
                         verify_until=use_until + policy.max_code_validity, status=KeyState.PREPUBLISHED)
        return self._with([*keys, new])

    def _emergency_refusal(self, now: _dt.datetime) -> str:
        """Why an emergency rotation is refused, with the key it would replace and the normal way."""
        current = self._signing_or_none(now)
        lead = self.policy.lead_time
        held = (f"key {current.kid.hex()} signs until {beijing(current.use_until)} (for "
                f"{human_duration(current.use_until - now)} more)" if current is not None else "no key signs now")
        return (f"emergency rotation refused: province {self.province}'s key policy does not allow it "
                f"(healthcode-keys province key policy {self.province} --allow-emergency); {held}; a normal "
                f"rotation signs from {beijing(now + lead)} at the earliest (the lead time of {human_duration(lead)})")

    def with_emergency_rotation(self, allowed: bool) -> "ProvinceKeySet":
        """The policy's ``allow_emergency`` set to ``allowed`` (a new revision), or self if it already is."""
        if self.policy.allow_emergency is allowed:
            return self
        return replace(self, policy=replace(self.policy, allow_emergency=allowed), revision=self.revision + 1)

    def activate_due(self, now: _dt.datetime) -> "ProvinceKeySet":
        """Bring recorded statuses up to date: pre-published keys whose use began are active,
        active keys whose use ended are retired. Unchanged (same revision) if nothing is due."""
        now = utc_seconds(now, "now")
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
        now = utc_seconds(now, "now")
        key = self.find(kid)
        state = key.state_at(now)
        if state is not KeyState.ACTIVE:
            raise PolicyViolation(f"key {kid.hex()} is {state}: only an active key can be retired")
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
        since = utc_seconds(since, "since")
        policy = CompromisePolicy(policy)
        key = self.find(kid)
        if key.compromised_since is not None:  # exactly when compromised (ManagedKey's invariant)
            if since > key.compromised_since or (
                    key.compromise_policy is CompromisePolicy.REJECT_ALL and policy is not CompromisePolicy.REJECT_ALL):
                raise PolicyViolation(
                    f"key {kid.hex()} is compromised since {iso_utc(key.compromised_since)}: "
                    "a new marking may only start earlier or reject more")
        use_until = max(key.use_from, min(key.use_until, since))
        marked = replace(key, status=KeyState.COMPROMISED, compromised_since=since, compromise_policy=policy,
                         use_until=use_until)
        return self._with(marked if k.kid == kid else k for k in self.keys)

    def due_to_expire(self, now: _dt.datetime) -> tuple[ManagedKey, ...]:
        """Keys past ``verify_until`` at ``now`` (their private keys can be destroyed)."""
        now = utc_seconds(now, "now")
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
