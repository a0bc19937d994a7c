"""``healthcode-wallet``: the reference wallet's command line, a thin click shell over :mod:`wallet`.

Commands: ``init`` (device key), ``enrol`` (credential, with proof of
possession), ``show`` (the live QR in the terminal, redrawn every 30 s),
``png`` (one presentation as a PNG), ``status`` (validity in Beijing time,
next renewal), ``renew``. This is the only place that reads argv, the
environment and the clock. Every expected failure ends in one ``Error:``
line on stderr and exit 1 (:func:`shellkit.cli.run_click`), never a
traceback.

Secrets come from owner-only files, never from arguments: the device key's
passphrase (file keystore) or the token's user PIN (PKCS#11) from
``--secret-file`` (or ``$HEALTHCODE_WALLET_SECRET_FILE``), the API key from
``--api-key-file``, the document number from ``--document-number-file``.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import sys
from collections.abc import Sequence

import click
import grpc

from shellkit.cli import run_click
from shellkit.files import read_secret, write_file_atomically
from shellkit.times import beijing, beijing_date, human_duration

__all__ = ["cli", "main"]

_EXISTING = click.Path(path_type=pathlib.Path, dir_okay=False, exists=True)
_DEFAULT_WALLET = pathlib.Path.home() / ".healthcode-wallet"
_DOCUMENT_TYPES = ["resident_id", "residence_permit_hmt", "permanent_residence_id", "travel_permit_hk_mo",
                   "travel_permit_tw", "passport"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _wallet_option(command):
    return click.option("--wallet", "wallet_dir", type=click.Path(path_type=pathlib.Path, file_okay=False),
                        envvar="HEALTHCODE_WALLET", default=_DEFAULT_WALLET, show_default=True,
                        help="Wallet directory (owner-only) [env: HEALTHCODE_WALLET].")(command)


def _secret_option(command):
    return click.option("--secret-file", type=_EXISTING, envvar="HEALTHCODE_WALLET_SECRET_FILE", required=True,
                        help="Owner-only file holding the device key's passphrase (file keystore) or the token's "
                             "user PIN (pkcs11) [env: HEALTHCODE_WALLET_SECRET_FILE].")(command)


def _retry_option(command):
    return click.option("--retry-seconds", type=click.FloatRange(0, 3600), default=10.0, show_default=True,
                        help="Longest a call to the issuer is retried when it is unreachable or busy.")(command)


def _policy_option(command):
    return click.option("--renew-below", type=click.FloatRange(0.01, 0.99), default=0.5, show_default=True,
                        help="Renew once less than this fraction of the credential's validity remains.")(command)


def _curve(algorithm) -> str:
    """How the CLI names a device key's algorithm."""
    from wallet.device import DEVICE_KEY_ALGORITHMS

    return DEVICE_KEY_ALGORITHMS.get(algorithm, str(algorithm))


def _secret(path: pathlib.Path) -> bytes:
    return read_secret(path, what="device key secret file").rstrip(b"\r\n")


def _connect(retry_seconds: float):
    """A factory of :class:`~wallet.remote.WalletClient` for stored issuer settings."""
    from issuer.client import Backoff
    from wallet.remote import WalletClient

    def connect(settings):
        api_key = read_secret(settings.api_key_file, what="API key file").decode("utf-8").strip() \
            if settings.api_key_file else None
        key_pem = read_secret(settings.key, what="client private key") if settings.key else None
        cert_pem = pathlib.Path(settings.cert).read_bytes() if settings.cert else None
        return WalletClient(settings.server, ca_pem=pathlib.Path(settings.ca).read_bytes(), api_key=api_key,
                            cert_pem=cert_pem, key_pem=key_pem, timeout=10.0,
                            backoff=Backoff(attempts=6, base=0.1, cap=2.0, budget=retry_seconds))

    return connect


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="healthcode", prog_name="healthcode-wallet")
def cli() -> None:
    """The reference wallet: hold a health code bound to this device and show it as a live QR."""


