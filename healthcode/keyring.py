"""The keyring: every trusted province signing key, with its windows and status.

A :class:`TrustedKey` is one province's public key with

* ``use_from`` .. ``use_until``: when the key may sign (a code's ``iat`` must
  fall inside);
* ``verify_until``: the last moment anything it signed may be accepted
  (end of use + the longest code validity);
* ``status``: active, retired, or compromised since ``compromised_since``.
  Codes issued at or after that time are refused; with
  ``CompromisePolicy.REJECT_ALL`` every code of the key is refused.

The kid is only a hint, never trusted alone: the verifier looks a key up by
(province, kid), checks the algorithm is the key's and the signature, and then
the windows. Keys of different provinces may share a kid; within a province
kids are unique, because revocation shards are named by (province, kid).
A retired key still verifies what it signed inside its window.
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from .algorithms import Algorithm, VerificationKey
from .errors import InvalidKey
from .model import ProvinceCode, parse_province, to_epoch
from .errors import InvalidClaims

__all__ = ["KeyStatus", "CompromisePolicy", "TrustedKey", "Keyring"]


class KeyStatus(str, enum.Enum):
    ACTIVE = "active"
    RETIRED = "retired"
    COMPROMISED = "compromised"

    def __str__(self) -> str:
        return self.value


class CompromisePolicy(str, enum.Enum):
    """What a compromise cuts off: codes issued from ``compromised_since`` on, or all."""

    REJECT_FROM_COMPROMISE = "reject_from_compromise"
    REJECT_ALL = "reject_all"


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One trusted province signing key. Validated on construction."""

    kid: bytes
    province: ProvinceCode
    public_key: VerificationKey
    use_from: _dt.datetime
    use_until: _dt.datetime
    verify_until: _dt.datetime
    status: KeyStatus = KeyStatus.ACTIVE
    compromised_since: _dt.datetime | None = None
    compromise_policy: CompromisePolicy = CompromisePolicy.REJECT_FROM_COMPROMISE
    # Epoch-second copies of the windows for the verify hot path.
    _use_from_s: int = field(init=False, repr=False, compare=False)
    _use_until_s: int = field(init=False, repr=False, compare=False)
    _verify_until_s: int = field(init=False, repr=False, compare=False)
    _compromised_s: int | None = field(init=False, repr=False, compare=False)
    _alg_id: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kid, bytes) or not 1 <= len(self.kid) <= 32:
            raise InvalidKey("kid must be 1 to 32 bytes")
        try:
            parse_province(self.province)
        except InvalidClaims as exc:
            raise InvalidKey(str(exc)) from None
        if not isinstance(self.public_key, VerificationKey):
            raise InvalidKey("public_key must be a VerificationKey")
        status = KeyStatus(self.status)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "compromise_policy", CompromisePolicy(self.compromise_policy))
        try:
            use_from, use_until = to_epoch(self.use_from), to_epoch(self.use_until)
            verify_until = to_epoch(self.verify_until)
        except (ValueError, AttributeError, TypeError):
            raise InvalidKey("key windows must be timezone-aware datetimes") from None
        if not use_from <= use_until <= verify_until:
            raise InvalidKey("key windows must satisfy use_from <= use_until <= verify_until")
        compromised = None
        if status is KeyStatus.COMPROMISED:
            if self.compromised_since is None:
                raise InvalidKey("a compromised key needs compromised_since")
            compromised = to_epoch(self.compromised_since)
        elif self.compromised_since is not None:
            raise InvalidKey("compromised_since is only for compromised keys")
        object.__setattr__(self, "_use_from_s", use_from)
        object.__setattr__(self, "_use_until_s", use_until)
        object.__setattr__(self, "_verify_until_s", verify_until)
        object.__setattr__(self, "_compromised_s", compromised)
        object.__setattr__(self, "_alg_id", self.public_key.algorithm.cose_id)

    @property
    def algorithm(self) -> Algorithm:
        """The algorithm comes from the key, never from a code."""
        return self.public_key.algorithm


class Keyring:
    """An immutable set of :class:`TrustedKey`, indexed by kid."""

    __slots__ = ("_by_shard", "_keys")

    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        by_shard: dict[tuple[str, bytes], TrustedKey] = {}
        ordered = tuple(keys)
        for key in ordered:
            if not isinstance(key, TrustedKey):
                raise InvalidKey("a keyring holds TrustedKey values")
            if (key.province, key.kid) in by_shard:
                # Revocation shards are (province, kid): two keys there would share one list.
                raise InvalidKey(f"two keys of province {key.province} share kid {key.kid.hex()}")
            by_shard[(key.province, key.kid)] = key
        self._by_shard = by_shard
        self._keys = ordered

    def find(self, province: str, kid: bytes) -> TrustedKey | None:
        """The key of ``province`` named ``kid``, if trusted."""
        return self._by_shard.get((province, kid))

    def for_province(self, province: str) -> tuple[TrustedKey, ...]:
        return tuple(k for k in self._keys if k.province == province)

    def __iter__(self) -> Iterator[TrustedKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"<Keyring {len(self._keys)} keys>"
