"""``healthcode-national``: the national index's command line, a thin click shell over :mod:`national.app`.

The only place that reads argv and the environment. Commands:

* ``serve --config FILE``: run the national gRPC service (mTLS);
* ``key generate --config FILE``: create the national blind-index key in the
  configured keystore (file: owner-only, sealed under the passphrase; pkcs11:
  inside the token). It refuses to overwrite an existing key.

The key's passphrase (file keystore) or the token's user PIN (pkcs11) is read
from the environment variable ``key.passphrase_env`` names
(default ``HC_NATIONAL_KEY_PASSPHRASE``).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys

import click

from .config import NationalConfig, load_config
from .errors import ConfigError, NationalError

__all__ = ["cli", "main"]

_CONFIG = click.Path(path_type=pathlib.Path, dir_okay=False, exists=True)


def _secret(config: NationalConfig) -> bytes:
    value = os.environ.get(config.key_passphrase_env)
    if not value:
        raise ConfigError(f"set {config.key_passphrase_env} to the national key's passphrase (or the token's PIN)")
    return value.encode("utf-8")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="healthcode", prog_name="healthcode-national")
def cli() -> None:
    """The national main index: provinces claim identities, hospitals resolve codes."""


@cli.command()
@click.option("--config", "config_file", type=_CONFIG, required=True, help="TOML config file (national/config.py).")
def serve(config_file: pathlib.Path) -> None:
    """Serve the national index over mTLS until SIGTERM or SIGINT (SIGHUP re-reads the trusted keys)."""
    from issuer.logs import configure_logging

    from .app import run

    config = load_config(config_file)
    secret = _secret(config)
    configure_logging(config.log_level)
    asyncio.run(run(config, key_secret=secret))


@cli.group()
def key() -> None:
    """The national blind-index key."""


@key.command("generate")
@click.option("--config", "config_file", type=_CONFIG, required=True, help="TOML config file naming the keystore.")
def key_generate(config_file: pathlib.Path) -> None:
    """Create the national key in the configured keystore (never overwrites one)."""
    from .blind_index import generate_national_key

    config = load_config(config_file)
    where = generate_national_key(config.keystore, label=config.key_label, secret=_secret(config),
                                  directory=config.key_directory, module=config.pkcs11_module,
                                  token=config.pkcs11_token)
    click.echo(f"national key created: {where}")
    click.echo("Back it up (docs/operations.md, national service): without it the index cannot be searched.")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``healthcode-national`` script: one ``Error:`` line, never a traceback."""
    import grpc

    from shellkit.cli import run_click

    return run_click(cli, argv, prog_name="healthcode-national", expected=(NationalError, OSError, grpc.RpcError))


if __name__ == "__main__":
    sys.exit(main())
