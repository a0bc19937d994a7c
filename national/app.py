"""``healthcode-national serve``: the files a config names read, the domain wired, served until a signal.

:func:`open_service` reads everything a :class:`~national.config.NationalConfig`
names (TLS material, the national key, the trusted province keys, the
provinces' link certificates) and opens the store; :func:`run` starts a
:class:`~national.server.NationalServer` over it and serves until SIGTERM or
SIGINT (SIGHUP re-reads the trusted keys), then shuts down: health
NOT_SERVING, in-flight RPCs get ``grace_period`` seconds, the provinces'
channels, the key and the store are closed.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import signal
from dataclasses import dataclass
from typing import Callable

from issuer import auth
from issuer.server import TlsMaterial, utc_now
from shellkit.files import read_config_file
from shellkit.processes import stop_signals

from .blind_index import HmacKey, NationalBlindIndex, open_national_key
from .config import NationalConfig
from .errors import ConfigError
from .index import NationalIndex
from .links import LinkTls, PatientAnswer, ProvinceLinks
from .resolution import CodeResolver
from .server import NationalServer, ServerOptions
from .store import NationalStore, open_national_store
from .trust import KeyringHolder, load_keyring

__all__ = ["OpenService", "open_service", "server_options", "run"]

log = logging.getLogger("national.app")


def _read(path, what: str) -> bytes:
    return read_config_file(path, what=what, error=ConfigError)


def _read_secret(path, what: str) -> bytes:
    return read_config_file(path, what=what, error=ConfigError, secret=True)


def server_options(config: NationalConfig) -> ServerOptions:
    """The :class:`ServerOptions` ``config`` describes (reads the TLS files; the key must be owner-only)."""
    return ServerOptions(
        tls=TlsMaterial(cert_chain_pem=_read(config.tls_cert, "TLS certificate"),
                        key_pem=_read_secret(config.tls_key, "TLS key"),
                        client_ca_pem=_read(config.client_ca, "client CA")),
        listen=config.listen,
        hospital_limit=auth.RateLimit(config.hospital_rate, config.hospital_burst),
        province_limit=auth.RateLimit(config.province_rate, config.province_burst),
        per_caller={cn: auth.RateLimit(rate, burst) for cn, (rate, burst) in config.hospital_limits.items()},
        metrics_listen=(config.metrics_address, config.metrics_port) if config.metrics_port else None,
        grace=config.grace_period,
    )


@dataclass
class OpenService:
    """The domain a config describes, opened; :meth:`close` releases it all."""

    index: NationalIndex
    resolver: CodeResolver
    keyring: KeyringHolder
    links: ProvinceLinks | None
    store: NationalStore
    key: HmacKey

    async def close(self) -> None:
        if self.links is not None:
            await self.links.close()
        self.key.close()
        self.store.close()


def open_service(config: NationalConfig, *, key_secret: bytes) -> OpenService:
    """Open the key, the store, the links and the trusted keys ``config`` names."""
    key = open_national_key(config.keystore, label=config.key_label, secret=key_secret,
                            directory=config.key_directory, module=config.pkcs11_module, token=config.pkcs11_token)
    try:
        keyring = KeyringHolder(load_keyring(key_lists=config.trust_key_lists, dev_bundle=config.trust_dev_bundle,
                                             now=utc_now()))
        links = None
        if config.endpoints:
            assert config.provinces_ca and config.provinces_cert and config.provinces_key
            links = ProvinceLinks(config.endpoints, LinkTls(
                root_ca_pem=_read(config.provinces_ca, "provinces CA"),
                cert_pem=_read(config.provinces_cert, "national client certificate"),
                key_pem=_read_secret(config.provinces_key, "national client key"),
                server_name_override=config.provinces_server_name), timeout=config.provinces_timeout)
        store = open_national_store(config.database, partitions=config.partitions)
    except BaseException:
        key.close()
        raise
    index = NationalIndex(store=store, blind=NationalBlindIndex(key), release=links,
                          max_provisional_age=datetime.timedelta(hours=config.max_provisional_age_hours))

    def survivor(mid: str) -> str | None:
        row = index.survivor(mid)
        return None if row is None else row.main_index_id

    resolver = CodeResolver(keyring=keyring, patients=links or _NoLinks(), survivor=survivor)
    return OpenService(index, resolver, keyring, links, store, key)


class _NoLinks:
    async def resolve_patient(self, province: str, *, code: str, purpose: int, organisation: str,
                              hospital_province: str, today: datetime.date) -> PatientAnswer:
        from .errors import ProvinceUnavailable

        raise ProvinceUnavailable(f"no NationalLink endpoint is configured for province {province}", province)


async def run(config: NationalConfig, *, key_secret: bytes,
              ready: Callable[[NationalServer], None] | None = None) -> None:
    """Serve ``config`` until SIGTERM or SIGINT, then shut down gracefully."""
    options = server_options(config)
    service = open_service(config, key_secret=key_secret)
    try:
        server = await NationalServer.start(options, index=service.index, resolver=service.resolver,
                                            on_close=service.close)
    except BaseException:
        await service.close()
        raise
    loop = asyncio.get_running_loop()

    def reload() -> None:
        try:
            service.keyring.replace(load_keyring(key_lists=config.trust_key_lists,
                                                 dev_bundle=config.trust_dev_bundle, now=utc_now()))
            log.info("trusted keys re-read", extra={"event": "trust_reloaded"})
        except ConfigError as e:
            log.error("trusted keys not re-read: %s", e, extra={"event": "trust_reload_failed"})

    try:
        with stop_signals() as stop:
            loop.add_signal_handler(signal.SIGHUP, reload)
            log.info("listening on port %d (%s, mTLS)", server.port, service.store.description,
                     extra={"event": "listening", "port": server.port, "metrics_port": server.metrics_port})
            if ready is not None:
                ready(server)
            await stop.wait()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await server.shutdown()
