"""The issuer's gRPC server, for real: 127.0.0.1, TLS from issuer/tls.py, generated stubs.

The domain is the real one (SQLite store in a temporary file, identifier
vault, resident index, code issuer); a thin delaying proxy stands in front of
it where a test needs a slow store (deadlines, graceful shutdown).

Servers run on an event loop in a background thread; tests drive them with
ordinary synchronous gRPC clients, as a separate process would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

import healthcode as hc
from issuer import auth, errors, wire
from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc, resident_index_pb2, resident_index_pb2_grpc
from issuer.logs import JsonFormatter
from issuer.documents import make_resident_id
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.privacy import IdentifierVault
from issuer.server import IssuerServer, ServerOptions, TlsMaterial
from issuer.service import ServiceSettings
from issuer.store.base import DuplicateIdentifier, StoreClosed
from issuer.store.sqlite import SQLiteStore
from issuer.tls import DevPki
from shellkit.files import write_file_atomically

PROVINCE = "33"
APP_KEY = "app-key-" + "a" * 40
LIMITED_KEY = "limited-key-" + "b" * 40
ROOT = pathlib.Path(__file__).resolve().parents[2]

pb = common_pb2
hpb = health_codes_pb2
rpb = resident_index_pb2


# --------------------------------------------------------------------------- harness


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="server-loop", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Domain:
    """The real domain over a fresh SQLite file."""

    def __init__(self, path: pathlib.Path) -> None:
        self.store = SQLiteStore(path)
        self.key = hc.generate_signing_key(hc.Algorithm.ES256)
        self.signer = hc.SoftwareSigner(self.key)
        self.index = ResidentIndex(store=self.store, vault=IdentifierVault.from_secret(os.urandom(32)))
        self.codes = CodeIssuer(store=self.store, province=PROVINCE, signer=self.signer,
                                validity=dt.timedelta(days=7))
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.store.close()

    def keyring(self, now: dt.datetime) -> hc.Keyring:
        return hc.Keyring([hc.TrustedKey(
            kid=self.signer.kid, province=PROVINCE, public_key=self.key.public_key(),
            use_from=now - dt.timedelta(days=1), use_until=now + dt.timedelta(days=1),
            verify_until=now + dt.timedelta(days=30),
        )])


class SlowCodes:
    """A CodeIssuer whose issue_code first waits ``delay`` seconds (a slow store)."""

    def __init__(self, inner: CodeIssuer, delay: float) -> None:
        self._inner = inner
        self.delay = delay
        self.started = 0
        self.finished = 0

    async def issue_code(self, **kw):
        self.started += 1
        await asyncio.sleep(self.delay)
        try:
            return await self._inner.issue_code(**kw)
        finally:
            self.finished += 1

    def __getattr__(self, name):
        return getattr(self._inner, name)


_seq = itertools.count(1)


def resident_id() -> str:
    """A fresh valid resident ID number (unique within the test run)."""
    n = next(_seq)
    return make_resident_id("330106", dt.date(1950, 1, 1) + dt.timedelta(days=n * 37), n % 1000)


def doc(number: str, type_: int = pb.DOCUMENT_TYPE_RESIDENT_ID, country: str = "") -> pb.Document:
    return pb.Document(type=type_, number=number, country=country)


def passport() -> pb.Document:
    return doc(f"E{next(_seq) + 10000000:08d}", pb.DOCUMENT_TYPE_PASSPORT, "CHN")


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


APP = bearer(APP_KEY)


def bad_request(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, reason) of every BadRequest field violation in an INVALID_ARGUMENT error."""
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    status = rpc_status.from_call(error)
    assert status is not None, "no rich status in the trailers"
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            out += [(v.field, v.reason) for v in br.field_violations]
    assert out, "no BadRequest detail"
    return out


class Client:
    def __init__(self, port: int, pki: DevPki, *, cert=None) -> None:
        creds = grpc.ssl_channel_credentials(
            pki.ca_cert_pem, cert.key_pem if cert else None, cert.cert_pem if cert else None
        )
        self.channel = grpc.secure_channel(f"127.0.0.1:{port}", creds)
        self.index = resident_index_pb2_grpc.ResidentIndexStub(self.channel)
        self.codes = health_codes_pb2_grpc.HealthCodesStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.reflection = reflection_pb2_grpc.ServerReflectionStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def register(self, primary=None, *supplementary) -> str:
        request = rpb.RegisterResidentRequest(primary=primary or doc(resident_id()), supplementary=supplementary)
        return self.index.RegisterResident(request, metadata=APP, timeout=10).main_index_id

    def issue(self, main_index_id: str, key: str | None = None, metadata=APP) -> pb.IssuedCode:
        request = hpb.IssueCodeRequest(main_index_id=main_index_id, idempotency_key=key or "")
        return self.codes.IssueCode(request, metadata=metadata, timeout=10).code


class Harness:
    def __init__(self, loop: LoopThread, tmp: pathlib.Path, pki: DevPki) -> None:
        self.loop, self.tmp, self.pki = loop, tmp, pki
        self.server_cert = pki.server()
        self._n = itertools.count()
        self.started: list[IssuerServer] = []

    def start(self, *, client_ca: bool = False, codes_delay: float | None = None, wrap_codes=None, **options):
        domain = Domain(self.tmp / f"issuer-{next(self._n)}.db")
        codes = domain.codes if codes_delay is None else SlowCodes(domain.codes, codes_delay)
        if wrap_codes is not None:
            codes = wrap_codes(codes)
        settings = dict(
            service=ServiceSettings(province=PROVINCE),
            listen="127.0.0.1:0",
            tls=TlsMaterial(self.server_cert.cert_pem, self.server_cert.key_pem,
                            self.pki.ca_cert_pem if client_ca else None),
            api_keys=(
                auth.ApiKey("app", bytes.fromhex(auth.hash_api_key(APP_KEY))),
                auth.ApiKey("limited", bytes.fromhex(auth.hash_api_key(LIMITED_KEY)), auth.RateLimit(0.001, 3)),
            ),
            rate_limit=auth.RateLimit(1000.0, 1000.0),
            grace=5.0,
        )
        settings.update(options)

        async def start():
            return await IssuerServer.start(
                ServerOptions(**settings), index=domain.index, codes=codes, on_close=domain.close
            )

        server = self.loop.run(start())
        self.started.append(server)
        return server, domain, codes

    def stop(self, server: IssuerServer, grace: float | None = None) -> None:
        self.loop.run(server.shutdown(grace))


