"""``healthcode-keys``: the key ceremonies, a thin click shell over the ``keys`` library.

:mod:`keys.ceremony` (the national ceremonies), :mod:`keys.province_keys` (a
province's keys) and :mod:`keys.repo_status` (``status``) do the work.

The only place in ``keys/`` that reads argv, the environment, the terminal
and the clock. Every command prints what it changed (files written, versions,
kids). Every failure is one ``Error: ...`` line on stderr, never a traceback
(:func:`shellkit.cli.run_click`): exit status 2 for bad usage (a wrong option
or argument), 1 for everything else (a refusal, a missing secret, a file that
cannot be read). See ``docs/operations.md`` for the ceremonies step by step.

Secrets:

* a role-key holder's passphrase (an official's directory, ``online``,
  ``tuf-<code>``) comes from ``HEALTHCODE_PASSPHRASE_<HOLDER>`` (the
  directory name upper-cased, other characters as ``_``: ``official-1`` ->
  ``HEALTHCODE_PASSPHRASE_OFFICIAL_1``), else ``HEALTHCODE_PASSPHRASE``
  (rehearsals), else a hidden prompt on a terminal;
* the keystore's passphrase (file) or user PIN (PKCS#11) from the variable
  ``--keystore-secret-env`` names (default ``HEALTHCODE_KEYSTORE_SECRET``),
  else a prompt.

Time: ``--now`` (RFC 3339 with a zone) for rehearsals and tests; by default
the system clock, read once per command.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import re
import sys
from typing import Any

import click

__all__ = ["cli", "main"]

_UTC = dt.timezone.utc
_DIR = click.Path(path_type=pathlib.Path, file_okay=False)
_FILE = click.Path(path_type=pathlib.Path, dir_okay=False, exists=True)
_PROVINCE = click.argument("code")


# --------------------------------------------------------------------------- shell helpers


def _parse_time(text: str, name: str) -> dt.datetime:
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an RFC 3339 time (e.g. 2026-11-22T08:00:00Z)",
                                 param_hint=name) from None
    if moment.tzinfo is None:
        raise click.BadParameter(f"{text!r} has no time zone: add Z or +08:00", param_hint=name)
    return moment.astimezone(_UTC)


class _Time(click.ParamType):
    name = "TIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        return _parse_time(str(value), param.name if param else "time")


TIME = _Time()


class _Passphrases:
    """Passphrase per holder directory: environment, else a prompt on a terminal; asked once each."""

    def __init__(self) -> None:
        self._cache: dict[pathlib.Path, bytes] = {}

    @staticmethod
    def variable(holder: pathlib.Path) -> str:
        return "HEALTHCODE_PASSPHRASE_" + re.sub(r"[^A-Z0-9]", "_", holder.name.upper())

    def __call__(self, holder: os.PathLike | str, *, new: bool = False) -> bytes:
        holder = pathlib.Path(holder)
        key = holder.resolve()
        if key in self._cache:
            return self._cache[key]
        name = self.variable(holder)
        value = os.environ.get(name)
        if value is None:
            value = os.environ.get("HEALTHCODE_PASSPHRASE")
        if value is None:
            if not sys.stdin.isatty():  # the environment lacks a secret: exit 1, not bad usage
                raise click.ClickException(f"no passphrase for {holder}: set {name} (or HEALTHCODE_PASSPHRASE), "
                                           "or run on a terminal to be asked")
            value = click.prompt(f"{'New passphrase' if new else 'Passphrase'} for the keys in {holder}",
                                 hide_input=True, confirmation_prompt=new, err=True)
        secret = value.encode("utf-8")
        self._cache[key] = secret
        return secret


class _State:
    def __init__(self, repo: pathlib.Path, national_keys: pathlib.Path, now: dt.datetime | None) -> None:
        self.repo_dir = repo
        self.national_keys = national_keys
        rehearsal = now is not None
        self.now = now or dt.datetime.now(_UTC).replace(microsecond=0)  # the one clock reading
        self.rehearsal = rehearsal
        self.passphrases = _Passphrases()

    def national(self):
        from keys.ceremony import NationalKeys

        return NationalKeys(self.national_keys)

    def repo(self, *, online: bool = False):
        from keys import ceremony

        signers = ceremony.load_online(self.national(), self.passphrases) if online else None
        return ceremony.open_repository(self.repo_dir, online=signers)


def _echo(outcome: Any) -> None:
    for line in outcome.lines():
        click.echo(line)


def _fail(exc: BaseException) -> click.ClickException:
    from keys.errors import KeyManagementError

    if isinstance(exc, KeyManagementError):
        return click.ClickException(str(exc))
    return click.ClickException(f"{type(exc).__name__}: {exc}" if not str(exc).startswith(type(exc).__name__)
                                else str(exc))


def _guarded(func):
    """Run a command body; our refusals become one-line errors (exit 1)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from keys.errors import KeyManagementError

        try:
            return func(*args, **kwargs)
        except KeyManagementError as exc:
            raise _fail(exc) from None
        except ValueError as exc:  # open_keystore's configuration errors
            raise click.ClickException(str(exc)) from None

    return wrapper


