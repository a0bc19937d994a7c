"""The shell helpers of ``healthcode-keys`` (:mod:`keys.__main__`, :mod:`keys.cli_province`).

Times from the command line (``TIME``), the holders' passphrases and the
keystore's secret (environment, else a prompt on a terminal), the command
state (``pass_state``: the repository, the national keys, the one clock
reading), the shared options, and ``_guarded``, which turns the package's
refusals into one-line errors. Private to the CLI's modules.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import re
import sys
from typing import Any

import click


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