@pytest.fixture(scope="module")
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def pki():
    return DevPki.create(now=dt.datetime.now(dt.timezone.utc))


@pytest.fixture(scope="module")
def harness(loop, pki, tmp_path_factory):
    h = Harness(loop, tmp_path_factory.mktemp("issuer"), pki)
    yield h
    for server in h.started:
        h.stop(server, 0)


@pytest.fixture(scope="module")
def served(harness):
    """One shared server with the real domain, and a client with the 'app' API key."""
    server, domain, _ = harness.start(metrics_listen=("127.0.0.1", 0))
    client = Client(server.port, harness.pki)
    yield server, domain, client
    client.close()


# --------------------------------------------------------------------------- health and reflection


def test_health_serving_without_credentials(served):
    server, _, client = served
    for name in ["", "healthcode.issuer.v1.ResidentIndex", "healthcode.issuer.v1.HealthCodes"]:
        reply = client.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def test_reflection_lists_services_with_a_key_only(served):
    _, _, client = served
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = list(client.reflection.ServerReflectionInfo(iter([request]), metadata=APP, timeout=5))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"healthcode.issuer.v1.ResidentIndex", "healthcode.issuer.v1.HealthCodes",
            "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    with pytest.raises(grpc.RpcError) as e:
        list(client.reflection.ServerReflectionInfo(iter([request]), timeout=5))
    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_reflection_serves_the_api_descriptors(served):
    _, _, client = served
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="healthcode.issuer.v1.HealthCodes")
    reply = next(iter(client.reflection.ServerReflectionInfo(iter([request]), metadata=APP, timeout=5)))
    assert reply.file_descriptor_response.file_descriptor_proto


# --------------------------------------------------------------------------- good input, every RPC