@cli.command()
@_wallet_option
@_secret_option
@click.option("--keystore", "kind", type=click.Choice(["file", "pkcs11"]), default="file", show_default=True,
              help="Where the device key lives: an encrypted key file, or a PKCS#11 token (secure element).")
@click.option("--pkcs11-module", type=_EXISTING, help="PKCS#11 module path (--keystore pkcs11).")
@click.option("--pkcs11-token", help="PKCS#11 token label (--keystore pkcs11).")
@click.option("--algorithm", "algorithm_name", type=click.Choice(["ES256", "SM2"]), default="ES256",
              show_default=True, help="The device key: ES256 (P-256, every phone's secure hardware) or SM2 "
                                      "(SM2 with SM3, where the province's issuer allows it; file keystore only).")
def init(wallet_dir: pathlib.Path, secret_file: pathlib.Path, kind: str, pkcs11_module: pathlib.Path | None,
         pkcs11_token: str | None, algorithm_name: str) -> None:
    """Create the wallet and its device key (P-256, or SM2 with --algorithm SM2)."""
    from healthcode import Algorithm
    from wallet.core import Wallet

    if kind == "pkcs11" and (pkcs11_module is None or not pkcs11_token):
        raise click.UsageError("--keystore pkcs11 needs --pkcs11-module and --pkcs11-token")
    if kind == "pkcs11" and algorithm_name == "SM2":
        raise click.UsageError("an SM2 device key cannot live in a PKCS#11 token (PKCS#11 has no standard SM2 "
                               "mechanism and SoftHSM2 has none): use --keystore file")
    algorithm = Algorithm.SM2_SM3 if algorithm_name == "SM2" else Algorithm.ES256
    with Wallet.create(wallet_dir, kind, _secret(secret_file), algorithm=algorithm,
                       module=str(pkcs11_module) if pkcs11_module else None, token=pkcs11_token) as wallet:
        point = wallet.device.public_point()
    click.echo(f"钱包已创建 Wallet created in {wallet_dir}")
    click.echo(f"设备密钥 Device key: {_curve(algorithm)} in the {kind} keystore, public key {point[:9].hex()}...")
    click.echo("下一步 Next: healthcode-wallet enrol --server ... --ca ... --document-type ... "
               "--document-number-file ...")


@cli.command()
@_wallet_option
@_secret_option
@click.option("--server", required=True, help="Issuer address host:port.")
@click.option("--ca", "ca_file", required=True, type=_EXISTING,
              help="CA certificate (PEM) the issuer's TLS certificate chains to.")
@click.option("--api-key-file", type=_EXISTING, help="Owner-only file holding the API key of the app's back end.")
@click.option("--cert", "cert_file", type=_EXISTING, help="Client certificate (PEM) for mTLS; with --key.")
@click.option("--key", "key_file", type=_EXISTING, help="Private key (PEM) of --cert (owner-only).")
@click.option("--document-type", required=True, type=click.Choice(_DOCUMENT_TYPES), help="The resident's document.")
@click.option("--document-number-file", required=True, type=_EXISTING,
              help="Owner-only file holding the document number (never given on the command line).")
@click.option("--country", help="Issuing country (ISO 3166-1 alpha-3) of a passport.")
@_retry_option
def enrol(wallet_dir: pathlib.Path, secret_file: pathlib.Path, server: str, ca_file: pathlib.Path,
          api_key_file: pathlib.Path | None, cert_file: pathlib.Path | None, key_file: pathlib.Path | None,
          document_type: str, document_number_file: pathlib.Path, country: str | None,
          retry_seconds: float) -> None:
    """Enrol this device: prove possession of its key and receive the credential."""
    from issuer.documents import DocumentError, parse_document
    from wallet.core import Wallet
    from wallet.state import IssuerSettings

    if (cert_file is None) != (key_file is None):
        raise click.UsageError("--cert and --key go together (the client certificate and its private key)")
    if api_key_file is None and cert_file is None:
        raise click.UsageError("give --api-key-file, or --cert and --key, or both")
    now = _now()
    number = read_secret(document_number_file, what="document number file").decode("utf-8").strip()
    try:
        document = parse_document(document_type, number, country=country, today=beijing_date(now))
    except DocumentError as exc:
        raise click.BadParameter(str(exc), param_hint="--document-number-file") from None
    settings = IssuerSettings(server, str(ca_file.resolve()),
                              str(api_key_file.resolve()) if api_key_file else None,
                              str(cert_file.resolve()) if cert_file else None,
                              str(key_file.resolve()) if key_file else None)
    with Wallet.open(wallet_dir, _secret(secret_file)) as wallet, _connect(retry_seconds)(settings) as client:
        credential = wallet.enrol(client, document, now=now, issuer=settings)
    click.echo(f"已绑定本设备 Enrolled: credential {credential.province}/{credential.serial} bound to this device")
    click.echo(f"有效至 Valid until {beijing(credential.expires_at)}")


