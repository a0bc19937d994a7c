"""``healthcode-keys province ...``: delegate to a province, manage its signing keys, publish its key list.

Registered on the ``healthcode-keys`` group by :mod:`keys.__main__`; the work is
done by :mod:`keys.province_keys` and :mod:`keys.ceremony`.
"""

from __future__ import annotations

import datetime as dt
import pathlib

import click

from keys.cli_common import (
    TIME,
    _FILE,
    _PROVINCE,
    _echo,
    _guarded,
    _home,
    _home_option,
    _keystore_options,
    _official_option,
    _open_keystore,
    _policy,
    _State,
    pass_state,
)


@click.group()
def province() -> None:
    """A province: delegate to it, manage its signing keys, publish its key list."""


@province.command("add")
@_PROVINCE
@_home_option
@_official_option
@click.option("--tuf-keys", type=click.IntRange(1, 10), default=3, show_default=True,
              help="TUF role keys to generate for the province (in HOME/tuf-CODE).")
@click.option("--tuf-threshold", type=int, default=2, show_default=True,
              help="Province role signatures needed to publish its files.")
@click.option("--tuf-public-key", "public_keys", multiple=True, type=_FILE,
              help="Use this role public key (.pub.json) the province generated itself (repeat); "
                   "no key is generated.")
@click.option("--usage-days", type=float, default=None, help="Key set policy: days a key signs [90].")
@click.option("--lead-days", type=float, default=None, help="Key set policy: days a key is published before use [7].")
@click.option("--max-codes", type=click.IntRange(1), default=None, help="Key set policy: codes per key [10000000].")
@click.option("--code-validity-days", type=float, default=None, help="Key set policy: longest code validity [7].")
@pass_state
@_guarded
def province_add(state: _State, code: str, home: pathlib.Path | None, officials, tuf_keys: int, tuf_threshold: int,
                 public_keys, usage_days, lead_days, max_codes, code_validity_days) -> None:
    """Delegate provinces/CODE/* to the province's own TUF keys (signed by a threshold of the
    officials' targets keys) and create the province's key set."""
    from keys import ceremony

    place = _home(code, home)
    policy = _policy(usage_days, lead_days, max_codes, code_validity_days)
    repo = state.repo()
    targets_signers = ceremony.load_officials(state.national(), "targets", state.passphrases,
                                              holders=officials or None)
    outcome = ceremony.add_province(
        repo, place, targets_signers=targets_signers, passphrase=state.passphrases, now=state.now,
        tuf_keys=tuf_keys, tuf_threshold=tuf_threshold,
        public_keys=ceremony.read_role_public_keys(public_keys) if public_keys else (), policy=policy)
    _echo(outcome)
    click.echo(f"next: `healthcode-keys province key generate {place.code}`, then "
               f"`healthcode-keys province publish {place.code}`")


@province.group("key")
def province_key() -> None:
    """A province's code-signing keys (the key set of keys/lifecycle.py)."""


def _admin(state: _State, place, *, keystore=None, repo=None, tuf_signers=(), snapshot=False, policy=None):
    from keys.province_keys import ProvinceKeyAdmin

    return ProvinceKeyAdmin(province=place.code, key_set_path=place.key_set_path, keystore=keystore, repo=repo,
                            tuf_signers=tuf_signers, publish_snapshot=snapshot, policy_for_new=policy)


def _key_add(state: _State, code, home, algorithm, use_from, label, rotate: bool, emergency: bool = False,
             **keystore_options) -> None:
    from healthcode import Algorithm

    place = _home(code, home)
    keystore = _open_keystore(place, **keystore_options)
    try:
        from keys.managed_key import RotationPolicy

        # a province that made its own TUF keys (province add --tuf-public-key) starts its key set here
        admin = _admin(state, place, keystore=keystore, policy=RotationPolicy())
        outcome = admin.add_key(state.now, algorithm=Algorithm(algorithm), use_from=use_from, label=label,
                                rotate=rotate, emergency=emergency)
    finally:
        keystore.close()
    _echo(outcome)


_algorithm_option = click.option("--algorithm", type=click.Choice(["ES256", "EdDSA", "SM2-SM3"]), default="ES256",
                                 show_default=True, help="Signature algorithm (SM2 in the file keystore only).")
_use_from_option = click.option("--use-from", type=TIME, default=None,
                                help="When the key starts signing [default: now + the policy's lead time; "
                                     "now for a province with no signing key].")
_label_option = click.option("--label", default=None, help="Keystore label [default: CODE-ALG-YYYYMMDD].")


@province_key.command("generate")
@_PROVINCE
@_home_option
@_keystore_options
@_algorithm_option
@_use_from_option
@_label_option
@pass_state
@_guarded
def key_generate(state: _State, code: str, home, algorithm, use_from, label, **keystore_options) -> None:
    """Generate a signing key (file keystore or HSM) and add it pre-published to the key set."""
    _key_add(state, code, home, algorithm, use_from, label, rotate=False, **keystore_options)


@province_key.command("rotate")
@_PROVINCE
@_home_option
@_keystore_options
@_algorithm_option
@_use_from_option
@_label_option
@click.option("--emergency", is_flag=True,
              help="Sign with the new key from now on (or --use-from), without the lead time, cutting the "
                   "current key short; needs the key policy's allow-emergency (`province key policy`).")
