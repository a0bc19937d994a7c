"""``healthcode-keys``: the key ceremonies, a thin click shell over the ``keys`` library.

:mod:`keys.ceremony` (the national ceremonies), :mod:`keys.province_keys` (a
province's keys) and :mod:`keys.repo_status` (``status``) do the work; the ``province`` commands are
in :mod:`keys.cli_province`, the shell helpers in :mod:`keys.cli_common`.

With those two modules, the only place in ``keys/`` that reads argv, the
environment, the terminal and the clock. Every command prints what it changed (files written, versions,
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
import pathlib
import sys

import click

from keys.cli_common import TIME, _DIR, _FILE, _echo, _guarded, _official_option, _State, pass_state
from keys.cli_province import province

__all__ = ["cli", "main"]


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


cli.add_command(province)


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
