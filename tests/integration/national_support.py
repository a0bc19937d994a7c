"""Shared harness of the national service's tests: a PKI, a real national server, and a test province.

:class:`TestProvince` is a **test double for the other side**: a real
``grpc.aio`` server on 127.0.0.1 with mTLS serving
``healthcode.issuer.v1.NationalLink`` (it verifies codes with its own key,
knows a few patients, records releases and accesses). It stands in for the
provincial issuer's NationalLink servicer (issue 14, the provincial part)
until that lands; the national server under test is the real one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import io
import logging
import os
import pathlib
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import grpc

import healthcode as hc
from healthcode import presentation as hp
from issuer.api import common_pb2, national_link_pb2, national_link_pb2_grpc
from issuer.documents import Document, make_resident_id, parse_document
from issuer.tls import DevPki
from national.api import national_index_pb2_grpc
from national.blind_index import NationalBlindIndex, SoftwareHmacKey
from national.index import NationalIndex
from national.links import LinkTls, ProvinceLinks
from national.resolution import CodeResolver
from national.server import NationalServer, ServerOptions, TlsMaterial
from national.store import NationalStore
from national.trust import KeyringHolder

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
TODAY = (NOW + dt.timedelta(hours=8)).date()


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="national-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def resident(region: str = "330102", n: int = 1, birth: dt.date = dt.date(1990, 1, 1)) -> Document:
    """A well-formed resident ID, distinct per ``n`` (sequence n % 1000, birth shifted n // 1000 days)."""
    number = make_resident_id(region, birth + dt.timedelta(days=n // 1000), n % 1000)
    return parse_document("resident_id", number, today=TODAY)


def new_mid() -> hc.MainIndexId:
    return hc.main_index_id_from_bytes(os.urandom(16))


@dataclass
class Pki:
    pki: DevPki
    server: Any  # CertifiedKey for 127.0.0.1/localhost
    clients: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls) -> "Pki":
        pki = DevPki.create(now=NOW)
        return cls(pki, pki.server())

    def client(self, cn: str) -> Any:
        if cn not in self.clients:
            self.clients[cn] = self.pki.client(cn)
        return self.clients[cn]

    def channel(self, port: int, cn: str) -> grpc.Channel:
        pair = self.client(cn)
        creds = grpc.ssl_channel_credentials(self.pki.ca_cert_pem, pair.key_pem, pair.cert_pem)
        return grpc.secure_channel(f"127.0.0.1:{port}", creds)

    def server_tls(self) -> TlsMaterial:
        return TlsMaterial(self.server.cert_pem, self.server.key_pem, client_ca_pem=self.pki.ca_cert_pem)


class _Link(national_link_pb2_grpc.NationalLinkServicer):
    def __init__(self, province: "TestProvince") -> None:
        self.p = province

    async def ReleaseResident(self, request: Any, context: Any) -> Any:
        self.p.check_caller(context)
        self.p.released.append((request.main_index_id, request.to_province, request.consent_reference))
        return national_link_pb2.ReleaseResidentResponse(superseded_codes=1)

    async def ResolvePatient(self, request: Any, context: Any) -> Any:
        self.p.check_caller(context)
        try:
            if hp.is_presentation(request.code):
                now = dt.datetime.now(dt.timezone.utc)
                code = hp.verify_presentation(request.code, self.p.keyring, now=now).credential
            else:
                code = hc.verify(request.code, self.p.keyring, now=dt.datetime.now(dt.timezone.utc))
        except hc.VerificationError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"code not valid: {e.reason.value}")
        if code.serial in self.p.revoked:  # as a provincial issuer refuses: its status, message and ErrorInfo
            from issuer.resolution import CodeRefused
            from issuer.wire import error_status

            await context.abort_with_status(error_status(CodeRefused(*self.p.refusal)))
        doc = self.p.patients.get(code.subject)
        if doc is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such resident")
        mid = self.p.merged_into.get(code.subject, code.subject)
        self.p.accesses.append((mid, request.hospital.organisation, request.hospital.province, request.purpose))
        response = national_link_pb2.ResolvePatientResponse(main_index_id=mid, access_id=f"acc-{len(self.p.accesses)}")
        response.primary_document.type = common_pb2.DOCUMENT_TYPE_RESIDENT_ID
        response.primary_document.number = doc.number
        response.resolved_at.FromSeconds(int(NOW.timestamp()))
        return response


class TestProvince:
    """A province answering NationalLink (see the module docstring). Start on a :class:`LoopThread`."""

    __test__ = False

    def __init__(self, code: str, pki: Pki) -> None:
        self.code = code
        self.pki = pki
        self.key = hc.generate_signing_key(hc.Algorithm.ES256)
        self.signer = hc.SoftwareSigner(self.key)
        self.trusted = hc.TrustedKey(kid=self.signer.kid, province=code, public_key=self.key.public_key(),
                                     use_from=NOW - dt.timedelta(days=30), use_until=NOW + dt.timedelta(days=30),
                                     verify_until=NOW + dt.timedelta(days=60))
        self.keyring = hc.Keyring([self.trusted])
        self.patients: dict[str, Document] = {}
        self.merged_into: dict[str, str] = {}
        self.revoked: set[int] = set()
        #: (reason, message) of the refusal of a revoked code; a province's message may say why it was revoked
        self.refusal: tuple[str, str] = ("revoked", "code was revoked (deceased)")
        self.released: list[tuple[str, str, str]] = []
        self.accesses: list[tuple[str, str, str, int]] = []
        self.callers: list[str] = []
        self.server: Any = None
        self.port = 0
        self._serial = 0

    def check_caller(self, context: Any) -> None:
        names = context.auth_context().get("x509_common_name") or [b""]
        cn = names[0].decode()
        self.callers.append(cn)
        if not cn.startswith("national-index:"):  # the role a real issuer admits to NationalLink
            raise PermissionError(cn)

    def code_for(self, mid: str, *, days: int = 7, issued: dt.datetime | None = None) -> str:
        self._serial += 1
        iat = issued or NOW - dt.timedelta(minutes=1)
        return hc.sign_code(hc.CodeClaims(province=self.code, subject=mid, serial=self._serial, issued_at=iat,
                                          expires_at=iat + dt.timedelta(days=days)), self.signer)

    async def start(self, port: int = 0) -> None:
        self.server = grpc.aio.server()
        national_link_pb2_grpc.add_NationalLinkServicer_to_server(_Link(self), self.server)
        creds = grpc.ssl_server_credentials([(self.pki.server.key_pem, self.pki.server.cert_pem)],
                                            root_certificates=self.pki.pki.ca_cert_pem, require_client_auth=True)
        self.port = self.server.add_secure_port(f"127.0.0.1:{port}", creds)
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop(0)


class NationalHarness:
    """A real national server (SQLite or PostgreSQL store given) with provinces' links, on a :class:`LoopThread`."""

    def __init__(self, loop: LoopThread, pki: Pki, store: NationalStore, provinces: dict[str, TestProvince], *,
                 hospital_rate: float = 50.0, hospital_burst: float = 50.0, endpoints: dict[str, str] | None = None,
                 metrics: bool = False):
        self.loop = loop
        self.pki = pki
        self.store = store
        self.provinces = provinces
        national = pki.client("national-index:ops")
        self.links = ProvinceLinks(endpoints or {c: f"127.0.0.1:{p.port}" for c, p in provinces.items()},
                                   LinkTls(pki.pki.ca_cert_pem, national.cert_pem, national.key_pem), timeout=2.0)
        self.blind = NationalBlindIndex(SoftwareHmacKey(os.urandom(32)))
        self.index = NationalIndex(store=store, blind=self.blind, release=self.links)
        self.keyring = KeyringHolder(hc.Keyring([p.trusted for p in provinces.values()]))

        def survivor(mid: str) -> str | None:
            row = self.index.survivor(mid)
            return None if row is None else row.main_index_id

        self.resolver = CodeResolver(keyring=self.keyring, patients=self.links, survivor=survivor)
        from issuer import auth

        options = ServerOptions(tls=pki.server_tls(), listen="127.0.0.1:0",
                                hospital_limit=auth.RateLimit(hospital_rate, hospital_burst), grace=0.5,
                                metrics_listen=("127.0.0.1", 0) if metrics else None)
        self.server: NationalServer = loop.run(NationalServer.start(options, index=self.index,
                                                                    resolver=self.resolver))
        self.port = self.server.port

    def index_stub(self, cn: str) -> national_index_pb2_grpc.NationalIndexStub:
        return national_index_pb2_grpc.NationalIndexStub(self.pki.channel(self.port, cn))

    def hospital_stub(self, cn: str) -> national_index_pb2_grpc.HospitalResolutionStub:
        return national_index_pb2_grpc.HospitalResolutionStub(self.pki.channel(self.port, cn))

    def close(self) -> None:
        self.loop.run(self.server.shutdown(0))
        self.loop.run(self.links.close())


def write_pki(pki: Pki, directory: pathlib.Path, clients: list[str]) -> dict[str, pathlib.Path]:
    """Write the CA, the server pair and client pairs (keys owner-only) for a process-level test."""
    from shellkit.files import write_file_atomically

    directory.mkdir(parents=True, exist_ok=True)
    paths = {"ca": directory / "ca.pem", "server.pem": directory / "server.pem", "server.key": directory / "server.key"}
    write_file_atomically(paths["ca"], pki.pki.ca_cert_pem, mode=0o644)
    write_file_atomically(paths["server.pem"], pki.server.cert_pem, mode=0o644)
    write_file_atomically(paths["server.key"], pki.server.key_pem)
    for cn in clients:
        pair = pki.client(cn)
        name = cn.replace(":", "_")
        paths[f"{cn}.pem"], paths[f"{cn}.key"] = directory / f"{name}.pem", directory / f"{name}.key"
        write_file_atomically(paths[f"{cn}.pem"], pair.cert_pem, mode=0o644)
        write_file_atomically(paths[f"{cn}.key"], pair.key_pem)
    return paths


def encodings(number: str) -> set[bytes]:
    """The forms a document number could leak in: text, UTF-16/32, hex, Base32/64, BCD, integers, common hashes."""
    ascii_ = number.encode()
    digits = "".join(ch for ch in number if ch.isdigit())
    out = {ascii_, number.encode("utf-16-le"), number.encode("utf-16-be"), number.encode("utf-32-le"),
           ascii_.hex().encode(), ascii_.hex().upper().encode(), base64.b64encode(ascii_),
           base64.b32encode(ascii_).rstrip(b"="), base64.urlsafe_b64encode(ascii_).rstrip(b"=")}
    out.add(number[:14].encode())  # the region and birth date alone
    if len(digits) % 2:
        digits += "0"
    bcd = bytes(int(digits[i]) << 4 | int(digits[i + 1]) for i in range(0, len(digits), 2))
    out.add(bcd)
    out.add(int(digits).to_bytes(8, "big"))
    out.add(int(digits).to_bytes(8, "little"))
    for form in (ascii_, b"resident_id:" + ascii_):
        for h in (hashlib.sha256, hashlib.sha1, hashlib.md5, hashlib.sha224, hashlib.sha512):
            d = h(form).digest()
            out |= {d, d.hex().encode(), base64.b64encode(d)}
    return out


@contextlib.contextmanager
def captured_json_logs() -> Iterator[io.StringIO]:
    """Every log record, as the services' JSON lines, into a buffer (root at DEBUG); restored afterwards."""
    from issuer.logs import JsonFormatter

    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield logs
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