def test_resident_index_rpcs(served):
    _, domain, client = served
    primary, pp = doc(resident_id()), passport()
    mid = client.register(primary, pp)
    hc.parse_main_index_id(mid)
    assert client.index.FindResident(rpb.FindResidentRequest(document=pp), metadata=APP).main_index_id == mid
    assert client.index.FindResident(rpb.FindResidentRequest(document=primary), metadata=APP).main_index_id == mid

    permit = doc("H12345678", pb.DOCUMENT_TYPE_TRAVEL_PERMIT_HK_MO)
    client.index.LinkIdentifier(rpb.LinkIdentifierRequest(main_index_id=mid, document=permit), metadata=APP)
    # The 11-character booklet form with a renewal count names the same permit.
    booklet = doc("H1234567801", pb.DOCUMENT_TYPE_TRAVEL_PERMIT_HK_MO)
    assert client.index.FindResident(rpb.FindResidentRequest(document=booklet), metadata=APP).main_index_id == mid

    with pytest.raises(grpc.RpcError) as e:
        client.register(primary)
    assert e.value.code() is grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as e:
        client.index.FindResident(rpb.FindResidentRequest(document=doc(resident_id())), metadata=APP)
    assert e.value.code() is grpc.StatusCode.NOT_FOUND

    other_doc = doc(resident_id())
    other = client.register(other_doc)
    code = client.issue(other)
    merged = client.index.MergeResidents(
        rpb.MergeResidentsRequest(survivor_main_index_id=mid, merged_main_index_id=other), metadata=APP
    )
    assert merged.revoked_count == 1
    assert client.index.FindResident(rpb.FindResidentRequest(document=other_doc), metadata=APP).main_index_id == mid
    status = client.codes.GetCodeStatus(hpb.GetCodeStatusRequest(ref=code.ref), metadata=APP).code
    assert status.state == pb.CODE_STATE_REVOKED
    assert status.revocation_reason == pb.REVOCATION_REASON_MERGED
    with pytest.raises(grpc.RpcError) as e:
        client.issue(other)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_health_code_rpcs(served):
    _, domain, client = served
    primary = doc(resident_id())
    mid = client.register(primary)

    # IssueCode by main index ID, idempotent
    first = client.issue(mid, key="req-0001-aaaa")
    again = client.issue(mid, key="req-0001-aaaa")
    assert again == first
    assert first.main_index_id == mid and first.state == pb.CODE_STATE_VALID
    assert first.ref.province == PROVINCE and first.ref.kid == domain.signer.kid
    assert first.expires_at.seconds - first.issued_at.seconds == 7 * 86400
    now = dt.datetime.now(dt.timezone.utc)
    verified = hc.verify(first.code_text, domain.keyring(now), now=now)
    assert (verified.subject, verified.serial) == (mid, first.ref.serial)

    # the same key for another resident is a conflict
    with pytest.raises(grpc.RpcError) as e:
        client.issue(client.register(), key="req-0001-aaaa")
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    # GetCodeStatus by ref and by text
    for request in (hpb.GetCodeStatusRequest(ref=first.ref), hpb.GetCodeStatusRequest(code_text=first.code_text)):
        got = client.codes.GetCodeStatus(request, metadata=APP).code
        assert got.code_text == first.code_text and got.state == pb.CODE_STATE_VALID

    # RenderCode PNG and SVG
    png = client.codes.RenderCode(hpb.RenderCodeRequest(ref=first.ref, format=hpb.IMAGE_FORMAT_PNG), metadata=APP)
    assert png.content_type == "image/png" and png.image.startswith(b"\x89PNG\r\n\x1a\n")
    svg = client.codes.RenderCode(
        hpb.RenderCodeRequest(code_text=first.code_text, format=hpb.IMAGE_FORMAT_SVG, scale=2, border=0),
        metadata=APP,
    )
    assert svg.content_type == "image/svg+xml" and svg.image.startswith(b"<svg")

    # RenewCode: a new code, the old one superseded
    renewed = client.codes.RenewCode(hpb.RenewCodeRequest(ref=first.ref, idempotency_key="renew-0001"),
                                     metadata=APP).code
    assert renewed.main_index_id == mid and renewed.ref.serial != first.ref.serial
    old = client.codes.GetCodeStatus(hpb.GetCodeStatusRequest(ref=first.ref), metadata=APP).code
    assert old.state == pb.CODE_STATE_REVOKED and old.revocation_reason == pb.REVOCATION_REASON_SUPERSEDED
    with pytest.raises(grpc.RpcError) as e:
        client.codes.RenewCode(hpb.RenewCodeRequest(ref=first.ref), metadata=APP)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    # RevokeCode: one code (by text), then again (already revoked), then all of the resident's
    revoked = client.codes.RevokeCode(
        hpb.RevokeCodeRequest(code_text=renewed.code_text, reason=pb.REVOCATION_REASON_LOST_DEVICE), metadata=APP
    )
    assert revoked.revoked_count == 1 and revoked.code.state == pb.CODE_STATE_REVOKED
    assert revoked.code.revocation_reason == pb.REVOCATION_REASON_LOST_DEVICE and revoked.code.HasField("revoked_at")
    repeat = client.codes.RevokeCode(
        hpb.RevokeCodeRequest(ref=renewed.ref, reason=pb.REVOCATION_REASON_FRAUD), metadata=APP
    )
    assert repeat.revoked_count == 0 and repeat.code.revocation_reason == pb.REVOCATION_REASON_LOST_DEVICE

    # IssueCode by document (after the others: a new static code supersedes the live one, issue 13)
    by_doc = client.codes.IssueCode(hpb.IssueCodeRequest(document=primary), metadata=APP).code
    assert by_doc.main_index_id == mid and by_doc.ref.serial not in (first.ref.serial, renewed.ref.serial)

    everything = client.codes.RevokeCode(
        hpb.RevokeCodeRequest(main_index_id=mid, reason=pb.REVOCATION_REASON_DECEASED), metadata=APP
    )
    assert everything.revoked_count == 1 and not everything.HasField("code")  # by_doc was the one left

    # NOT_FOUND for unknown codes and residents
    missing = pb.CodeRef(province=PROVINCE, kid=domain.signer.kid, serial=10**12)
    for call, request in [
        (client.codes.GetCodeStatus, hpb.GetCodeStatusRequest(ref=missing)),
        (client.codes.RenderCode, hpb.RenderCodeRequest(ref=missing, format=hpb.IMAGE_FORMAT_PNG)),
        (client.codes.RenewCode, hpb.RenewCodeRequest(ref=missing)),
        (client.codes.RevokeCode, hpb.RevokeCodeRequest(ref=missing, reason=pb.REVOCATION_REASON_OTHER)),
        (client.codes.IssueCode, hpb.IssueCodeRequest(main_index_id=hc.main_index_id_from_bytes(bytes(16)))),
        (client.codes.IssueCode, hpb.IssueCodeRequest(document=doc(resident_id()))),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            call(request, metadata=APP, timeout=5)
        assert e.value.code() is grpc.StatusCode.NOT_FOUND, request


# --------------------------------------------------------------------------- bad input, every RPC

GOOD_MID = hc.main_index_id_from_bytes(bytes(range(16)))
GOOD_REF = pb.CodeRef(province=PROVINCE, kid=b"\x01" * 8, serial=1)
_ID = make_resident_id("330106", dt.date(1990, 5, 17), 123)
BAD_CHECK = _ID[:-1] + ("0" if _ID[-1] != "0" else "1")
FUTURE_BIRTH = make_resident_id("330106", dt.date(2100, 1, 1), 1)

BAD_INPUT = {
    # RegisterResident
    "register-empty": ("index", "RegisterResident", rpb.RegisterResidentRequest(), [("primary", "REQUIRED")]),
    "register-type-and-number-missing": (
        "index", "RegisterResident", rpb.RegisterResidentRequest(primary=pb.Document()),
        [("primary.type", "REQUIRED"), ("primary.number", "REQUIRED")],
    ),
    "register-unknown-type": (
        "index", "RegisterResident", rpb.RegisterResidentRequest(primary=doc(_ID, 99)), [("primary.type", "TYPE")],
    ),
    "register-check-character": (
        "index", "RegisterResident", rpb.RegisterResidentRequest(primary=doc(BAD_CHECK)),
        [("primary.number", "CHECK_CHARACTER")],
    ),
    "register-future-birth": (
        "index", "RegisterResident", rpb.RegisterResidentRequest(primary=doc(FUTURE_BIRTH)),
        [("primary.number", "BIRTH_DATE_IN_FUTURE")],
    ),
    "register-region": (
        "index", "RegisterResident",
        rpb.RegisterResidentRequest(primary=doc(make_resident_id("990106", dt.date(1990, 1, 1), 5))),
        [("primary.number", "REGION")],
    ),
    "register-supplementary-paths": (
        "index", "RegisterResident",
        rpb.RegisterResidentRequest(primary=doc(_ID), supplementary=[
            doc("E12345678", pb.DOCUMENT_TYPE_PASSPORT, "CHN"),
            doc("E12345679", pb.DOCUMENT_TYPE_PASSPORT),
            doc("H12345678", pb.DOCUMENT_TYPE_TRAVEL_PERMIT_HK_MO, "CHN"),
            doc("X1", pb.DOCUMENT_TYPE_TRAVEL_PERMIT_HK_MO),
            doc(_ID),
        ]),
        [("supplementary[1].country", "COUNTRY"), ("supplementary[2].country", "COUNTRY"),
         ("supplementary[3].number", "LENGTH"), ("supplementary[4]", "DUPLICATE")],
    ),
    "register-too-many": (
        "index", "RegisterResident",
        rpb.RegisterResidentRequest(primary=doc(_ID), supplementary=[doc(f"H{i:08d}", 4) for i in range(17)]),
        [("supplementary", "COUNT")],
    ),
    # LinkIdentifier
    "link-empty": ("index", "LinkIdentifier", rpb.LinkIdentifierRequest(),
                   [("main_index_id", "REQUIRED"), ("document", "REQUIRED")]),
    "link-bad-id-and-number": (
        "index", "LinkIdentifier",
        rpb.LinkIdentifierRequest(main_index_id=GOOD_MID.lower(), document=doc("", pb.DOCUMENT_TYPE_PASSPORT, "XXX")),
        [("main_index_id", "FORMAT"), ("document.number", "LENGTH"), ("document.country", "COUNTRY")],
    ),
    # FindResident
    "find-empty": ("index", "FindResident", rpb.FindResidentRequest(), [("document", "REQUIRED")]),
    "find-bad-number": ("index", "FindResident", rpb.FindResidentRequest(document=doc(_ID[:-2])),
                        [("document.number", "LENGTH")]),
    # MergeResidents
    "merge-empty": ("index", "MergeResidents", rpb.MergeResidentsRequest(),
                    [("survivor_main_index_id", "REQUIRED"), ("merged_main_index_id", "REQUIRED")]),
    "merge-same": ("index", "MergeResidents",
                   rpb.MergeResidentsRequest(survivor_main_index_id=GOOD_MID, merged_main_index_id=GOOD_MID),
                   [("merged_main_index_id", "SAME_RESIDENT")]),
    "merge-bad-id": ("index", "MergeResidents",
                     rpb.MergeResidentsRequest(survivor_main_index_id="Z" * 27, merged_main_index_id=GOOD_MID),
                     [("survivor_main_index_id", "FORMAT")]),
    # ListAccesses (issue 14)
    "accesses-empty": ("index", "ListAccesses", rpb.ListAccessesRequest(), [("main_index_id", "REQUIRED")]),
    "accesses-page": ("index", "ListAccesses",
                      rpb.ListAccessesRequest(main_index_id=GOOD_MID, page_size=101, page_token="x" * 300),
                      [("page_size", "RANGE"), ("page_token", "PAGE_TOKEN")]),
    # MoveResidentIn (issue 14): a move without consent is refused before anything is asked nationally
    "move-empty": ("index", "MoveResidentIn", rpb.MoveResidentInRequest(),
                   [("main_index_id", "REQUIRED"), ("document", "REQUIRED"), ("consent", "REQUIRED")]),
    "move-consent-unset": ("index", "MoveResidentIn",
                           rpb.MoveResidentInRequest(main_index_id=GOOD_MID, document=doc(BAD_CHECK),
                                                     consent=rpb.Consent()),
                           [("document.number", "CHECK_CHARACTER"), ("consent.method", "REQUIRED"),
                            ("consent.given_at", "REQUIRED"), ("consent.reference", "FORMAT")]),
    # IssueCode
    "issue-empty": ("codes", "IssueCode", hpb.IssueCodeRequest(), [("resident", "REQUIRED")]),
    "issue-bad-id-and-key": ("codes", "IssueCode",
                             hpb.IssueCodeRequest(main_index_id="not-an-id", idempotency_key="short"),
                             [("main_index_id", "FORMAT"), ("idempotency_key", "FORMAT")]),
    "issue-key-charset": ("codes", "IssueCode",
                          hpb.IssueCodeRequest(main_index_id=GOOD_MID, idempotency_key="has space in it"),
                          [("idempotency_key", "FORMAT")]),
    "issue-key-too-long": ("codes", "IssueCode",
                           hpb.IssueCodeRequest(main_index_id=GOOD_MID, idempotency_key="k" * 129),
                           [("idempotency_key", "FORMAT")]),
    "issue-bad-document": ("codes", "IssueCode", hpb.IssueCodeRequest(document=doc(BAD_CHECK)),
                           [("document.number", "CHECK_CHARACTER")]),
    # RenewCode
    "renew-empty": ("codes", "RenewCode", hpb.RenewCodeRequest(), [("code", "REQUIRED")]),
    "renew-bad-ref": ("codes", "RenewCode", hpb.RenewCodeRequest(ref=pb.CodeRef(province="99")),
                      [("ref.province", "PROVINCE"), ("ref.kid", "REQUIRED")]),
    "renew-other-province-long-kid": (
        "codes", "RenewCode", hpb.RenewCodeRequest(ref=pb.CodeRef(province="11", kid=b"k" * 33, serial=5)),
        [("ref.province", "PROVINCE"), ("ref.kid", "LENGTH")],
    ),
    "renew-garbage-text": ("codes", "RenewCode", hpb.RenewCodeRequest(code_text="EHC1:NOT A CODE"),
                           [("code_text", "MALFORMED")]),
    "renew-bad-key": ("codes", "RenewCode", hpb.RenewCodeRequest(ref=GOOD_REF, idempotency_key="ключ-ключ"),
                      [("idempotency_key", "FORMAT")]),
    # RevokeCode
    "revoke-empty": ("codes", "RevokeCode", hpb.RevokeCodeRequest(), [("target", "REQUIRED"), ("reason", "REQUIRED")]),
    "revoke-issuer-only-reason": (
        "codes", "RevokeCode", hpb.RevokeCodeRequest(ref=GOOD_REF, reason=pb.REVOCATION_REASON_MERGED),
        [("reason", "REASON")],
    ),
    "revoke-bad-id-unknown-reason": (
        "codes", "RevokeCode", hpb.RevokeCodeRequest(main_index_id="abc", reason=99),
        [("main_index_id", "FORMAT"), ("reason", "REASON")],
    ),
    "revoke-empty-text": ("codes", "RevokeCode",
                          hpb.RevokeCodeRequest(code_text="", reason=pb.REVOCATION_REASON_OTHER),
                          [("code_text", "REQUIRED")]),
    # GetCodeStatus
    "status-empty": ("codes", "GetCodeStatus", hpb.GetCodeStatusRequest(), [("code", "REQUIRED")]),
    "status-text-too-long": ("codes", "GetCodeStatus", hpb.GetCodeStatusRequest(code_text="EHC1:" + "A" * 2000),
                             [("code_text", "LENGTH")]),
    # RenderCode
    "render-empty": ("codes", "RenderCode", hpb.RenderCodeRequest(), [("code", "REQUIRED"), ("format", "REQUIRED")]),
    "render-geometry": ("codes", "RenderCode",
                        hpb.RenderCodeRequest(ref=GOOD_REF, format=hpb.IMAGE_FORMAT_PNG, scale=65, border=17),
                        [("scale", "RANGE"), ("border", "RANGE")]),
    "render-unknown-format": ("codes", "RenderCode", hpb.RenderCodeRequest(ref=GOOD_REF, format=7),
                              [("format", "FORMAT")]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_invalid_argument_with_field_paths(served, case):
    _, _, client = served
    stub_name, method, request, expected = BAD_INPUT[case]
    stub = client.index if stub_name == "index" else client.codes
    with pytest.raises(grpc.RpcError) as e:
        getattr(stub, method)(request, metadata=APP, timeout=5)
    assert bad_request(e.value) == expected
    assert e.value.details().startswith("invalid request: ")
    for number in (_ID, BAD_CHECK, FUTURE_BIRTH, GOOD_MID):  # never echoed back
        assert number not in e.value.details()


def test_every_rpc_has_a_bad_input_case():
    covered = {(stub, method) for stub, method, _, _ in BAD_INPUT.values()}
    for stub, module, name in [("index", rpb, "ResidentIndex"), ("codes", hpb, "HealthCodes")]:
        for m in module.DESCRIPTOR.services_by_name[name].methods:
            assert (stub, m.name) in covered, m.name


# --------------------------------------------------------------------------- domain errors -> status codes


class FailingCodes:
    """A CodeIssuer whose get_code raises ``error``."""

    def __init__(self, inner, error: BaseException) -> None:
        self._inner, self.error = inner, error

    async def get_code(self, ref):
        raise self.error

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture(scope="module")
def failing(harness):
    holder = {}
    server, _, _ = harness.start(wrap_codes=lambda codes: holder.setdefault("codes", FailingCodes(codes, None)))
    client = Client(server.port, harness.pki)
    yield holder["codes"], client
    client.close()


@pytest.mark.parametrize("error, code, reason", [
    (errors.NotFound("code not found"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
    (errors.AlreadyExists("document is already registered"), grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS"),
    (errors.Conflict("resident was merged"), grpc.StatusCode.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (errors.NoSigningKey("no signing key now"), grpc.StatusCode.FAILED_PRECONDITION, "NO_SIGNING_KEY"),
    (errors.Unavailable("store is closed"), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
    (errors.InvalidRequest([errors.FieldViolation("ref", "bad ref", "ref")]), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_ARGUMENT"),
    (StoreClosed("store is closed"), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),  # a subclass maps as its base
    (RuntimeError("boom 110101199003074477"), grpc.StatusCode.INTERNAL, None),
    (errors.IssuerError("unclassified"), grpc.StatusCode.INTERNAL, None),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None)
def test_domain_errors_map_to_status_codes(failing, caplog, error, code, reason):
    codes, client = failing
    codes.error = error
    with caplog.at_level(logging.ERROR, logger="issuer.service"):
        with pytest.raises(grpc.RpcError) as e:
            client.codes.GetCodeStatus(hpb.GetCodeStatusRequest(ref=GOOD_REF), metadata=APP, timeout=5)
    assert e.value.code() is code
    infos = []
    for detail in rpc_status.from_call(e.value).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append((info.reason, info.domain))
    if reason is None:  # nothing leaks: fixed text, no details; the log has the type only
        assert e.value.details() == "internal error" and infos == []
        assert "110101199003074477" not in caplog.text and type(error).__name__ in caplog.text
    else:
        assert infos == [(reason, "issuer.healthcode")]
        assert error.message in e.value.details()


def test_one_table_maps_errors():
    assert wire.status_code_for(DuplicateIdentifier(0)) is grpc.StatusCode.ALREADY_EXISTS
    assert wire.status_code_for(KeyError("x")) is grpc.StatusCode.INTERNAL
    assert set(wire.STATUS_BY_ERROR) >= {errors.InvalidRequest, errors.NotFound, errors.AlreadyExists,
                                            errors.Conflict, errors.NoSigningKey, errors.Unavailable}


# --------------------------------------------------------------------------- authentication and limits


@pytest.mark.parametrize("metadata", [None, bearer("wrong-key"), (("authorization", "Basic " + APP_KEY),),
                                      (("authorization", APP_KEY),)], ids=["none", "wrong", "basic", "no-scheme"])
def test_unauthenticated(served, metadata):
    _, _, client = served
    with pytest.raises(grpc.RpcError) as e:
        client.index.FindResident(rpb.FindResidentRequest(document=doc(_ID)), metadata=metadata, timeout=5)
    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_plaintext_client_against_tls_server_fails(served):
    server, _, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = resident_index_pb2_grpc.ResidentIndexStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.FindResident(rpb.FindResidentRequest(document=doc(_ID)), metadata=APP, timeout=3)
    assert e.value.code() is grpc.StatusCode.UNAVAILABLE


def test_over_limit_caller_is_refused_while_others_are_served(served):
    _, _, client = served
    limited = bearer(LIMITED_KEY)
    request = rpb.FindResidentRequest(document=doc(resident_id()))
    codes = []
    for _ in range(5):
        try:
            client.index.FindResident(request, metadata=limited, timeout=5)
        except grpc.RpcError as e:
            codes.append(e.code())
    assert codes[:3] == [grpc.StatusCode.NOT_FOUND] * 3  # the burst of 3 got through to the domain
    assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    with pytest.raises(grpc.RpcError) as e:
        client.index.FindResident(request, metadata=APP, timeout=5)
    assert e.value.code() is grpc.StatusCode.NOT_FOUND  # 'app' is unaffected


def test_rate_limiter_refills():
    now = [0.0]
    limiter = auth.RateLimiter(auth.RateLimit(2.0, 2.0), clock=lambda: now[0])
    assert [limiter.try_acquire("a") for _ in range(3)] == [True, True, False]
    assert limiter.try_acquire("b")
    now[0] += 0.5  # one token back at 2/s
    assert [limiter.try_acquire("a") for _ in range(2)] == [True, False]


def test_mtls_client_certificate_is_a_caller(harness):
    server, domain, _ = harness.start(client_ca=True, issuance_clients=frozenset({"ops"}))  # an issuance client
    try:
        ops = Client(server.port, harness.pki, cert=harness.pki.client("ops"))
        anon = Client(server.port, harness.pki)
        try:
            request = rpb.RegisterResidentRequest(primary=doc(resident_id()))
            mid = ops.index.RegisterResident(request, timeout=5).main_index_id  # no API key: the CN is the caller
            code = ops.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="mtls-0001"),
                                       timeout=5).code
            # idempotency keys are per caller: 'ops' by certificate, 'app' by key are different callers
            ops_again = ops.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="mtls-0001"),
                                            timeout=5).code
            app_same_key = ops.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="mtls-0001"),
                                               metadata=APP, timeout=5).code
            assert ops_again == code and app_same_key.ref.serial != code.ref.serial
            stored = {r.serial: r.caller for r in domain.store.codes_of(mid)}
            assert stored == {code.ref.serial: "ops", app_same_key.ref.serial: "app"}
            with pytest.raises(grpc.RpcError) as e:  # a key, if sent, must be right, certificate or not
                ops.index.FindResident(rpb.FindResidentRequest(document=request.primary), metadata=bearer("nope"),
                                       timeout=5)
            assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as e:  # no certificate: the handshake fails
                anon.index.FindResident(rpb.FindResidentRequest(document=request.primary), metadata=APP, timeout=3)
            assert e.value.code() is grpc.StatusCode.UNAVAILABLE
        finally:
            ops.close()
            anon.close()
    finally:
        harness.stop(server)


# --------------------------------------------------------------------------- deadlines


def late_outcomes(submit, delay: float, futures: list):
    """A ``submit_code`` whose outcome reaches the issuer ``delay`` seconds after the real commit
    (a slow commit, as the caller sees it); each returned future is appended to ``futures``."""

    def slow_submit(record, **kw):
        committed = submit(record, **kw)
        late: Future = Future()
        late.set_running_or_notify_cancel()

        def resolve(f):
            time.sleep(delay)
            late.set_exception(f.exception()) if f.exception() else late.set_result(f.result())

        committed.add_done_callback(lambda f: threading.Thread(target=resolve, args=(f,), daemon=True).start())
        futures.append(late)
        return late

    return slow_submit



def test_deadline_passing_before_the_code_is_stored_issues_nothing(harness):
    # The deadline passes while the issuance waits before anything is stored (here: a slow
    # domain in front of the issuer): nothing was signed or stored, the retry issues one code.
    server, domain, slow = harness.start(codes_delay=0.6)
    client = Client(server.port, harness.pki)
    try:
        mid = client.register()
        request = hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="deadline-0001")
        with pytest.raises(grpc.RpcError) as e:
            client.codes.IssueCode(request, metadata=APP, timeout=0.2)
        assert e.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.8)  # past the delay: a call that went on would have stored its code by now
        assert domain.store.codes_of(mid) == []
        slow.delay = 0
        retried = client.codes.IssueCode(request, metadata=APP, timeout=5).code
        assert [r.serial for r in domain.store.codes_of(mid)] == [retried.ref.serial]
    finally:
        client.close()
        harness.stop(server)


def test_deadline_passing_while_the_commit_runs_keeps_the_code_and_the_retry_gets_it(harness):
    # The deadline passes after the code was submitted, while its commit is slow: the
    # write goes on (durably), the serial is not handed out again, and the retry with the
    # same idempotency key gets that very code.
    server, domain, _ = harness.start()
    client = Client(server.port, harness.pki)
    submit = domain.store.submit_code
    slow_commits = []
    try:
        mid = client.register()
        request = hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="deadline-0002")
        domain.store.submit_code = late_outcomes(submit, 0.6, slow_commits)
        with pytest.raises(grpc.RpcError) as e:
            client.codes.IssueCode(request, metadata=APP, timeout=0.2)
        assert e.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        slow_commits[0].result(timeout=5)
        (stored,) = domain.store.codes_of(mid)  # committed although the caller gave up
        domain.store.submit_code = submit
        retried = client.codes.IssueCode(request, metadata=APP, timeout=5).code
        assert retried.ref.serial == stored.serial and retried.code_text == stored.text
        assert [r.serial for r in domain.store.codes_of(mid)] == [stored.serial]
        other = client.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=mid), metadata=APP, timeout=5).code
        assert other.ref.serial == stored.serial + 1  # dense: the retry's refused serial was handed out again
    finally:
        client.close()
        harness.stop(server)