pass_state = click.make_pass_decorator(_State)


def _home(code: str, home: pathlib.Path | None):
    from keys.ceremony import ProvinceHome
    from keys.errors import PolicyViolation

    try:
        return ProvinceHome(code, home if home is not None else pathlib.Path(f"province-{code}"))
    except PolicyViolation as exc:
        raise click.BadParameter(exc.detail, param_hint="CODE") from None


_home_option = click.option("--home", type=_DIR, default=None,
                            help="The province's directory (key set, keystore, TUF keys) [default: ./province-CODE].")
_official_option = click.option("--official", "officials", multiple=True, type=_DIR,
                                help="An official present with their keys (repeat; default: every official-* "
                                     "directory under --national-keys). A threshold must sign.")


def _keystore_options(func):
    for decorator in reversed([
        click.option("--keystore", type=click.Choice(["file", "pkcs11"]), default="file", show_default=True,
                     help="Where the private key is generated: encrypted files or a PKCS#11 token (HSM)."),
        click.option("--keystore-dir", type=_DIR, default=None,
                     help="File keystore directory [default: HOME/keystore]."),
        click.option("--pkcs11-module", type=click.Path(path_type=pathlib.Path, dir_okay=False), default=None,
                     help="PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)."),
        click.option("--pkcs11-token", default=None, help="PKCS#11 token label."),
        click.option("--keystore-secret-env", metavar="VAR", default="HEALTHCODE_KEYSTORE_SECRET", show_default=True,
                     help="Environment variable holding the file keystore's passphrase or the token's user PIN."),
    ]):
        func = decorator(func)
    return func


def _open_keystore(home, keystore: str, keystore_dir, pkcs11_module, pkcs11_token, keystore_secret_env: str):
    from keys.keystore import open_keystore

    secret = os.environ.get(keystore_secret_env)
    if secret is None:
        if not sys.stdin.isatty():  # the environment lacks a secret: exit 1, not bad usage
            raise click.ClickException(f"no keystore secret: set {keystore_secret_env}, "
                                       "or run on a terminal to be asked")
        what = "user PIN of the token" if keystore == "pkcs11" else "keystore passphrase"
        secret = click.prompt(f"{what} ({home.directory})", hide_input=True, err=True)
    return open_keystore(keystore, secret=secret, directory=keystore_dir or home.keystore_dir,
                         module=pkcs11_module, token=pkcs11_token)


def _policy(usage_days: float | None, lead_days: float | None, max_codes: int | None, validity_days: float | None):
    from keys.managed_key import RotationPolicy

    values: dict[str, Any] = {}
    if usage_days is not None:
        values["usage_period"] = dt.timedelta(seconds=round(usage_days * 86400))
    if lead_days is not None:
        values["lead_time"] = dt.timedelta(seconds=round(lead_days * 86400))
    if max_codes is not None:
        values["max_codes_per_key"] = max_codes
    if validity_days is not None:
        values["max_code_validity"] = dt.timedelta(seconds=round(validity_days * 86400))
    return RotationPolicy(**values)


# --------------------------------------------------------------------------- the group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--repo", type=_DIR, envvar="HEALTHCODE_REPO", default=pathlib.Path("trust-repo"), show_default=True,
              help="The national trust repository directory (env HEALTHCODE_REPO).")
@click.option("--national-keys", type=_DIR, envvar="HEALTHCODE_NATIONAL_KEYS", default=pathlib.Path("national-keys"),
              show_default=True, help="Directory of the officials' and online keys (env HEALTHCODE_NATIONAL_KEYS).")
@click.option("--now", type=TIME, default=None,
              help="Act as if it were this time (RFC 3339, e.g. 2026-11-22T08:00:00Z): rehearsals and tests only.")
@click.version_option(package_name="healthcode", prog_name="healthcode-keys")
@click.pass_context
def cli(ctx: click.Context, repo: pathlib.Path, national_keys: pathlib.Path, now: dt.datetime | None) -> None:
    """Key ceremonies of the national trust repository and the provinces' signing keys."""
    ctx.obj = _State(repo, national_keys, now)
    if now is not None:
        click.echo(f"rehearsal: acting at {now:%Y-%m-%dT%H:%M:%SZ} (--now)", err=True)


# --------------------------------------------------------------------------- root


@cli.group()
def root() -> None:
    """The national root: create it, rotate its keys."""


@root.command("init")
@click.option("--officials", type=click.IntRange(1, 15), default=5, show_default=True,
              help="Number of officials, each holding one root key and one national targets key.")
@click.option("--threshold", type=int, default=3, show_default=True,
              help="Root signatures needed for a new root (a majority, at least 2).")
