"""``healthcode-issuer``: the issuer's command line, a thin click shell over :mod:`issuer.app`.

This is the only place that reads argv and the environment. Commands:

* ``serve``: run the gRPC issuer (see ``healthcode-issuer serve --help``);
* ``batch-issue``: codes and printable QR sheets for a CSV of residents;
* ``reprint``: a new printed code for one resident at the front desk (the old
  ones revoked, so there is never a second valid code).

Further commands attach to :data:`cli` with ``@cli.command()``. Every expected
failure (the issuer's errors, files, RPC errors) ends in one ``Error:`` line on
stderr and exit 1 (:func:`shellkit.cli.run_click`), never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys

import click

from issuer.config import ConfigError, IssuerConfig, load_config
from issuer.errors import IssuerError

__all__ = ["cli", "main"]

_PATH = click.Path(path_type=pathlib.Path, dir_okay=False)
_EXISTING = click.Path(path_type=pathlib.Path, dir_okay=False, exists=True)


class _DatabaseType(click.ParamType):
    """An SQLite file path, or a PostgreSQL URL passed through as text (a path would fold its ``//``)."""

    name = "path|url"

    def convert(self, value, param, ctx):
        from issuer.store import is_postgres_url

        return value if is_postgres_url(value) else _PATH.convert(value, param, ctx)


_DATABASE = _DatabaseType()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="healthcode", prog_name="healthcode-issuer")
def cli() -> None:
    """Issue electronic health codes for one province."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(path_type=pathlib.Path, dir_okay=False, exists=True),
              help="TOML config file; flags override it.")
@click.option("--province", help="GB/T 2260 province code this issuer signs for, e.g. 33.")
@click.option("--database", type=_DATABASE,
              help="SQLite database file (created if missing), or postgresql://user@host/db[?schema=NAME].")
@click.option("--listen", help="gRPC address host:port [default: 127.0.0.1:50051].")
@click.option("--tls-cert", type=_PATH, help="Server certificate chain (PEM).")
@click.option("--tls-key", type=_PATH, help="Server private key (PEM).")
@click.option("--client-ca", type=_PATH, help="CA of client certificates: turns on mTLS (certificate required).")
@click.option("--insecure-dev-plaintext", is_flag=True, default=None,
              help="Serve without TLS. Development only; never in production.")
@click.option("--api-keys", type=_PATH, help="TOML file of callers and their API key SHA-256 hashes.")
@click.option("--rate", type=float, help="Per-caller requests a second (token bucket) [default: 100].")
@click.option("--burst", type=float, help="Per-caller bucket size [default: 200].")
@click.option("--code-validity-hours", type=float, help="Validity of issued codes in hours [default: 168].")
@click.option("--signing-key", type=_PATH, help="Province signing key, PKCS#8 PEM (P-256 or Ed25519).")
@click.option("--signing-key-passphrase-env", metavar="VAR",
              help="Environment variable holding the signing key's passphrase.")
@click.option("--vault-key", type=_PATH, help="File with the 32-byte identifier vault secret as 64 hex digits.")
@click.option("--key-set", type=_PATH, help="Rotating keys: the province key set (instead of --signing-key).")
@click.option("--key-set-check-interval", type=float,
              help="Seconds between checks of the key-set file for changes [default: 5].")
@click.option("--keystore", type=click.Choice(["file", "pkcs11"]), help="Where the key set's private keys live.")
@click.option("--keystore-dir", type=click.Path(path_type=pathlib.Path, file_okay=False),
              help="File keystore directory (--keystore file).")
@click.option("--pkcs11-module", type=_PATH, help="PKCS#11 module path (--keystore pkcs11).")
@click.option("--pkcs11-token", help="PKCS#11 token label (--keystore pkcs11).")
@click.option("--trust-repo", type=click.Path(path_type=pathlib.Path, file_okay=False),
              help="National trust repository: serves the KeyAdmin service (needs --key-set and --client-ca).")
@click.option("--tuf-keys", type=click.Path(path_type=pathlib.Path, file_okay=False),
              help="Directory of the province's TUF role keys (KeyAdmin PublishKeyList).")
@click.option("--tuf-keys-passphrase-env", metavar="VAR", help="Environment variable holding their passphrase.")
@click.option("--online-keys", type=click.Path(path_type=pathlib.Path, file_okay=False),
              help="Directory of the snapshot and timestamp keys: PublishKeyList then publishes at once.")
@click.option("--online-keys-passphrase-env", metavar="VAR", help="Environment variable holding their passphrase.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Prometheus HTTP port; 0 = off [default: 0].")
@click.option("--metrics-address", help="Prometheus HTTP address [default: 127.0.0.1].")
@click.option("--http-listen", metavar="HOST:PORT",
              help="Also serve Connect and gRPC-Web on this address (turns [http] on; port 0: a free one).")
@click.option("--http-wallet-dir", type=click.Path(path_type=pathlib.Path, file_okay=False),
              help="The web wallet's built files, served at /wallet/ [default: webwallet/dist if built].")
@click.option("--grace-period", type=float, help="Seconds in-flight RPCs get at shutdown [default: 10].")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Log level [default: INFO].")
def serve(config_file: pathlib.Path | None, code_validity_hours: float | None, **flags) -> None:
    """Run the gRPC issuer until SIGTERM or SIGINT, then drain and stop.

    Settings come from --config and/or flags (a flag overrides the file).
    Logs are JSON lines on stderr, without identity numbers or main index IDs.
    """
    import datetime as dt

    from issuer import app
    from issuer.logs import configure_logging

    if code_validity_hours is not None:
        flags["code_validity"] = dt.timedelta(hours=code_validity_hours)
    if flags.get("http_listen") is not None:
        flags["http_enabled"] = True
    try:
        config = load_config(config_file, flags)
        passphrase = _passphrase(config)
        tuf_passphrase = _secret(config.tuf_keys_passphrase_env, "TUF role keys passphrase")
        online_passphrase = _secret(config.online_keys_passphrase_env, "online keys passphrase")
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    configure_logging(config.log_level)
    try:
        asyncio.run(app.run(config, signing_key_passphrase=passphrase, tuf_keys_passphrase=tuf_passphrase,
                            online_keys_passphrase=online_passphrase))
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    except IssuerError as e:  # e.g. StoreInUse: another issuer runs on this database (messages hold no identifiers)
        raise click.ClickException(f"cannot serve: {e.message}") from None


def _client_options(command):
    """The connection options every client command shares: server, CA, API key and/or client certificate."""
    for option in reversed((
        click.option("--server", required=True, help="Issuer address host:port."),
        click.option("--ca", "ca_file", required=True, type=_EXISTING,
                     help="CA certificate (PEM) the issuer's TLS certificate chains to."),
        click.option("--api-key-file", type=_EXISTING,
                     help="File holding the API key (owner-only: chmod 600). Needs an issuance-client caller."),
        click.option("--cert", "cert_file", type=_EXISTING,
                     help="Client certificate (PEM) for an issuer with a client CA (mTLS); with --key."),
        click.option("--key", "key_file", type=_EXISTING,
                     help="Private key (PEM) of --cert (owner-only: chmod 600)."),
        click.option("--retry-seconds", type=click.FloatRange(0, 3600), default=60.0, show_default=True,
                     help="Longest a call is retried (exponential backoff with jitter) after RESOURCE_EXHAUSTED, "
                          "UNAVAILABLE or DEADLINE_EXCEEDED."),
    )):
        command = option(command)
    return command


def _connect(server: str, ca_file: pathlib.Path, api_key_file: pathlib.Path | None, cert_file: pathlib.Path | None,
             key_file: pathlib.Path | None, retry_seconds: float):
    """An :class:`issuer.client.IssuerClient` from the shared options; secrets must be owner-only files."""
    from shellkit.files import read_secret

    from issuer.client import Backoff, IssuerClient

    if (cert_file is None) != (key_file is None):
        raise click.UsageError("--cert and --key go together (the client certificate and its private key)")
    if api_key_file is None and cert_file is None:
        raise click.UsageError("give --api-key-file, or --cert and --key, or both")
    api_key = read_secret(api_key_file, what="API key file").decode("utf-8").strip() if api_key_file else None
    key_pem = read_secret(key_file, what="client private key") if key_file else None
    return IssuerClient(server, ca_pem=ca_file.read_bytes(), api_key=api_key,
                        cert_pem=cert_file.read_bytes() if cert_file else None, key_pem=key_pem,
                        backoff=Backoff(budget=retry_seconds))


def _retried(client) -> str:
    by_code = client.retries_by_code
    if not by_code:
        return ""
    return "; retried " + ", ".join(f"{n} after {code}" for code, n in sorted(by_code.items()))


@cli.command("batch-issue")
@click.argument("csv_file", type=click.Path(path_type=pathlib.Path, dir_okay=False, exists=True))
@_client_options
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=pathlib.Path, file_okay=False),
              help="Output directory (created 0700): journal, rejected rows, sheets. "
                   "Rerun with the same one to resume.")
@click.option("--format", "fmt", type=click.Choice(["pdf", "png"]), default="pdf", show_default=True,
              help="Printable sheets as one PDF (with a text layer) or PNG pages.")
@click.option("--per-page", type=click.IntRange(1, 6), default=6, show_default=True,
              help="Slips an A4 page (1-3 in one column, 4-6 in two).")
def batch_issue(csv_file: pathlib.Path, server: str, ca_file: pathlib.Path, api_key_file: pathlib.Path | None,
                cert_file: pathlib.Path | None, key_file: pathlib.Path | None, retry_seconds: float,
                out_dir: pathlib.Path, fmt: str, per_page: int) -> None:
    """Issue codes for a CSV of residents and print QR sheets for those without smartphones.

    CSV header: document_type,document_number[,country]. Resumable: after an
    interruption, run the same command again; no resident gets a second code
    (every row's IssueCode carries an idempotency key, so retries are safe too).
    """
    import datetime as dt

    from tqdm import tqdm

    from issuer.batch import Issued, render_sheets, run_batch
    from issuer.sheets import SheetError

    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()  # dates of birth are China Standard Time
    with _connect(server, ca_file, api_key_file, cert_file, key_file, retry_seconds) as client:
        def issue_row(row, idempotency_key):
            code = client.issue(client.find_or_register(row.document), idempotency_key=idempotency_key)
            return Issued(code.ref.serial, code.ref.kid.hex(), code.code_text,
                          code.expires_at.ToDatetime(tzinfo=dt.timezone.utc).isoformat(), code.ref.province)

        def progress(rows, total):
            return tqdm(rows, total=total, unit="code", desc="issuing", file=sys.stderr, mininterval=0.5)

        try:
            result = run_batch(csv_file.read_bytes(), out_dir, issue_row=issue_row, today=today, progress=progress)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        retried = _retried(client)
    try:
        sheets = render_sheets(result.issued, out_dir, fmt=fmt, per_page=per_page)
    except SheetError as e:
        raise click.ClickException(f"{e} (the codes are issued and in {out_dir}; rerun to print)") from None
    click.echo(f"{len(result.issued)} codes ({result.resumed} from an earlier run), "
               f"{len({r.row for r in result.rejected})} rows rejected (see {out_dir / 'rejected.csv'}); "
               f"sheets: {', '.join(str(p) for p in sheets) or 'none'}{retried}")


_REPRINT_REASONS = {"lost": "REVOCATION_REASON_LOST_DEVICE", "other": "REVOCATION_REASON_OTHER"}


@cli.command("reprint")
@_client_options
@click.option("--document-type", required=True, help="Document type, e.g. resident_id, passport.")
@click.option("--document-number-file", required=True, type=click.Path(path_type=pathlib.Path, dir_okay=False,
              allow_dash=True), help="File holding the document number ('-': standard input), kept out of argv.")
@click.option("--country", help="ISO 3166-1 alpha-3 country (passports only).")
@click.option("--reason", type=click.Choice(sorted(_REPRINT_REASONS)), default="lost", show_default=True,
              help="Why the earlier codes are revoked: lost (LOST_DEVICE) or other (OTHER, e.g. damaged).")
@click.option("--out", "out_file", required=True, type=click.Path(path_type=pathlib.Path, dir_okay=False),
              help="The slip to print: a .pdf (with a text layer) or a .png file (written owner-only).")
def reprint(server: str, ca_file: pathlib.Path, api_key_file: pathlib.Path | None, cert_file: pathlib.Path | None,
            key_file: pathlib.Path | None, retry_seconds: float, document_type: str,
            document_number_file: pathlib.Path, country: str | None, reason: str, out_file: pathlib.Path) -> None:
    """Print a new code for one resident (lost or damaged sheet), revoking the earlier printed ones.

    The resident is found by their document. Their live static (printed) codes
    are revoked first, with the reprint's reason, so the lost sheet stops
    working; a phone credential the resident may also hold is left alone. Then
    one new code is issued with a fresh idempotency key (retries of this call
    reuse it, so a retry cannot give a second code) and written as one slip. If
    the command fails after the revocation, run it again: the resident then
    gets their new code.
    """
    import datetime as dt
    import uuid

    from shellkit.files import write_file_atomically
    from shellkit.times import beijing

    from issuer.api import common_pb2, wallets_pb2
    from issuer.batch import masked
    from issuer.documents import DocumentError, parse_document
    from issuer.sheets import SheetCode, SheetError, render_sheet_pdf, render_sheet_png

    suffix = out_file.suffix.lower()
    if suffix not in (".pdf", ".png"):
        raise click.UsageError("--out must end in .pdf or .png")
    raw = sys.stdin.read() if str(document_number_file) == "-" else document_number_file.read_text(encoding="utf-8")
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    try:
        document = parse_document(document_type.strip(), raw.strip(), country=country, today=today)
    except DocumentError as e:
        raise click.UsageError(
            "bad document: " + "; ".join(f"{v.field}: {v.description}" for v in e.violations)
        ) from None
    except (TypeError, ValueError) as e:
        raise click.UsageError(f"bad document: {e}") from None
    with _connect(server, ca_file, api_key_file, cert_file, key_file, retry_seconds) as client:
        main_index_id = client.find(document)
        why = common_pb2.RevocationReason.Value(_REPRINT_REASONS[reason])
        revoked = sum(client.revoke(live.code.ref, reason=why) for live in client.live_codes(main_index_id)
                      if live.channel == wallets_pb2.CHANNEL_STATIC)
        code = client.issue(main_index_id, idempotency_key=f"reprint-{uuid.uuid4()}")
        retried = _retried(client)
    expires = code.expires_at.ToDatetime(tzinfo=dt.timezone.utc)
    slip = SheetCode(code.code_text, code.ref.province, masked(document.number), expires, label="补打 Reprint")
    try:
        data = (render_sheet_pdf([slip], per_page=4) if suffix == ".pdf" else render_sheet_png([slip], per_page=4)[0])
    except SheetError as e:
        raise click.ClickException(f"{e}; the new code is issued (serial {code.ref.serial}): "
                                   "rerun to print (that revokes it and issues another)") from None
    write_file_atomically(out_file, data)
    click.echo(f"revoked {revoked} earlier printed code(s); new code serial {code.ref.serial}, valid until "
               f"{beijing(expires)}; wrote {out_file}{retried}")


def _secret(variable: str | None, what: str) -> bytes | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if value is None:
        raise ConfigError(f"environment variable {variable} ({what}) is not set")
    return value.encode("utf-8")


def _passphrase(config: IssuerConfig) -> bytes | None:
    if config.signing_key_passphrase_env is None:
        return None
    value = os.environ.get(config.signing_key_passphrase_env)
    if value is None:
        raise ConfigError(
            f"environment variable {config.signing_key_passphrase_env} (signing key passphrase) is not set"
        )
    return value.encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``healthcode-issuer`` script.

    One ``Error:`` line, never a traceback, for expected failures.
    """
    import grpc

    from shellkit.cli import run_click

    return run_click(cli, argv, prog_name="healthcode-issuer", expected=(IssuerError, OSError, grpc.RpcError))


if __name__ == "__main__":
    sys.exit(main())