def test_too_short_deadline_is_refused_before_any_work(harness):
    server, domain, slow = harness.start(codes_delay=0, service=ServiceSettings(province=PROVINCE,
                                                                               min_time_remaining=2.0))
    client = Client(server.port, harness.pki)
    try:
        with pytest.raises(grpc.RpcError) as e:
            client.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=GOOD_MID), metadata=APP, timeout=1.0)
        assert e.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "too close" in e.value.details()  # the server's answer, not the client's own timer
        assert slow.started == 0
    finally:
        client.close()
        harness.stop(server)


# --------------------------------------------------------------------------- graceful shutdown


def test_graceful_shutdown_drains_in_flight_calls(harness):
    server, domain, slow = harness.start(codes_delay=0.5)
    client = Client(server.port, harness.pki)
    try:
        mid = client.register()
        in_flight = client.codes.IssueCode.future(hpb.IssueCodeRequest(main_index_id=mid), metadata=APP, timeout=10)
        deadline = time.monotonic() + 5
        while slow.started < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        stopping = harness.loop.submit(server.shutdown(grace=5))
        time.sleep(0.1)
        # health says NOT_SERVING as soon as shutdown starts; new calls are refused
        assert not domain.closed
        with pytest.raises(grpc.RpcError) as e:
            client.codes.IssueCode(hpb.IssueCodeRequest(main_index_id=mid), metadata=APP, timeout=2)
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE
        code = in_flight.result(timeout=10).code  # the in-flight call completes
        assert code.main_index_id == mid
        stopping.result(timeout=10)
        assert domain.closed  # the store is closed last
        assert server.health._server_status[""] == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        client.close()


