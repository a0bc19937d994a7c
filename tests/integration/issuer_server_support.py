"""Shared harness of the issuer's gRPC server tests (test_issuer_server*.py).

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
import os
import pathlib
import subprocess
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc
from grpc_status import rpc_status

import healthcode as hc
from healthcode import Algorithm
from healthcode.algorithms import generate_signing_key
from healthcode.presentation import proof_of_possession_input
from issuer import auth
from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc, resident_index_pb2, resident_index_pb2_grpc
from issuer.api import wallets_pb2
from issuer.documents import make_resident_id
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.privacy import IdentifierVault
from issuer.server import IssuerServer, ServerOptions, TlsMaterial
from issuer.service import ServiceSettings
from issuer.store.sqlite import SQLiteStore
from issuer.tls import DevPki

from .grpc_status_support import field_violations


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


def listening_entry(proc: subprocess.Popen, timeout: float = 30.0, *, seen: list[str] | None = None) -> dict:
    """The ``listening`` entry of a serving process's JSON log on its stderr (text), read line by line until
    it comes (each line read is appended to ``seen`` too); the test fails, showing every line read, when it
    does not within ``timeout`` s."""
    lines: list[str] = [] if seen is None else seen
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("{") and (entry := json.loads(line)).get("event") == "listening":
            return entry
    pytest.fail("no listening line:\n" + "".join(lines))


def bad_request(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, reason) of every BadRequest field violation in an INVALID_ARGUMENT error."""
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert rpc_status.from_call(error) is not None, "no rich status in the trailers"
    out = field_violations(error)
    assert out, "no BadRequest detail"
    return out


class Phone:
    """A phone's device key (a real P-256 key by default, or SM2), its SEC 1 point, and what it signs."""

    def __init__(self, algorithm: Algorithm = Algorithm.ES256) -> None:
        self.algorithm = algorithm
        self.key = generate_signing_key(algorithm)
        self.point = self.key.public_key().spki_der()[-65:]

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)

    def proof(self, challenge: bytes) -> bytes:
        return self.sign(proof_of_possession_input(challenge, self.key.public_key()))

    def device_key(self) -> wallets_pb2.DeviceKey:
        wire = wallets_pb2.DEVICE_KEY_ALGORITHM_SM2_SM3 if self.algorithm is Algorithm.SM2_SM3 else \
            wallets_pb2.DEVICE_KEY_ALGORITHM_ES256
        return wallets_pb2.DeviceKey(algorithm=wire, public_key=self.point)


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
                                                     consent=common_pb2.Consent()),
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