@cli.command()
@_wallet_option
@_secret_option
@click.option("--once", is_flag=True, help="Draw one frame and exit (no refreshing).")
@click.option("--no-renew", is_flag=True, help="Never call the issuer (stay offline).")
@_policy_option
@_retry_option
def show(wallet_dir: pathlib.Path, secret_file: pathlib.Path, once: bool, no_renew: bool, renew_below: float,
         retry_seconds: float) -> None:
    """Show the live QR in this terminal, redrawn in place every 30 s (Ctrl-C to stop)."""
    import time

    from wallet.core import RenewalPolicy, Wallet
    from wallet.display import show_live, status_lines
    from wallet.errors import CredentialRevoked

    policy = RenewalPolicy(renew_below=renew_below)
    connect = _connect(retry_seconds)
    with Wallet.open(wallet_dir, _secret(secret_file)) as wallet:

        def frame(now: dt.datetime) -> tuple[str, list[str]]:
            note = None
            if not no_renew:
                outcome = wallet.renew_if_due(connect, now=now, policy=policy)
                if isinstance(outcome.error, CredentialRevoked):
                    raise outcome.error
                if outcome.renewed:
                    note = f"已更新 Renewed: valid until {beijing(outcome.credential.expires_at)}"
                elif outcome.error is not None:
                    note = f"更新失败 Renewal failed ({outcome.error.reason.value}): {outcome.error.detail}"
            text = wallet.present(now)
            return text, status_lines(now, wallet.credential().expires_at, note)

        _warn_if_small(wallet.present(_now()))
        try:
            show_live(frame, sys.stdout, clock=_now, sleep=time.sleep, frames=1 if once else None)
        except KeyboardInterrupt:
            click.echo("\x1b[0m")


def _warn_if_small(text: str) -> None:
    """One line on stderr when the terminal cannot hold the whole frame (it could not be scanned, nor redrawn)."""
    from wallet.display import terminal_qr

    lines = terminal_qr(text, colour=False)
    need_columns, need_rows = len(lines[0]), len(lines) + 4
    try:
        size = os.get_terminal_size(sys.stdout.fileno())  # the terminal itself, not $COLUMNS/$LINES
    except (OSError, ValueError):  # not a terminal: nothing to say
        return
    if 0 < size.columns < need_columns or 0 < size.lines < need_rows:
        click.echo(f"Warning: the terminal is {size.columns}x{size.lines}; the live code needs at least "
                   f"{need_columns}x{need_rows}: enlarge it or use a smaller font", err=True)


@cli.command()
@_wallet_option
@_secret_option
@click.option("--out", required=True, type=click.Path(path_type=pathlib.Path, dir_okay=False),
              help="PNG file to write (owner-only).")
@click.option("--scale", type=click.IntRange(1, 40), default=6, show_default=True, help="Pixels per module.")
def png(wallet_dir: pathlib.Path, secret_file: pathlib.Path, out: pathlib.Path, scale: int) -> None:
    """Write the presentation of the current 30-second step as a PNG."""
    from healthcode.presentation import STEP_SECONDS, step_at
    from wallet.core import Wallet
    from wallet.display import presentation_png

    now = _now()
    with Wallet.open(wallet_dir, _secret(secret_file)) as wallet:
        text = wallet.present(now)
    write_file_atomically(out, presentation_png(text, scale=scale))
    changes = dt.datetime.fromtimestamp((step_at(now) + 1) * STEP_SECONDS, dt.timezone.utc)
    click.echo(f"wrote {out}: a live code for this step only (changes at {beijing(changes, seconds=True)})")