@pass_state
@_guarded
def key_rotate(state: _State, code: str, home, algorithm, use_from, label, emergency: bool,
               **keystore_options) -> None:
    """Generate the current key's successor: it signs when the current key's period ends (or
    now + lead time if no rotation is due yet, ending the current key's use early; or now,
    with --emergency). Then publish it: `healthcode-keys province publish CODE`."""
    _key_add(state, code, home, algorithm, use_from, label, rotate=True, emergency=emergency, **keystore_options)


@province_key.command("policy")
@_PROVINCE
@_home_option
@click.option("--allow-emergency/--forbid-emergency", "allow", required=True, default=None,
              help="Whether `province key rotate --emergency` (and KeyAdmin RotateKey with emergency) may start "
                   "a new key at once, without the lead time.")
@pass_state
@_guarded
def key_policy(state: _State, code: str, home, allow: bool) -> None:
    """Change the province's key policy: whether emergency rotations are allowed."""
    place = _home(code, home)
    _echo(_admin(state, place).allow_emergency_rotation(allow))


@province_key.command("compromise")
@_PROVINCE
@click.argument("kid")
@_home_option
@click.option("--since", type=TIME, required=True,
              help="Since when the key is compromised: its codes signed at or after it are rejected.")
@click.option("--reject-all", is_flag=True, help="Reject every code the key ever signed.")
@pass_state
@_guarded
def key_compromise(state: _State, code: str, kid: str, home, since: dt.datetime, reject_all: bool) -> None:
    """Mark key KID (hex, or a unique prefix of 8+ digits) compromised; then publish at once."""
    place = _home(code, home)
    _echo(_admin(state, place).mark_compromised(kid, since=since, now=state.now, reject_all=reject_all))


@province_key.command("retire")
@_PROVINCE
@click.argument("kid")
@_home_option
@click.option("--force", is_flag=True, help="Retire even if no key signs afterwards (issuance stops).")
@pass_state
@_guarded
def key_retire(state: _State, code: str, kid: str, home, force: bool) -> None:
    """End the active key KID's use now; it keeps verifying its codes until they expire."""
    place = _home(code, home)
    _echo(_admin(state, place).retire(kid, now=state.now, force=force))


@province_key.command("expire")
@_PROVINCE
@_home_option
@click.option("--destroy", is_flag=True, help="Also delete the expired keys' private keys from the keystore.")
@_keystore_options
@pass_state
@_guarded
def key_expire(state: _State, code: str, home, destroy: bool, **keystore_options) -> None:
    """Drop the keys past their verify_until from the key set (and, with --destroy, the keystore)."""
    place = _home(code, home)
    keystore = _open_keystore(place, **keystore_options) if destroy else None
    try:
        _echo(_admin(state, place, keystore=keystore).expire(now=state.now, destroy=destroy))
    finally:
        if keystore is not None:
            keystore.close()


@province_key.command("list")
@_PROVINCE
@_home_option
@pass_state
@_guarded
def key_list(state: _State, code: str, home) -> None:
    """The province's key set: each key's state now, and the next rotation due."""
    place = _home(code, home)
    admin = _admin(state, place)
    key_set, infos = admin.list_keys(state.now)
    policy = key_set.policy
    click.echo(f"province {key_set.province} key set revision {key_set.revision} ({place.key_set_path}): "
               f"usage {policy.usage_period.days}d, lead time {policy.lead_time.days}d, "
               f"codes per key {policy.max_codes_per_key}")
    for info in infos:
        k = info.key
        where = f"{k.handle.backend}:{k.handle.label}" if k.handle else "no private key here"
        click.echo(f"  {k.kid.hex()} {k.algorithm.value:<7} {info.state.value:<12}{'*' if info.signing else ' '} "
                   f"signs {k.use_from:%Y-%m-%dT%H:%M:%SZ} .. {k.use_until:%Y-%m-%dT%H:%M:%SZ}, verifies until "
                   f"{k.verify_until:%Y-%m-%dT%H:%M:%SZ}, {_codes_of_cap(k.codes_signed, policy)}, {where}")
    plan = key_set.plan_next(state.now)
    click.echo("next rotation: " + ("none due" if plan is None else
                                    f"{plan.reason.value}: a key signing from {plan.use_from:%Y-%m-%dT%H:%M:%SZ}"
                                    f" (`healthcode-keys province key rotate {key_set.province}`)"))


def _codes_of_cap(count: int, policy) -> str:
    """``8,000 of 10,000 codes signed (80.0 % of the cap: at least 80 %, rotate early)``."""
    share = count / policy.max_codes_per_key
    text = f"{count:,} of {policy.max_codes_per_key:,} codes signed ({share * 100:.1f} % of the cap"
    if count >= policy.max_codes_per_key:
        return text + ": CAP REACHED, the key signs no more)"
    if share >= policy.cap_plan_fraction:
        return text + f": at least {policy.cap_plan_fraction * 100:g} %, rotate early)"
    return text + ")"


@province.command("publish")
@_PROVINCE
@_home_option
@click.option("--snapshot/--no-snapshot", default=True, show_default=True,
              help="Also write snapshot and timestamp (needs the online keys).")
@pass_state
@_guarded
def province_publish(state: _State, code: str, home, snapshot: bool) -> None:
    """Sign the province's key list (keys.json from its key set) with its TUF keys, then
    snapshot and timestamp: verifiers have it at their next refresh."""
    from keys import ceremony

    place = _home(code, home)
    repo = state.repo(online=snapshot)
    signers = ceremony.province_signers(place, state.passphrases)
    admin = _admin(state, place, repo=repo, tuf_signers=signers, snapshot=snapshot)
    _echo(admin.publish(now=state.now))
