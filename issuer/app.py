"""``healthcode-issuer serve``: the files a config names read, the domain wired, served until a signal.

:func:`run` is the shell ``healthcode-issuer serve`` calls: it reads the files
an :class:`~issuer.config.IssuerConfig` names (:func:`server_options`, the
signing key or the rotating key set, the vault key), opens the store (SQLite,
or PostgreSQL for a ``postgresql://`` database URL) and builds the domain
(:func:`build_domain`), adds the KeyAdmin service and the revocation job when
configured, starts an :class:`~issuer.server.IssuerServer`, and serves until
SIGTERM/SIGINT (SIGHUP re-reads the key set), then shuts it down:

1. health turns NOT_SERVING (load balancers stop sending);
2. ``server.stop(grace)``: new RPCs are refused, in-flight ones get ``grace``
   seconds to finish;
3. domain calls still running after their RPC ended are awaited;
4. the revocation job, if configured, is stopped (a pending publication runs first);
5. the store is closed.

The server itself is :mod:`issuer.server`; its log :mod:`issuer.logs`, its
metrics :mod:`issuer.metrics`, its handler wrapping :mod:`issuer.handlers`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import pathlib
import signal
from typing import TYPE_CHECKING, Any, Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

import healthcode as hc
from issuer import auth
from issuer.config import ConfigError, IssuerConfig
from issuer.server import IssuerServer, ServerOptions, TlsMaterial, utc_now
from issuer.service import CodeIssuerPort, ResidentIndexPort, ServiceSettings
from shellkit.files import InsecureFileMode, read_config_file
from shellkit.processes import stop_signals

if TYPE_CHECKING:
    from issuer.issuance import CodeIssuer

__all__ = [
    "load_signer_pem",
    "parse_vault_secret",
    "server_options",
    "build_domain",
    "open_rotating_signer",
    "run",
]

log = logging.getLogger("issuer.app")


def load_signer_pem(pem: bytes, passphrase: bytes | None) -> hc.Signer:
    """A software :class:`healthcode.Signer` from a PKCS#8 PEM key (P-256 -> ES256, Ed25519 -> EdDSA).

    Interim: the keystore issue replaces this with real key handling.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError:
        raise ConfigError("the signing key is encrypted: set keys.signing_key_passphrase_env") from None
    except ValueError:
        raise ConfigError("cannot read the signing key (not a PKCS#8 PEM, or a wrong passphrase)") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        secret = key.private_numbers().private_value.to_bytes(32, "big")
        algorithm = hc.Algorithm.ES256
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        secret = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        algorithm = hc.Algorithm.EDDSA
    else:
        raise ConfigError("the signing key must be a P-256 (ES256) or Ed25519 (EdDSA) key")
    return hc.SoftwareSigner(hc.signing_key_from_private_bytes(algorithm, secret))


def parse_vault_secret(text: bytes) -> bytes:
    """The 32-byte vault secret from its file: 64 hex digits (surrounding whitespace ignored)."""
    try:
        secret = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ConfigError("the vault key file must hold 64 hex digits") from None
    if len(secret) != 32:
        raise ConfigError("the vault key file must hold 64 hex digits (32 bytes)")
    return secret


def _read(path, what: str) -> bytes:
    return read_config_file(path, what=what, error=ConfigError)


def _read_secret(path, what: str) -> bytes:
    """A secret file's bytes; a :class:`ConfigError` saying ``chmod 600 <path>`` when group or others
    have any permission on it (another local user could read or replace the secret)."""
    return read_config_file(path, what=what, error=ConfigError, secret=True)


def server_options(config: IssuerConfig) -> ServerOptions:
    """The :class:`ServerOptions` an :class:`IssuerConfig` describes (reads the TLS and key files;
    the TLS private key and the API keys file must be owner-only)."""
    tls = None
    if not config.insecure_dev_plaintext:
        tls = TlsMaterial(
            cert_chain_pem=_read(config.tls_cert, "TLS certificate"),
            key_pem=_read_secret(config.tls_key, "TLS key"),
            client_ca_pem=_read(config.client_ca, "client CA") if config.client_ca else None,
        )
    api_keys: tuple[auth.ApiKey, ...] = ()
    if config.api_keys is not None:
        try:
            api_keys = tuple(auth.load_api_keys(config.api_keys))
        except InsecureFileMode as e:
            raise ConfigError(str(e)) from None
        except OSError as e:
            raise ConfigError(f"cannot read API keys file {config.api_keys}: {e.strerror}") from None
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return ServerOptions(
        service=ServiceSettings(province=config.province, min_time_remaining=config.min_time_remaining),
        listen=config.listen,
        tls=tls,
        insecure_dev_plaintext=config.insecure_dev_plaintext,
        api_keys=api_keys,
        issuance_clients=frozenset(config.issuance_clients),
        wallet_clients=frozenset(config.wallet_clients),
        rate_limit=auth.RateLimit(config.rate, config.burst),
        wallet_rate_limit=auth.RateLimit(config.wallet_rate, config.wallet_burst),
        metrics_listen=(config.metrics_address, config.metrics_port) if config.metrics_port else None,
        grace=config.grace_period,
        max_concurrent_rpcs=config.max_concurrent_rpcs,
        http=_http_options(config),
    )


