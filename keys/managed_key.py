"""One key of a province: its windows and state, and the rotation policy those windows follow.

A :class:`ManagedKey` is a frozen value: the kid, the public key, the signing
window ``use_from <= now < use_until`` (half-open), ``verify_until``, the recorded
:class:`KeyState` (which may lag behind the windows: :meth:`ManagedKey.state_at`
computes the effective one), the compromise marking, the issuer's last recorded
count of codes signed and, on the issuer side, the keystore handle. The
:class:`RotationPolicy` says how long a key signs, how far ahead it is
published and how long its codes live. What a province does with its keys over
time (plan, pre-publish, retire, mark compromised, expire) is
:class:`keys.lifecycle.ProvinceKeySet`.

Times are UTC and whole seconds (a code's ``iat`` is whole seconds), floored on
construction (:func:`utc_seconds`). Pure: nothing here reads a clock or a file.
"""

from __future__ import annotations

import base64
import datetime as _dt
import enum
from dataclasses import dataclass, field
from typing import Any

from healthcode import CompromisePolicy, KeyStatus, ProvinceCode, TrustedKey, VerificationKey, load_public_key_der
from healthcode.errors import HealthCodeError
from healthcode.model import from_epoch, to_epoch
from shellkit.times import iso_utc

from .errors import InvalidKeySet, PolicyViolation
from .keystore.base import KeyHandle

__all__ = ["KeyState", "RotationPolicy", "ManagedKey", "utc_seconds"]


def utc_seconds(value: object, name: str) -> _dt.datetime:
    """``value`` as an aware datetime in UTC, floored to whole seconds (:class:`PolicyViolation` if naive)."""
    if not isinstance(value, _dt.datetime) or value.tzinfo is None:
        raise PolicyViolation(f"{name} must be a timezone-aware datetime")
    return from_epoch(to_epoch(value))


def _parse_moment(text: object, name: str) -> _dt.datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise InvalidKeySet(f"{name} must be an RFC 3339 UTC time ending in Z")
    try:
        return utc_seconds(_dt.datetime.fromisoformat(text[:-1] + "+00:00"), name)
    except ValueError:
        raise InvalidKeySet(f"{name} is not a valid time") from None


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
      planned early (0.8);
    * ``allow_emergency``: whether an emergency rotation may start a new key
      signing *now*, without the lead time, cutting the signing key short
      (off; ``healthcode-keys province key policy CODE --allow-emergency``).
      Terminals refuse the new key's codes until they have synced its key list:
      minutes for online ones, and longer for offline ones. Not needed after a
      compromise: a compromised key stops signing, and a new key may then
      start at once anyway.
    """

    usage_period: _dt.timedelta = _dt.timedelta(days=90)
    max_codes_per_key: int = 10_000_000
    lead_time: _dt.timedelta = _dt.timedelta(days=7)
    max_code_validity: _dt.timedelta = _dt.timedelta(days=7)
    plan_margin: _dt.timedelta = _dt.timedelta(days=7)
    cap_plan_fraction: float = 0.8
    allow_emergency: bool = False

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
        if type(self.allow_emergency) is not bool:
            raise PolicyViolation("allow_emergency must be true or false")

    def to_json(self) -> dict[str, Any]:
        return {
            "usage_period_s": int(self.usage_period.total_seconds()),
            "max_codes_per_key": self.max_codes_per_key,
            "lead_time_s": int(self.lead_time.total_seconds()),
            "max_code_validity_s": int(self.max_code_validity.total_seconds()),
            "plan_margin_s": int(self.plan_margin.total_seconds()),
            "cap_plan_fraction": self.cap_plan_fraction,
            # written only when on: key sets that never allowed it keep their bytes
            **({"allow_emergency": True} if self.allow_emergency else {}),
        }

    @classmethod
    def from_json(cls, data: Any) -> "RotationPolicy":
        names = {"usage_period_s", "max_codes_per_key", "lead_time_s", "max_code_validity_s", "plan_margin_s",
                 "cap_plan_fraction"}
        if not isinstance(data, dict) or set(data) - {"allow_emergency"} != names:
            raise InvalidKeySet("policy has exactly: " + ", ".join(sorted(names)) + " (and allow_emergency)")
        if type(data.get("allow_emergency", False)) is not bool:
            raise InvalidKeySet("policy.allow_emergency must be true or false")
        for name in names - {"cap_plan_fraction"}:
            if type(data[name]) is not int:
                raise InvalidKeySet(f"policy.{name} must be an integer")
        if type(data["cap_plan_fraction"]) not in (int, float):
            raise InvalidKeySet("policy.cap_plan_fraction must be a number")
        seconds = lambda name: _dt.timedelta(seconds=data[name])  # noqa: E731
        try:
            return cls(usage_period=seconds("usage_period_s"), max_codes_per_key=data["max_codes_per_key"],
                       lead_time=seconds("lead_time_s"), max_code_validity=seconds("max_code_validity_s"),
                       plan_margin=seconds("plan_margin_s"), cap_plan_fraction=data["cap_plan_fraction"],
                       allow_emergency=data.get("allow_emergency", False))
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
            object.__setattr__(self, name, utc_seconds(getattr(self, name), name))
        status = KeyState(self.status)
        if status not in _STORED_STATES:
            raise PolicyViolation("an expired key is dropped, not stored")
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "compromise_policy", CompromisePolicy(self.compromise_policy))
        if not self.use_from <= self.use_until <= self.verify_until:
            raise PolicyViolation(f"key {self.kid.hex()}: need use_from <= use_until <= verify_until")
        if (status is KeyState.COMPROMISED) != (self.compromised_since is not None):
            raise PolicyViolation(f"key {self.kid.hex()}: compromised_since goes with status compromised")
        if self.compromised_since is not None:
            object.__setattr__(self, "compromised_since", utc_seconds(self.compromised_since, "compromised_since"))
        if self.handle is not None:
            if not isinstance(self.handle, KeyHandle):
                raise PolicyViolation("handle must be a KeyHandle")
            if self.handle.kid != self.kid or self.handle.algorithm is not self.public_key.algorithm:
                raise PolicyViolation(f"key {self.kid.hex()}: the handle names another key")
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
        now = utc_seconds(now, "now")
        if now > self.verify_until:
            return KeyState.EXPIRED
        if self.status is KeyState.COMPROMISED or self.status is KeyState.RETIRED:
            return self.status
        if now < self.use_from:
            return KeyState.PREPUBLISHED
        if now < self.use_until:
            return KeyState.ACTIVE
        return KeyState.RETIRED

    def trusted_key(self, province: ProvinceCode, now: _dt.datetime) -> TrustedKey:
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
            "use_from": iso_utc(self.use_from),
            "use_until": iso_utc(self.use_until),
            "verify_until": iso_utc(self.verify_until),
            "status": self.status.value,
            "compromised_since": None if self.compromised_since is None else iso_utc(self.compromised_since),
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