@click.option("--targets-threshold", type=int, default=None,
              help="Targets signatures needed to change the national targets [default: --threshold].")
@pass_state
@_guarded
def root_init(state: _State, officials: int, threshold: int, targets_threshold: int | None) -> None:
    """Create the national root: officials' root and targets keys (one directory each, one
    passphrase each), the online snapshot and timestamp keys, and repository v1."""
    from keys import ceremony

    _, outcome = ceremony.init_root(state.repo_dir, state.national(), officials=officials, threshold=threshold,
                                    targets_threshold=targets_threshold, passphrase=state.passphrases,
                                    now=state.now)
    _echo(outcome)
    click.echo(f"next: give each official their directory under {state.national_keys}; ship "
               f"{state.repo_dir / 'metadata' / '1.root.json'} with every verifier as its bootstrap root")


@root.command("rotate")
@_official_option
@click.option("--new-official", "new_officials", multiple=True, type=_DIR,
              help="A holder of the new root (repeat; a directory without a root key gets a new one). "
                   "Default: the same keys, re-signed with a fresh expiry.")
@click.option("--threshold", type=int, default=None, help="Threshold of the new root [default: the current one].")
@pass_state
@_guarded
def root_rotate(state: _State, officials: tuple[pathlib.Path, ...], new_officials: tuple[pathlib.Path, ...],
                threshold: int | None) -> None:
    """Write root N+1, signed by a threshold of the current root keys and of the new ones."""
    from keys import ceremony

    outcome = ceremony.rotate_root(state.repo(), state.national(), old_holders=officials or None,
                                   new_holders=new_officials or None, passphrase=state.passphrases,
                                   now=state.now, threshold=threshold)
    _echo(outcome)


# --------------------------------------------------------------------------- online roles


@cli.command("publish")
@click.option("--force", is_flag=True, help="Write a new snapshot even if nothing changed.")
@pass_state
@_guarded
def publish_cmd(state: _State, force: bool) -> None:
    """Snapshot and timestamp (online keys): make written metadata visible to verifiers."""
    from keys import ceremony

    _echo(ceremony.publish(state.repo(online=True), now=state.now, force=force))


@cli.group()
def timestamp() -> None:
    """The timestamp role (online): refresh it at least daily."""


@timestamp.command("refresh")
@pass_state
@_guarded
def timestamp_refresh(state: _State) -> None:
    """Re-sign the timestamp over the published snapshot (cron: hourly; never less than daily)."""
    from keys import ceremony

    _echo(ceremony.refresh_timestamp(state.repo(online=True), now=state.now))


# --------------------------------------------------------------------------- status


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--publisher", metavar="HOST:PORT",
              help="Ask the running trust publisher instead (what it accepted but has not published yet).")
@click.option("--publisher-ca", type=_FILE, help="With --publisher: the CA of its certificate.")
@click.option("--publisher-cert", type=_FILE, help="With --publisher: client certificate (CN national:<name>).")
@click.option("--publisher-key", type=_FILE, help="With --publisher: its private key.")
@pass_state
@_guarded
def status(state: _State, as_json: bool, publisher: str | None, publisher_ca, publisher_cert,
           publisher_key) -> None:
    """What the repository publishes: versions, expiry, provinces and their keys' states, each province's
    newest publication (age, Beijing time), roles pushed but not yet published, when the timestamp expires."""
    if publisher is not None:
        from publisher.__main__ import status as publisher_status

        import grpc

        if None in (publisher_ca, publisher_cert, publisher_key):
            raise click.UsageError("--publisher needs --publisher-ca, --publisher-cert and --publisher-key")
        try:
            click.get_current_context().invoke(publisher_status, address=publisher, ca=publisher_ca,
                                               cert=publisher_cert, key=publisher_key, as_json=as_json)
        except grpc.RpcError as exc:
            raise click.ClickException(f"publisher {publisher}: {exc.code().name}: {exc.details()}") from None
        return
    from keys.repo_status import repository_status

    report = repository_status(state.repo(), now=state.now)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        for line in report.lines():
            click.echo(line)


# --------------------------------------------------------------------------- provinces


@cli.group()
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


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``healthcode-keys`` script: every failure is one ``Error:`` line.

    Expected (exit 1, no traceback): the package's refusals (``KeyManagementError``,
    the repository's ``TrustRepoError`` among them: ``Error: <reason>: <detail>``), a
    repository whose metadata is broken (tuf's ``RepositoryError``) and the host's
    (``OSError``: a file that cannot be read or written, a secret with a wide mode).
    The CLI speaks no gRPC. Anything else is a bug and keeps its traceback.
    """
    from tuf.api.exceptions import RepositoryError

    from keys.errors import KeyManagementError
    from shellkit.cli import run_click

    return run_click(cli, argv, prog_name="healthcode-keys",
                     expected=(KeyManagementError, RepositoryError, OSError))


if __name__ == "__main__":
    sys.exit(main())