#: The web wallet's build output in a source checkout: served at /wallet/ unless http.wallet_dir says otherwise.
DEFAULT_WALLET_DIR = pathlib.Path(__file__).resolve().parents[1] / "webwallet" / "dist"


def _http_options(config: IssuerConfig) -> Any:
    """The HTTP listener's options (issuer/http_server.py), or None when ``http.enabled`` is off."""
    if not config.http_enabled:
        return None
    from issuer.http_server import HttpOptions

    wallet_dir = config.http_wallet_dir
    if wallet_dir is None and DEFAULT_WALLET_DIR.is_dir():
        wallet_dir = DEFAULT_WALLET_DIR
    elif wallet_dir is not None and not wallet_dir.is_dir():
        raise ConfigError(f"http.wallet_dir {wallet_dir} is not a directory (build the web wallet first)")
    try:
        return HttpOptions(listen=config.http_listen, static_dir=wallet_dir)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_domain(
    config: IssuerConfig, *, signer: Any, vault_secret: bytes
) -> tuple[ResidentIndexPort, CodeIssuer, Callable[[], None]]:
    """Open the store (an SQLite file, or PostgreSQL for a ``postgresql://`` URL) and build the
    resident index and the code issuer over it.

    ``signer`` is one fixed :class:`healthcode.Signer` or a
    :class:`keys.lifecycle.RotatingSigner` (its per-key code counts are then
    seeded from the store's serials). Returns ``(index, codes, close)``;
    ``close`` closes the store.
    """
    from issuer.index import ResidentIndex
    from issuer.issuance import CodeIssuer
    from issuer.privacy import IdentifierVault
    from issuer.store import open_store
    from keys.rotating_signer import RotatingSigner

    store = open_store(config.database)
    try:
        vault = IdentifierVault.from_secret(vault_secret)
        if config.national_address is not None:  # issue 14: registrations claim at the national index
            from issuer.national_setup import national_index

            index: ResidentIndex = national_index(config, store=store, vault=vault)
        else:
            index = ResidentIndex(store=store, vault=vault)
        if isinstance(signer, RotatingSigner):
            signer.count_codes_from(lambda kid: store.next_serial(config.province, kid))
            codes = CodeIssuer(store=store, signer_for=_rotating_signer_for(signer), province=config.province,
                               validity=config.code_validity)
        else:
            codes = CodeIssuer(store=store, signer=signer, province=config.province, validity=config.code_validity)
    except BaseException:
        store.close()
        raise
    return index, codes, store.close


def _rotating_signer_for(rotating: Any) -> Callable[[dt.datetime], hc.Signer]:
    """``rotating.signer_for`` with "no key now" and "cap reached" as :class:`NoSigningKey` (FAILED_PRECONDITION)."""
    from issuer.errors import NoSigningKey
    from keys.errors import CodeCapReached, NoActiveKey

    def signer_for(now: dt.datetime) -> hc.Signer:
        try:
            return rotating.signer_for(now)
        except (NoActiveKey, CodeCapReached) as exc:
            raise NoSigningKey(exc.detail) from None

    return signer_for


def open_rotating_signer(config: IssuerConfig, secret: bytes | None) -> tuple[Any, Callable[[], None]]:
    """The :class:`keys.lifecycle.RotatingSigner` over ``config.key_set`` and its keystore
    (``secret``: the file keystore's passphrase or the token's PIN); returns it and the keystore's close."""
    from keys.errors import KeyManagementError
    from keys.keystore import open_keystore
    from keys.rotating_signer import RotatingSigner

    if config.key_set is None:
        raise ConfigError("rotating keys need keys.key_set")
    try:
        keystore = open_keystore(config.keystore, secret=secret, directory=config.keystore_dir,
                                 module=config.pkcs11_module, token=config.pkcs11_token)
    except (KeyManagementError, ValueError) as exc:
        raise ConfigError(f"cannot open the {config.keystore} keystore: {exc}") from None
    try:
        rotating = RotatingSigner.from_file(config.key_set, keystore, province=config.province)
    except KeyManagementError as exc:
        keystore.close()
        raise ConfigError(f"cannot use key set {config.key_set}: {exc}") from None
    if config.code_validity > rotating.key_set.policy.max_code_validity:
        keystore.close()
        raise ConfigError("code_validity_hours exceeds the key set's max_code_validity: codes would outlive their key")
    return rotating, keystore.close