@pytest.mark.parametrize("where", ["before_submit", "during_commit"])
def test_shutdown_without_grace_leaves_nothing_half_done(harness, where):
    # grace=0 cancels the RPC. Cancelled before its code was submitted, the issuance
    # stores nothing; cancelled while its commit runs, the code is committed before
    # the store closes. Either way the store closes last and nothing is half-done.
    server, domain, slow = harness.start(codes_delay=0.4 if where == "before_submit" else 0)
    client = Client(server.port, harness.pki)
    submitted: list = []
    if where == "during_commit":  # stored at once, but its caller hears of it only 2 s later
        domain.store.submit_code = late_outcomes(domain.store.submit_code, 2.0, submitted)
    try:
        mid = client.register()
        in_flight = client.codes.IssueCode.future(hpb.IssueCodeRequest(main_index_id=mid, idempotency_key="nograce-1"),
                                                  metadata=APP, timeout=10)
        deadline = time.monotonic() + 5
        while (slow.started < 1 or (where == "during_commit" and not submitted)) and time.monotonic() < deadline:
            time.sleep(0.01)
        harness.stop(server, 0)
        with pytest.raises(grpc.RpcError):
            in_flight.result(timeout=5)
        assert domain.closed and slow.started == 1
        reopened = SQLiteStore(domain.store.path)
        try:
            assert len(reopened.codes_of(mid)) == (0 if where == "before_submit" else 1)
        finally:
            reopened.close()
    finally:
        client.close()


