"""A province's code-signing keys: where keys rotate, as people run it.

:class:`ProvinceKeyAdmin` is what ``healthcode-keys province key ...`` and the
issuer's KeyAdmin service call: generate a key and pre-publish it (the first
key, a scheduled or early rotation, the successor of a key near its code cap),
retire, mark compromised, expire (and destroy), and publish the province's key
list to the trust repository. Each change runs under the key-set file's lock
(:func:`keys.key_set_file.key_set_lock`), applies one operation of the pure
lifecycle (:class:`keys.lifecycle.ProvinceKeySet`) and saves the result; each
returns a :class:`keys.ceremony.Outcome`. Every operation takes ``now``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import pathlib
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

from securesystemslib.signer import Signer

import healthcode
from healthcode import Algorithm, CompromisePolicy, ProvinceCode, TrustedKey
from healthcode.keylist import InvalidKeyList, KeyList, parse_key_list
from shellkit.times import beijing, human_duration, iso_utc

from .ceremony import Outcome, aware_utc, province_code
from .errors import InvalidKeySet, KeyNotFound, NoActiveKey, PolicyViolation, TrustRepoError
from .key_set_file import key_set_lock, load_key_set, save_key_set
from .keystore.base import Keystore
from .lifecycle import PlanReason, ProvinceKeySet, RotationPlan
from .managed_key import KeyState, ManagedKey, RotationPolicy
from .trustrepo import TrustRepository
from .trustrepo_files import KEY_LIST_NAME

__all__ = ["ProvinceKeyAdmin", "KeyInfo", "resolve_kid", "published_key_list", "trusted_state"]


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
    #: What a publication without the snapshot means for verifiers (a network-mode issuer pushes it).
    unpublished_note: str = "not visible to verifiers until the next `healthcode-keys publish`"

    def __post_init__(self) -> None:
        self.province = province_code(self.province)
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
        now = aware_utc(now)
        return key_set, tuple(KeyInfo(k, k.state_at(now), k.signs_at(now)) for k in key_set.keys)

    def plan(self, now: _dt.datetime) -> RotationPlan | None:
        """The next rotation due at ``now`` (live counts, if any: the 80 % cap plan sees them)."""
        return self._with_live_counts(self.key_set()).plan_next(aware_utc(now))

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
        emergency: bool = False,
    ) -> Outcome:
        """Generate a key in the keystore and add it pre-published to the key set.

        When it signs from (unless ``use_from`` is given):

        * nothing signs now and nothing is scheduled (the first key, after a
          compromise): from ``now``, until the usage period or the next key;
        * ``rotate``: the successor :meth:`ProvinceKeySet.plan_next` proposes
          (from the end of the current key's use), or, if nothing is due yet,
          ``now + lead_time`` (an early rotation cuts the current key short);
        * otherwise ``now + lead_time``: published now, the key signs only when
          every verifier that syncs within the lead time already holds it;
        * ``emergency``: from ``now``, cutting the signing key short (refused
          unless the key policy's ``allow_emergency`` is on; a province with
          no signing key, after a compromise, needs no permission), until the
          usage period or the next scheduled key. Publish at once: terminals
          refuse its codes until they have synced its key list.

        The window is checked against the policy *before* the key is
        generated, so a refused request leaves no orphan key in an HSM.
        """
        if self.keystore is None:
            raise PolicyViolation("no keystore to generate the key in")
        now = aware_utc(now)
        algorithm = Algorithm(algorithm)
        with self._changing() as box:
            key_set: ProvinceKeySet = box[0]
            policy = key_set.policy
            note = ""
            plan = self._with_live_counts(key_set).plan_next(now)
            if emergency and use_from is None:
                use_from, note = now, " (emergency rotation)"
                later = [k.use_from for k in key_set.keys
                         if k.use_from > now and k.use_from < k.use_until and k.status is KeyState.PREPUBLISHED]
                if later and use_until is None:
                    use_until = min(now + policy.usage_period, min(later))
            if use_from is None:
                if plan is not None and (plan.reason is PlanReason.NO_SIGNING_KEY or rotate):
                    use_from, use_until = plan.use_from, use_until or plan.use_until
                    note = f" ({plan.reason.value} plan)"
                else:
                    use_from = now + policy.lead_time
                    note = " (now + lead time" + (": early rotation" if rotate else "") + ")"
            use_from = aware_utc(use_from)
            # (1) the policy's checks with a throwaway public key of the same algorithm
            probe = healthcode.generate_signing_key(algorithm).public_key()
            key_set.add_prepublished(probe, use_from=use_from, now=now, use_until=use_until, kid=b"\x00probe",
                                     emergency=emergency)
            # (2) the real key
            label = label or f"{self.province}-{algorithm.value.lower()}-{use_from:%Y%m%d}"
            handle = self.keystore.generate(algorithm, label=label)
            try:
                public = self.keystore.public_key(handle)
                new = key_set.add_prepublished(public, use_from=use_from, now=now, handle=handle,
                                               use_until=use_until, emergency=emergency)
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

    def allow_emergency_rotation(self, allowed: bool) -> Outcome:
        """Turn the key policy's ``allow_emergency`` on or off (a new key-set revision if it changes)."""
        with self._changing() as box:
            box.append(box[0].with_emergency_rotation(allowed))
        new = box[1]
        state = "allowed" if allowed else "not allowed"
        if new is box[0]:
            return Outcome(f"province {self.province}: emergency rotation already {state}", key_set=new)
        return Outcome(f"province {self.province}: emergency rotation {state}; key set revision {new.revision}",
                       (str(self.key_set_path),), key_set=new)

    def mark_compromised(
        self, kid: bytes | str, *, since: _dt.datetime, now: _dt.datetime, reject_all: bool = False
    ) -> Outcome:
        """Mark a key compromised since ``since`` (not in the future): codes it signed at or after
        ``since`` (all of them with ``reject_all``) are rejected once verifiers have the published list."""
        now, since = aware_utc(now), aware_utc(since)
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
        now = aware_utc(now)
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
        now = aware_utc(now)
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
        now = aware_utc(now)
        snapshot = self.publish_snapshot if snapshot is None else snapshot
        key_set = self.key_set()
        trusted = key_set.trusted_keys(now)
        warnings = []
        if _signing_key(key_set, now) is None:
            warnings.append(f"no key of province {self.province} signs now")
        with self.repo.lock():
            previous = published_key_list(self.repo, self.province)
            serial = 1 if previous is None else previous.serial + 1
            province = ProvinceCode(self.province)  # checked by __post_init__
            key_list = KeyList(province=province, serial=serial, keys=trusted)
            change = self.repo.publish_key_list(key_list, list(self.tuf_signers), now=now)
            role = self.repo.province_targets(self.province)
            if role is None:  # publish_key_list has just written it
                raise TrustRepoError(f"province {self.province}'s targets metadata is missing after publishing")
            role_version = role.version
            written = [str(self.repo.directory / p) for p in change.written]
            plural = "" if len(trusted) == 1 else "s"
            outcome = Outcome(
                f"province {self.province} key list serial {serial} ({len(trusted)} key{plural}: "
                + ", ".join(f"{t.kid.hex()} {trusted_state(t, now)}" for t in trusted) + f")\n{change.summary}",
                tuple(written), tuple(warnings) + change.warnings, serial=serial, role_version=role_version,
                key_set=key_set)
            if snapshot:
                published = self.repo.publish(now=now)
                outcome = outcome.then(Outcome(published.summary,
                                               tuple(str(self.repo.directory / p) for p in published.written),
                                               published.warnings), published=True)
            else:
                outcome = outcome.then(Outcome(self.unpublished_note))
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


def trusted_state(key: TrustedKey, now: _dt.datetime) -> str:
    """A published key's state at ``now`` as people read it (``active``, ``retired``, ...)."""
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
