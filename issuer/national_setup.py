"""Wiring the national link into ``healthcode-issuer serve`` (the config's ``[national]``, issue 14).

:func:`national_settings` reads the files ``[national]`` names (the key
owner-only) and checks that the client certificate names this province
(CN ``province:<code>``); :func:`national_index` builds the resident index
that claims nationally; :func:`open_national_link` builds what runs beside the
server: the ``NationalLink`` servicer (releases, resolutions against this
province's own keys) and the reconciler (started with the server, stopped
before the store closes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

import healthcode as hc
from shellkit.files import read_config_file

from .claims import NationalResidentIndex
from .config import ConfigError, IssuerConfig
from .national_client import NationalClient, NationalLinkSettings, certificate_province
from .national_link_service import NationalLinkServicer
from .privacy import IdentifierVault
from .reconciler import Reconciler
from .resolution import PatientResolver
from .store.base import Store

__all__ = ["national_settings", "national_index", "open_national_link", "NationalLink", "keyring_of"]

#: A fixed signing key's window, for resolving: the store's record of each code decides what is live.
_FIXED_KEY_FROM = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
_FIXED_KEY_UNTIL = dt.datetime(2999, 1, 1, tzinfo=dt.timezone.utc)


def _read(path: Any, what: str, *, secret: bool = False) -> bytes:
    return read_config_file(path, what=what, error=ConfigError, secret=secret)


def national_settings(config: IssuerConfig) -> NationalLinkSettings:
    """The link settings ``config`` describes (reads its files); :class:`ConfigError` when they do not fit."""
    if config.national_address is None:
        raise ConfigError("no [national] section")
    cert = _read(config.national_cert, "national client certificate")
    named = certificate_province(cert)
    if named != config.province:
        raise ConfigError(f"national.cert must be this province's certificate (subject CN province:{config.province}),"
                          f" not {'province:' + named if named else 'another name'}")
    return NationalLinkSettings(
        address=config.national_address, ca_pem=_read(config.national_ca, "national CA"), cert_pem=cert,
        key_pem=_read(config.national_key, "national client key", secret=True),
        server_name=config.national_server_name, claim_timeout=config.national_claim_timeout,
        transfer_timeout=config.national_transfer_timeout, reconcile_interval=config.national_reconcile_interval)


def national_index(config: IssuerConfig, *, store: Store, vault: IdentifierVault) -> NationalResidentIndex:
    """The resident index claiming at the national index ``config.national_address``."""
    client = NationalClient(national_settings(config))
    return NationalResidentIndex(store=store, vault=vault, national=client, province=config.province)


def keyring_of(signer: Any, province: str) -> Callable[[dt.datetime], hc.Keyring]:
    """This province's own trusted keys at a time: the rotating signer's key set, or the one fixed key."""
    key_set = getattr(signer, "key_set", None)
    if key_set is not None:
        return lambda now: hc.Keyring(signer.key_set.trusted_keys(now))
    ring = hc.Keyring([hc.TrustedKey(kid=signer.kid, province=hc.ProvinceCode(province), public_key=signer.public_key(),
                                     use_from=_FIXED_KEY_FROM, use_until=_FIXED_KEY_UNTIL,
                                     verify_until=_FIXED_KEY_UNTIL)])
    return lambda now: ring


@dataclass
class NationalLink:
    """What runs beside the server: the NationalLink servicer and the reconciler."""

    servicer: NationalLinkServicer
    reconciler: Reconciler
    client: NationalClient

    async def close(self) -> None:
        """Stop the reconciler and close the channel (before the store closes)."""
        await self.reconciler.stop()
        await self.client.close()


def open_national_link(index: NationalResidentIndex, *, signer: Any, clock: Callable[[], dt.datetime],
                       on_revoked: Callable[[], None] | None = None) -> NationalLink:
    """The servicer and the reconciler over ``index`` (built by :func:`national_index`)."""
    client = index.national
    if not isinstance(client, NationalClient):
        raise TypeError("the index must claim through a NationalClient")
    resolver = PatientResolver(index=index, store=index.store, province=index.province,
                               keyring_at=keyring_of(signer, index.province))
    servicer = NationalLinkServicer(store=index.store, resolver=resolver, province=index.province,
                                    on_revoked=on_revoked)
    reconciler = Reconciler(index=index, national=client, clock=clock,
                            interval=client.settings.reconcile_interval, on_revoked=on_revoked)
    return NationalLink(servicer, reconciler, client)