# --------------------------------------------------------------------------- metrics and logs


def test_metrics_endpoint_exposes_counters(served):
    server, _, client = served
    mid = client.register()
    client.issue(mid)
    with pytest.raises(grpc.RpcError):
        client.codes.IssueCode(hpb.IssueCodeRequest(), metadata=APP)
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    issued = re.search(r'^healthcode_issuer_codes_issued_total\{province="33"\} (\S+)$', text, re.M)
    assert issued and float(issued.group(1)) >= 1
    assert re.search(r'^healthcode_issuer_rpcs_total\{code="OK",method="healthcode.issuer.v1.HealthCodes/IssueCode"\} ',
                     text, re.M)
    assert re.search(r'^healthcode_issuer_rpcs_total\{code="INVALID_ARGUMENT",'
                     r'method="healthcode.issuer.v1.HealthCodes/IssueCode"\} ', text, re.M)
    assert re.search(r'^healthcode_issuer_rpc_latency_seconds_bucket\{le="0.05",'
                     r'method="healthcode.issuer.v1.HealthCodes/IssueCode"\} ', text, re.M)
    assert "grpc.health.v1" not in text  # health checks are neither counted nor logged


def test_logs_are_json_lines_without_identifiers(served, caplog):
    _, _, client = served
    primary = doc(resident_id())
    with caplog.at_level(logging.INFO):
        mid = client.register(primary)
        code = client.issue(mid, key="log-test-0001")
        client.index.FindResident(rpb.FindResidentRequest(document=primary), metadata=APP)
        with pytest.raises(grpc.RpcError):
            client.index.RegisterResident(rpb.RegisterResidentRequest(primary=doc(primary.number[:-1] + "0"
                                                                                  if primary.number[-1] != "0"
                                                                                  else primary.number[:-1] + "1")),
                                          metadata=APP)
        with pytest.raises(grpc.RpcError):
            client.index.FindResident(rpb.FindResidentRequest(document=primary), metadata=bearer("bad"))
        time.sleep(0.1)  # the server logs after sending the response
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    rpc_lines = [json.loads(line) for line in lines if '"event":"rpc"' in line]
    assert {(line["method"], line["caller"], line["code"]) for line in rpc_lines} >= {
        ("healthcode.issuer.v1.ResidentIndex/RegisterResident", "app", "OK"),
        ("healthcode.issuer.v1.HealthCodes/IssueCode", "app", "OK"),
        ("healthcode.issuer.v1.ResidentIndex/RegisterResident", "app", "INVALID_ARGUMENT"),
        ("healthcode.issuer.v1.ResidentIndex/FindResident", None, "UNAUTHENTICATED"),
    }
    assert all(isinstance(line["latency_ms"], float) for line in rpc_lines)
    secrets = [primary.number, primary.number[:-1], mid, code.code_text, code.code_text[5:40], APP_KEY]
    for line in lines:
        for secret in secrets:
            assert secret not in line