async def run(
    config: IssuerConfig,
    *,
    signing_key_passphrase: bytes | None = None,
    ready: Callable[[IssuerServer], None] | None = None,
    tuf_keys_passphrase: bytes | None = None,
    online_keys_passphrase: bytes | None = None,
) -> None:
    """Serve ``config`` until SIGTERM or SIGINT, then shut down gracefully.

    With ``config.key_set``, codes are signed by a rotating signer whose key-set
    file is re-read every ``key_set_check_interval`` seconds and on SIGHUP.
    With ``config.revocation_directory``, a revocation job publishes revoked
    codes hourly and soon after each revoking RPC (``issuer/revocation_job.py``).
    """
    options = server_options(config)
    close_keystore: Callable[[], None] | None = None
    if config.key_set is not None:
        signer, close_keystore = open_rotating_signer(config, signing_key_passphrase)
    else:
        signer = load_signer_pem(_read_secret(config.signing_key, "signing key"), signing_key_passphrase)
    vault_secret = parse_vault_secret(_read_secret(config.vault_key, "vault key"))
    if options.http is not None and options.http.static_dir is not None:  # the wallet's keys.json: our own keys
        from issuer.key_list import ServedKeyList

        served_keys = ServedKeyList(signer, province=config.province, clock=utc_now)
        options = dataclasses.replace(options, http=dataclasses.replace(options.http, key_list=served_keys.current))
    try:
        index, codes, close_store = build_domain(config, signer=signer, vault_secret=vault_secret)
        claiming: Any = index  # with [national]: the NationalResidentIndex, before any wrapping
    except BaseException:
        if close_keystore is not None:
            close_keystore()
        raise

    key_admin = None
    if config.trust_repo is not None:  # the KeyAdmin service (issuer/key_admin.py)
        from issuer.key_admin import open_key_admin

        try:
            key_admin = open_key_admin(
                config, keystore_secret=signing_key_passphrase, tuf_passphrase=tuf_keys_passphrase,
                online_passphrase=online_keys_passphrase, clock=utc_now,
                on_change=lambda _key_set: signer.refresh(force=True),  # sign with a new key set at once
                live_codes_signed=signer.codes_signed)  # ListKeys shows the counts not yet written back
        except BaseException:
            close_store()
            if close_keystore is not None:
                close_keystore()
            raise

    def close() -> None:
        close_store()
        if close_keystore is not None:
            close_keystore()
        if key_admin is not None:
            key_admin.close()

    served: CodeIssuerPort = codes  # what the API calls: with a revocation job, wrapped to trigger it
    job = None
    if config.revocation_directory is not None:  # the revocation job (issuer/revocation_job.py)
        from issuer.revocation_job import notify_revocations, open_revocation_job

        try:
            job = open_revocation_job(config, tuf_passphrase=tuf_keys_passphrase,
                                      online_passphrase=online_keys_passphrase, clock=utc_now)
        except BaseException:
            close()
            raise
        index, served = notify_revocations(index, codes, job.trigger)
        job.start()  # after the store opened; stopped before it closes

    link = None
    if config.national_address is not None:  # issue 14: the NationalLink servicer and the reconciler
        from issuer.national_setup import open_national_link

        link = open_national_link(claiming, signer=signer, clock=utc_now,
                                  on_revoked=job.trigger if job is not None else None)

    async def stop_job_and_close() -> None:
        if link is not None:  # the reconciler stops before the store closes
            await link.close()
        if job is not None:  # off the loop: a run in progress finishes, a pending trigger gets a last run
            await asyncio.to_thread(job.stop)
        close()

    try:
        from issuer.wallets import WalletIssuer

        # The wallet issuer uses CodeIssuer's own steps; the wrapper handed them on unchanged (__getattr__).
        server = await IssuerServer.start(options, index=index, codes=served, on_close=stop_job_and_close,
                                          key_admin=key_admin, national_link=link.servicer if link else None,
                                          wallets=WalletIssuer(codes=codes, on_revoked=job.trigger if job else None,
                                                               device_key_algorithms=config.device_key_algorithm_list))
    except BaseException:
        await stop_job_and_close()
        raise
    if link is not None:
        link.reconciler.start()
    loop = asyncio.get_running_loop()
    watcher = None
    try:
        with stop_signals() as stop:
            if close_keystore is not None:  # rotating keys: re-read the key set periodically and on SIGHUP
                reload_now = asyncio.Event()
                loop.add_signal_handler(signal.SIGHUP, reload_now.set)
                watcher = asyncio.ensure_future(signer.watch(every=config.key_set_check_interval, wake=reload_now))
            metrics = "metrics off" if server.metrics_port is None else f"metrics port {server.metrics_port}"
            if server.http_port is not None:
                metrics += f", HTTP port {server.http_port}"
            log.info(
                "listening on port %d (%s, province %s, %s)",
                server.port, metrics, config.province, "TLS" if options.tls else "PLAINTEXT",
                extra={"event": "listening", "port": server.port, "metrics_port": server.metrics_port,
                       "http_port": server.http_port},
            )
            if ready is not None:
                ready(server)
            await stop.wait()
    finally:
        if watcher is not None:
            loop.remove_signal_handler(signal.SIGHUP)
            watcher.cancel()
        await server.shutdown()
        if watcher is not None:  # after the last RPC: the key-set file gets the final codes-signed counts
            await signer.write_back()
