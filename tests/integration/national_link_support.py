"""The world of test_national_link: two real provincial issuers with a national link and the real national
service, on 127.0.0.1 over mTLS with one DevPki, driven from one event loop thread; and what the tests
send them (documents, registrations, codes, consent).
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib

import grpc

import healthcode as hc
from issuer import auth
from issuer.api import (common_pb2, health_codes_pb2, health_codes_pb2_grpc, national_link_pb2_grpc,
                        resident_index_pb2 as rpb, resident_index_pb2_grpc, wallets_pb2_grpc)
from issuer.claims import NationalResidentIndex
from issuer.issuance import CodeIssuer
from issuer.national_client import NationalClient, NationalLinkSettings
from issuer.national_link_service import NationalLinkServicer
from issuer.national_setup import keyring_of
from issuer.privacy import IdentifierVault
from issuer.reconciler import Reconciler
from issuer.resolution import PatientResolver
from issuer.server import IssuerServer, ServerOptions, TlsMaterial, utc_now
from issuer.service import ServiceSettings
from issuer.store import open_store
from issuer.store.sqlite import SQLiteStore
from issuer.wallets import WalletIssuer
from national.api import national_index_pb2_grpc
from national.blind_index import NationalBlindIndex, SoftwareHmacKey
from national.index import NationalIndex
from national.links import LinkTls, ProvinceLinks
from national.resolution import CodeResolver
from national.server import NationalServer
from national.server import ServerOptions as NationalOptions
from national.store import open_sqlite_store
from national.trust import KeyringHolder

from .national_support import LoopThread, Pki

API_KEY = "national-link-app-key-" + "k" * 40
APP = (("authorization", f"Bearer {API_KEY}"),)
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
TODAY = (NOW + dt.timedelta(hours=8)).date()
HOSPITAL = "hospital:44:gz-zhongshan-1"


def number(seq: int, region: str = "330106") -> str:
    from issuer.documents import make_resident_id

    return make_resident_id(region, dt.date(1970, 1, 1) + dt.timedelta(days=seq * 37), seq % 1000)


def doc(seq: int, region: str = "330106") -> common_pb2.Document:
    return common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=number(seq, region))


class Province:
    """A real provincial issuer with a national link (its reconciler run by the tests, round by round)."""

    def __init__(self, code: str, base: pathlib.Path, pki: Pki, national_port: int,
                 database: str | None = None) -> None:
        self.code, self.pki = code, pki
        self.store = SQLiteStore(base / f"issuer-{code}.db") if database is None else open_store(database)
        self.signer = hc.SoftwareSigner(hc.generate_signing_key(hc.Algorithm.ES256))
        pair = pki.client(f"province:{code}")
        self.client = NationalClient(NationalLinkSettings(
            address=f"127.0.0.1:{national_port}", ca_pem=pki.pki.ca_cert_pem, cert_pem=pair.cert_pem,
            key_pem=pair.key_pem, claim_timeout=1.0, transfer_timeout=5.0, events_timeout=2.0))
        self.index = NationalResidentIndex(store=self.store, vault=IdentifierVault.from_secret(os.urandom(32)),
                                           national=self.client, province=code)
        self.codes = CodeIssuer(store=self.store, province=code, signer=self.signer)
        resolver = PatientResolver(index=self.index, store=self.store, province=code,
                                   keyring_at=keyring_of(self.signer, code))
        self.link = NationalLinkServicer(store=self.store, resolver=resolver, province=code)
        self.reconciler = Reconciler(index=self.index, national=self.client, clock=utc_now, interval=3600,
                                     pending_grace=dt.timedelta(0))
        self.trusted = hc.TrustedKey(kid=self.signer.kid, province=hc.ProvinceCode(code),
                                     public_key=self.signer.public_key(), use_from=NOW - dt.timedelta(days=1),
                                     use_until=NOW + dt.timedelta(days=30), verify_until=NOW + dt.timedelta(days=40))
        self.server: IssuerServer | None = None
        self.channel: grpc.Channel | None = None

    async def start(self) -> None:
        cert = self.pki.server
        options = ServerOptions(
            service=ServiceSettings(province=self.code), listen="127.0.0.1:0",
            tls=TlsMaterial(cert.cert_pem, cert.key_pem, self.pki.pki.ca_cert_pem),
            api_keys=(auth.ApiKey("app", bytes.fromhex(auth.hash_api_key(API_KEY))),),
            rate_limit=auth.RateLimit(10_000.0, 10_000.0), grace=0.5)
        self.server = await IssuerServer.start(options, index=self.index, codes=self.codes, on_close=self.store.close,
                                               national_link=self.link, wallets=WalletIssuer(codes=self.codes))

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def stub(self, kind: str, cn: str = "desk") -> object:
        channel = self.pki.channel(self.port, cn)
        return {"index": resident_index_pb2_grpc.ResidentIndexStub, "codes": health_codes_pb2_grpc.HealthCodesStub,
                "link": national_link_pb2_grpc.NationalLinkStub, "wallets": wallets_pb2_grpc.WalletsStub}[kind](channel)

    async def stop(self) -> None:
        await self.client.close()
        if self.server is not None:
            await self.server.shutdown(0)


class National:
    """The real national service on a fixed port; stop and start it again (same store) for partitions."""

    def __init__(self, base: pathlib.Path, pki: Pki, port: int) -> None:
        self.pki, self.port = pki, port
        self.store = open_sqlite_store(base / "national.db")
        self.blind = NationalBlindIndex(SoftwareHmacKey(os.urandom(32)))
        self.server: NationalServer | None = None
        self.links: ProvinceLinks | None = None

    async def start(self, provinces: dict[str, Province], endpoints: dict[str, str] | None = None) -> None:
        """Serve; ``endpoints`` (province -> address) replaces some provinces' NationalLink addresses."""
        ops = self.pki.client("national-index:ops")
        self.links = ProvinceLinks({c: f"127.0.0.1:{p.port}" for c, p in provinces.items()} | (endpoints or {}),
                                   LinkTls(self.pki.pki.ca_cert_pem, ops.cert_pem, ops.key_pem), timeout=5.0)
        index = NationalIndex(store=self.store, blind=self.blind, release=self.links)

        def survivor(mid: str) -> str | None:
            row = index.survivor(mid)
            return None if row is None else row.main_index_id

        resolver = CodeResolver(keyring=KeyringHolder(hc.Keyring([p.trusted for p in provinces.values()])),
                                patients=self.links, survivor=survivor)
        options = NationalOptions(tls=self.pki.server_tls(), listen=f"127.0.0.1:{self.port}", grace=0.2,
                                  hospital_limit=auth.RateLimit(1000.0, 1000.0))
        self.server = await NationalServer.start(options, index=index, resolver=resolver)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown(0)
            self.server = None
        if self.links is not None:
            await self.links.close()
            self.links = None