# --------------------------------------------------------------------------- the CLI


def test_cli_serve_from_config_file_and_sigterm(tmp_path, pki):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = pki.write(tmp_path / "pki")
    key = ec.generate_private_key(ec.SECP256R1())
    write_file_atomically(tmp_path / "signing.pem", key.private_bytes(  # secrets are owner-only (0600)
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse"),
    ))
    write_file_atomically(tmp_path / "vault.key", os.urandom(32).hex().encode() + b"\n")
    write_file_atomically(
        tmp_path / "callers.toml", f'[[callers]]\nname = "app"\nkey_sha256 = "{auth.hash_api_key(APP_KEY)}"\n'.encode()
    )
    (tmp_path / "issuer.toml").write_text(
        'province = "33"\ndatabase = "issuer.db"\nlisten = "127.0.0.1:1"\n'
        '[tls]\ncert = "pki/server.pem"\nkey = "pki/server.key"\n'
        '[auth]\napi_keys = "callers.toml"\n'
        '[keys]\nsigning_key = "signing.pem"\nsigning_key_passphrase_env = "TEST_HC_PASSPHRASE"\n'
        'vault_key = "vault.key"\n'
    )
    env = dict(os.environ, TEST_HC_PASSPHRASE="correct horse", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "issuer", "serve", "--config", str(tmp_path / "issuer.toml"),
         "--listen", "127.0.0.1:0"],  # the flag overrides the file
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = None
        log_lines = []
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            log_lines.append(line)
            entry = json.loads(line)
            if entry.get("event") == "listening":
                port = entry["port"]
        assert port, "".join(log_lines)
        client = Client(port, pki)
        try:
            mid = client.register()
            code = client.issue(mid, key="cli-test-0001")
            assert code.code_text.startswith("EHC1:")
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        events = [json.loads(line).get("event") for line in rest.splitlines() if line.startswith("{")]
        assert "stopped" in events
        assert mid not in rest and "cli-test-0001" not in rest
        assert paths["server.key"].stat().st_mode & 0o777 == 0o600
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- configuration


