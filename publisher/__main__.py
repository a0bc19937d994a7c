"""``healthcode-publisher``: the national trust publisher's command line, a thin click shell.

The only place that reads argv and the environment. Commands:

* ``serve``: run the publisher (:mod:`publisher.app`) until SIGTERM/SIGINT;
* ``status``: ask a running publisher what is published, what is pushed but
  not yet published, and when the timestamp expires.

Expected failures end in one ``Error:`` line and exit 1 (:func:`shellkit.cli.run_click`).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys

import click
import grpc

from issuer.logs import configure_logging
from shellkit.files import read_secret
from shellkit.times import iso_utc

from .config import load_config
from .errors import ConfigError, PublisherError

__all__ = ["cli", "main"]

_FILE = click.Path(path_type=pathlib.Path, dir_okay=False)
_DIR = click.Path(path_type=pathlib.Path, file_okay=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="healthcode", prog_name="healthcode-publisher")
def cli() -> None:
    """The national trust publisher: provinces push their signed role, it is published at once."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(path_type=pathlib.Path, dir_okay=False, exists=True),
              help="TOML config file (publisher/config.py has an example); flags override it.")
@click.option("--repository", type=_DIR, help="The national trust repository directory.")
@click.option("--state-dir", type=_DIR, help="Staged pushes and the ledger (outside the repository).")
@click.option("--online-keys", type=_DIR, help="Directory of the online snapshot and timestamp keys.")
@click.option("--online-passphrase-env", metavar="VAR",
              help="Environment variable with the online keys' passphrase [HEALTHCODE_PASSPHRASE_ONLINE].")
@click.option("--listen", help="gRPC address host:port [127.0.0.1:50070].")
@click.option("--tls-cert", type=_FILE, help="Server certificate chain (PEM).")
@click.option("--tls-key", type=_FILE, help="Server private key (PEM, owner-only).")
@click.option("--client-ca", type=_FILE, help="CA of the provinces' and national operators' client certificates.")
@click.option("--batch-window", type=float, help="Seconds a push waits for others to share its publication [0.5].")
@click.option("--timestamp-refresh", type=float, help="Seconds between timestamp refreshes [3600].")
@click.option("--retention", type=float, help="Seconds after which old versions are pruned (0: never) [86400].")
@click.option("--metrics-port", type=int, help="Prometheus port (0: off) [0].")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def serve(config_file: pathlib.Path | None, online_passphrase_env: str | None, **flags: object) -> None:
    """Accept province pushes, publish them promptly, keep the timestamp fresh (JSON log on stderr)."""
    from .app import run

    config = load_config(config_file, {**flags, "online_passphrase_env": online_passphrase_env})
    secret = os.environ.get(config.online_passphrase_env)
    if secret is None:
        raise ConfigError(f"no passphrase for the online keys: set {config.online_passphrase_env}")
    configure_logging(config.log_level)
    asyncio.run(run(config, online_passphrase=secret.encode("utf-8")))


@cli.command()
@click.option("--publisher", "address", required=True, help="The publisher's host:port.")
@click.option("--ca", type=_FILE, required=True, help="CA of the publisher's certificate (PEM).")
@click.option("--cert", type=_FILE, required=True, help="Client certificate: CN national:<name> or province:<code>.")
@click.option("--key", type=_FILE, required=True, help="Its private key (owner-only).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (UTC).")
def status(address: str, ca: pathlib.Path, cert: pathlib.Path, key: pathlib.Path, as_json: bool) -> None:
    """What is published, what is pushed but not yet published, each province's newest publication."""
    from .client import PublisherClient, status_lines

    with PublisherClient(address, ca_pem=ca.read_bytes(), cert_pem=cert.read_bytes(),
                         key_pem=read_secret(key, what="client key")) as client:
        report = client.status()
    if as_json:
        def t(moment: object) -> str | None:
            return iso_utc(moment) if moment is not None else None  # type: ignore[arg-type]

        click.echo(json.dumps({
            "now": t(report.now), "snapshot_version": report.snapshot_version,
            "timestamp_version": report.timestamp_version, "timestamp_expires": t(report.timestamp_expires),
            "last_publication": t(report.last_publication),
            "provinces": [{"province": p.province, "published_version": p.published_version,
                           "published_at": t(p.published_at), "accepted_version": p.accepted_version,
                           "accepted_at": t(p.accepted_at), "pending": p.accepted_version > p.published_version}
                          for p in report.provinces]}, indent=1))
        return
    for line in status_lines(report):
        click.echo(line)


def main(argv: list[str] | None = None) -> int:
    from shellkit.cli import run_click

    return run_click(cli, argv, prog_name="healthcode-publisher", expected=(PublisherError, OSError, grpc.RpcError))


if __name__ == "__main__":
    sys.exit(main())