class World:
    def __init__(self, loop: LoopThread, pki: Pki, national: National, provinces: dict[str, Province]) -> None:
        self.loop, self.pki, self.national, self.p = loop, pki, national, provinces

    def hospital(self, cn: str = HOSPITAL) -> national_index_pb2_grpc.HospitalResolutionStub:
        return national_index_pb2_grpc.HospitalResolutionStub(self.pki.channel(self.national.port, cn))

    def reconcile(self, code: str):
        return self.loop.run(self.p[code].reconciler.run_once())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register(world: World, code: str, *docs: common_pb2.Document) -> rpb.RegisterResidentResponse:
    stub = world.p[code].stub("index")
    return stub.RegisterResident(rpb.RegisterResidentRequest(primary=docs[0], supplementary=list(docs[1:])),
                                 metadata=APP, timeout=10)


def issue(world: World, code: str, mid: str) -> common_pb2.IssuedCode:
    return world.p[code].stub("codes").IssueCode(health_codes_pb2.IssueCodeRequest(main_index_id=mid),
                                                 metadata=APP, timeout=10).code


def consent() -> common_pb2.Consent:
    c = common_pb2.Consent(method=common_pb2.CONSENT_METHOD_IN_PERSON, reference="desk-44/2026-001")
    c.given_at.FromSeconds(int(dt.datetime.now(dt.timezone.utc).timestamp()) - 60)
    return c