def _write_config(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "conf" / "issuer.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


BASE_CONFIG = (
    'province = "33"\ndatabase = "db/issuer.db"\n'
    '[tls]\ncert = "server.pem"\nkey = "/abs/server.key"\n'
    '[auth]\napi_keys = "callers.toml"\nrate = 5\n'
    '[keys]\nsigning_key = "k.pem"\nvault_key = "v.key"\n'
    '[metrics]\nport = 9464\n'
)


def test_config_file_and_flags(tmp_path):
    from issuer.config import load_config

    path = _write_config(tmp_path, BASE_CONFIG)
    config = load_config(path, {"listen": "0.0.0.0:6000", "rate": None, "burst": 9.0})
    assert config.database == path.parent / "db/issuer.db"  # relative to the file
    assert config.tls_key == pathlib.Path("/abs/server.key")
    assert (config.listen, config.rate, config.burst, config.metrics_port) == ("0.0.0.0:6000", 5.0, 9.0, 9464)
    assert config.code_validity == dt.timedelta(days=7)
    assert load_config(None, {"province": "11", "database": pathlib.Path("x.db"), "signing_key": pathlib.Path("k"),
                              "vault_key": pathlib.Path("v"), "insecure_dev_plaintext": True,
                              "api_keys": pathlib.Path("c.toml")}).insecure_dev_plaintext


@pytest.mark.parametrize("text, flags, message", [
    ("insecure_dev_plaintext = true\n" + BASE_CONFIG, {}, "unknown setting insecure_dev_plaintext"),
    (BASE_CONFIG.replace('cert = "server.pem"\n', ""), {}, "tls.cert and tls.key"),
    (BASE_CONFIG.replace('api_keys = "callers.toml"\n', ""), {}, "no way to authenticate"),
    (BASE_CONFIG.replace('province = "33"', 'province = "99"'), {}, "province"),
    (BASE_CONFIG.replace("rate = 5", "rate = 'fast'"), {}, "auth.rate has the wrong type"),
    (BASE_CONFIG, {"listen": "nohost"}, "listen must be host:port"),
    (BASE_CONFIG.replace('[keys]\nsigning_key = "k.pem"\n', "[keys]\n"), {}, "missing settings: signing_key"),
    ("[tls\n", {}, "not valid TOML"),
], ids=["plaintext-in-file", "no-cert", "no-auth", "province", "type", "listen", "missing", "toml"])
def test_config_errors(tmp_path, text, flags, message):
    from issuer.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(_write_config(tmp_path, text), flags)


def test_api_keys_file():
    parsed = auth.parse_api_keys({"callers": [
        {"name": "app", "key_sha256": auth.hash_api_key("k1")},
        {"name": "batch", "key_sha256": auth.hash_api_key("k2").upper(), "rate": 2.5, "burst": 10},
    ]})
    assert [(k.caller, k.rate_limit) for k in parsed] == [("app", None), ("batch", auth.RateLimit(2.5, 10.0))]
    assert "k1" not in repr(parsed) and auth.hash_api_key("k1") not in repr(parsed)
    with pytest.raises(ValueError, match="share one key"):
        auth.parse_api_keys({"callers": [{"name": "a", "key_sha256": auth.hash_api_key("k")},
                                         {"name": "b", "key_sha256": auth.hash_api_key("k")}]})
    with pytest.raises(ValueError, match="unknown fields"):
        auth.parse_api_keys({"callers": [{"name": "a", "key": "plaintext"}]})


# --------------------------------------------------------------------------- secrets are owner-only (issue 11, item 1)


def _serve_once(env, timeout: float = 30) -> subprocess.CompletedProcess:
    """``healthcode-issuer serve`` on a DevEnvironment, expected to refuse at start."""
    return subprocess.run(
        [sys.executable, "-m", "issuer", "serve", "--config", str(env.config_path), "--listen", "127.0.0.1:0"],
        cwd=env.directory, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=timeout)


@pytest.mark.parametrize("name, what, mode", [
    ("vault.key", "vault key", 0o644),
    ("callers.toml", "API keys file", 0o644),
    ("signing.pem", "signing key", 0o640),
    ("pki/server.key", "TLS key", 0o604),
], ids=["vault-key-0644", "api-keys-0644", "signing-key-0640", "tls-key-0604"])
def test_serve_refuses_a_secret_others_can_read_and_says_how_to_fix_it(tmp_path, name, what, mode):
    from issuer.devenv import DevEnvironment

    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(dt.timezone.utc))
    path = env.directory / name
    os.chmod(path, mode)
    result = _serve_once(env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"Error: {what} {path} is readable by other users (mode {mode:04o}); make it owner-only: chmod 600 {path}"]
    assert not (env.directory / "issuer.db").exists()  # refused before the store opened


def test_serve_starts_with_owner_only_secrets(tmp_path):
    from issuer.devenv import DevEnvironment, ServerProcess

    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(dt.timezone.utc))
    secrets = ["vault.key", "callers.toml", "signing.pem", "pki/server.key", "app.apikey"]
    assert {name: (env.directory / name).stat().st_mode & 0o777 for name in secrets} == dict.fromkeys(secrets, 0o600)
    with ServerProcess(env) as server:
        assert server.stop() == 0


# --------------------------------------------------------------------------- every log line is JSON (item 8)


def test_every_server_log_line_is_json_native_grpc_lines_included(tmp_path):
    """gRPC's C core logs a failed TLS handshake through absl, straight to file descriptor 2
    (``I1207 04:22:23.065807 14440 ssl_transport_security.cc:2563] Handshake failed ...``);
    the server turns such lines into JSON records of logger ``grpc.core``. With metrics off,
    the listening line says so (not ``metrics port None``)."""
    from issuer.devenv import DevEnvironment, ServerProcess

    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(dt.timezone.utc), mtls=True)
    with ServerProcess(env) as server:
        for credentials in (grpc.ssl_channel_credentials(env.ca_pem), None):  # no client certificate; no TLS
            with (grpc.secure_channel(server.address, credentials) if credentials
                  else grpc.insecure_channel(server.address)) as channel:
                with pytest.raises(grpc.RpcError):
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert server.stop() == 0
    lines = server.log_path.read_text().splitlines()
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    native = [e for e in entries if e["logger"] == "grpc.core"]
    assert any("Handshake failed" in e["msg"] and e["source"].startswith("ssl_transport_security.cc:")
               for e in native), native
    listening = next(e for e in entries if e.get("event") == "listening")
    assert "(metrics off, province 33, TLS)" in listening["msg"] and listening["metrics_port"] is None
    assert "None" not in listening["msg"]


@pytest.mark.parametrize("line, level, source, msg", [
    ("I1207 04:22:23.065807   14440 ssl_transport_security.cc:2563] Handshake failed", logging.INFO,
     "ssl_transport_security.cc:2563", "Handshake failed"),
    ("E0000 00:00:1733545343.123456  99 chttp2_server.cc:1051] accept failed", logging.ERROR, "chttp2_server.cc:1051",
     "accept failed"),
    ("W1207 04:22:23.0 7 a.cc:1] careful", logging.WARNING, "a.cc:1", "careful"),
    ("F1207 04:22:23.0 7 a.cc:1] fatal", logging.CRITICAL, "a.cc:1", "fatal"),
    ("some other native text", logging.WARNING, None, "some other native text"),
], ids=["info", "error", "warning", "fatal", "unrecognised"])
def test_native_stderr_lines_become_records(caplog, line, level, source, msg):
    from issuer.logs import NativeStderr

    caplog.set_level(logging.DEBUG, logger="grpc.core")
    NativeStderr.record(line)
    (record,) = [r for r in caplog.records if r.name == "grpc.core"]
    assert (record.levelno, getattr(record, "source", None), record.getMessage()) == (level, source, msg)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["logger"] == "grpc.core" and entry["msg"] == msg


# --------------------------------------------------------------------------- reflection v1 (item 8)


@pytest.mark.parametrize("service", ["grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"])
def test_reflection_is_served_as_v1_and_v1alpha(served, service):
    _, _, client = served
    stream = client.channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="healthcode.issuer.v1.HealthCodes"),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)]
    listed, api, itself = list(stream(iter(requests), metadata=APP, timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert api.file_descriptor_response.file_descriptor_proto
    assert itself.file_descriptor_response.file_descriptor_proto, itself.error_response  # grpcurl describes it
    with pytest.raises(grpc.RpcError) as e:
        list(stream(iter(requests[:1]), timeout=5))
    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