@cli.command()
@_wallet_option
@_policy_option
def status(wallet_dir: pathlib.Path, renew_below: float) -> None:
    """The credential's validity in Beijing time, and when it will be renewed."""
    from wallet.core import RenewalPolicy
    from wallet.state import Credential, StateFile

    now = _now()
    state = StateFile(wallet_dir).read()
    policy = RenewalPolicy(renew_below=renew_below)
    click.echo(f"设备密钥 Device key: {_curve(state.device.handle.algorithm)}, {state.device.kind} keystore "
               f"(kid {state.device.handle.kid.hex()})")
    if state.credential is None:
        click.echo("凭证 Credential: none: run `healthcode-wallet enrol`")
    else:
        credential = Credential.parse_unbound(state.credential)
        left = credential.expires_at - now
        valid = f"in {human_duration(left)}" if left.total_seconds() > 0 else "EXPIRED 已过期"
        click.echo(f"凭证 Credential: province {credential.province}, serial {credential.serial}")
        click.echo(f"签发 Issued:      {beijing(credential.issued_at)}")
        click.echo(f"有效至 Valid until: {beijing(credential.expires_at)} ({valid})")
        renew_at = policy.renew_at(credential)
        when = "now (due)" if renew_at <= now else f"in {human_duration(renew_at - now)}"
        click.echo(f"下次更新 Next renewal: {beijing(renew_at)} ({when}; when less than "
                   f"{renew_below:.0%} of the validity remains)")
    if state.issuer is not None:
        click.echo(f"签发方 Issuer: {state.issuer.server}")
    if state.pending is not None:
        what = "an enrolment" if state.pending.operation == "enrol" else "a renewal"
        click.echo(f"待完成 Pending: {what} was sent without a stored answer; the next attempt reuses its "
                   "idempotency key (no second credential)")
    if state.last_failure is not None:
        failure = state.last_failure
        click.echo(f"上次失败 Last failure: {failure.reason} at {beijing(failure.at)}: {failure.detail}")


@cli.command()
@_wallet_option
@_secret_option
@click.option("--if-due", is_flag=True, help="Renew only if the renewal policy says it is time.")
@_policy_option
@_retry_option
def renew(wallet_dir: pathlib.Path, secret_file: pathlib.Path, if_due: bool, renew_below: float,
          retry_seconds: float) -> None:
    """Renew the credential now (the device binding is kept)."""
    from wallet.core import RenewalPolicy, Wallet
    from wallet.errors import NotEnrolled

    now = _now()
    with Wallet.open(wallet_dir, _secret(secret_file)) as wallet:
        state = wallet.state()
        if state.issuer is None:
            raise NotEnrolled("this wallet has not enrolled with an issuer: run `healthcode-wallet enrol`")
        credential = wallet.credential()
        policy = RenewalPolicy(renew_below=renew_below)
        if if_due and not policy.due(credential, now):
            click.echo(f"not due: renewal from {beijing(policy.renew_at(credential))}")
            return
        with _connect(retry_seconds)(state.issuer) as client:
            renewed = wallet.renew(client, now=now)
    click.echo(f"已更新 Renewed: serial {renewed.serial}, valid until {beijing(renewed.expires_at)}")


def main(argv: Sequence[str] | None = None) -> int:
    from healthcode import HealthCodeError
    from keys.errors import KeyManagementError
    from wallet.errors import WalletError

    return run_click(cli, argv, prog_name="healthcode-wallet",
                     expected=(WalletError, HealthCodeError, KeyManagementError, OSError, grpc.RpcError))


if __name__ == "__main__":
    sys.exit(main())
