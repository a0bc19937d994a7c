"""Helpers of tests/integration/test_national_cluster.py: the desk, the national stubs, the checks of a refusal,
the listener that records reconnections and the partition tests' registration and outcome.

Kept apart so the test module reads as the list of what issue 14 must do.
:data:`USED_NUMBERS` collects every document number the tests send anywhere;
the last test searches every log, database and WAL file for them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import pathlib
import time
from typing import Callable

import grpc
import pytest
from grpc_status import rpc_status

import healthcode as hc
from issuer.api import (common_pb2, health_codes_pb2, health_codes_pb2_grpc, resident_index_pb2,
                        resident_index_pb2_grpc)
from issuer.documents import make_resident_id
from issuer.wire import received_error_info
from national.api import national_index_pb2 as national_pb2
from national.api import national_index_pb2_grpc as national_pb2_grpc
from tools.bench.national_cluster import HOSPITALS, Cluster, desk_cn, hospital_cn, province_cn

ROOT = pathlib.Path(__file__).resolve().parents[2]

RPC_TIMEOUT = 15.0
RECONCILE_TIMEOUT = 60.0  # seconds for a province to reconcile after the national service returns
HOSPITAL_44 = hospital_cn(*HOSPITALS[0])
HOSPITAL_33 = hospital_cn(*HOSPITALS[1])

_sequence = itertools.count(1)
USED_NUMBERS: list[str] = []  # every document number sent anywhere: none may appear in logs or errors


def new_number() -> str:
    """A fresh, valid resident ID number (Hangzhou), remembered for the leak scans."""
    n = next(_sequence)
    number = make_resident_id("330106", dt.date(1980, 1, 1) + dt.timedelta(days=n // 1000), n % 1000)
    USED_NUMBERS.append(number)
    return number


def resident_id(number: str) -> common_pb2.Document:
    return common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=number)


class Desk:
    """A province's registration desk (its issuance client certificate)."""

    def __init__(self, cluster: Cluster, province: str) -> None:
        self.province = province
        self.channel = cluster.channel(province, desk_cn(province))
        self.index = resident_index_pb2_grpc.ResidentIndexStub(self.channel)
        self.codes = health_codes_pb2_grpc.HealthCodesStub(self.channel)

    def register(self, *documents: common_pb2.Document) -> str:
        request = resident_index_pb2.RegisterResidentRequest(primary=documents[0], supplementary=documents[1:])
        return self.index.RegisterResident(request, timeout=RPC_TIMEOUT).main_index_id

    def find(self, document: common_pb2.Document) -> str:
        return self.where(document)[0]

    def where(self, document: common_pb2.Document) -> tuple[str, str]:
        """(main index ID, home province) of the resident holding ``document``, as this province knows it."""
        reply = self.index.FindResident(resident_index_pb2.FindResidentRequest(document=document), timeout=RPC_TIMEOUT)
        return reply.main_index_id, reply.home_province

    def register_reply(self, document: common_pb2.Document) -> resident_index_pb2.RegisterResidentResponse:
        request = resident_index_pb2.RegisterResidentRequest(primary=document)
        return self.index.RegisterResident(request, timeout=RPC_TIMEOUT)

    def move_in(self, main_index_id: str, document: common_pb2.Document,
                consent: common_pb2.Consent | None) -> resident_index_pb2.MoveResidentInResponse:
        request = resident_index_pb2.MoveResidentInRequest(main_index_id=main_index_id, document=document,
                                                           consent=consent)
        return self.index.MoveResidentIn(request, timeout=RPC_TIMEOUT)

    def issue(self, main_index_id: str) -> common_pb2.IssuedCode:
        request = health_codes_pb2.IssueCodeRequest(main_index_id=main_index_id)
        return self.codes.IssueCode(request, timeout=RPC_TIMEOUT).code

    def status(self, code_text: str) -> common_pb2.IssuedCode:
        request = health_codes_pb2.GetCodeStatusRequest(code_text=code_text)
        return self.codes.GetCodeStatus(request, timeout=RPC_TIMEOUT).code

    def accesses(self, main_index_id: str) -> list[resident_index_pb2.Access]:
        request = resident_index_pb2.ListAccessesRequest(main_index_id=main_index_id, page_size=100)
        return list(self.index.ListAccesses(request, timeout=RPC_TIMEOUT).accesses)


def national_index(cluster: Cluster, cn: str):
    return national_pb2_grpc.NationalIndexStub(cluster.channel(cluster.national, cn))


def hospital(cluster: Cluster, cn: str):
    return national_pb2_grpc.HospitalResolutionStub(cluster.channel(cluster.national, cn))


def refused(call: Callable[[], object], *codes: grpc.StatusCode) -> grpc.RpcError:
    """Run ``call``; it must fail with one of ``codes``; no document number in its message or details."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    assert error.code() in codes, (error.code(), error.details())
    text = (error.details() or "") + repr(rpc_status.from_call(error))
    leaked = [n for n in USED_NUMBERS if n in text or n[:-1] in text]
    assert not leaked, f"a document number in the error: {error.details()}"
    return error


def error_info(error: grpc.RpcError) -> tuple[str, dict[str, str]] | None:
    """The ErrorInfo (reason, metadata) of an error, if it has one."""
    info = received_error_info(error)
    return (info.reason, dict(info.metadata)) if info is not None else None


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.25)


def national_holder(cluster: Cluster, document: common_pb2.Document) -> tuple[str, str]:
    """(main index ID, home province) holding ``document`` nationally, asked as province 11.

    A claim of a fresh random ID as 11: HELD names the holder and stores
    nothing. (A CLAIMED answer would mean nobody held it: the test fails.)
    """
    probe = hc.main_index_id_from_bytes(bytes(range(16)))
    reply = national_index(cluster, province_cn("11")).ClaimIdentity(
        national_pb2.ClaimIdentityRequest(main_index_id=probe, documents=[document]), timeout=RPC_TIMEOUT)
    assert reply.outcome == national_pb2.CLAIM_OUTCOME_HELD, reply
    return reply.main_index_id, reply.home_province


def resolve(cluster: Cluster, cn: str, code: str, purpose: int = 1):
    request = national_pb2.ResolveCodeRequest(code=code, purpose=purpose)
    return hospital(cluster, cn).ResolveCode(request, timeout=RPC_TIMEOUT)


def signed(key: hc.SigningKey, *, province: str, subject: str, kid: bytes | None = None,
            issued_at: dt.datetime, expires_at: dt.datetime, serial: int = 2**40) -> str:
    claims = hc.CodeClaims(province=hc.ProvinceCode(province), subject=hc.MainIndexId(subject), serial=serial,
                           issued_at=issued_at, expires_at=expires_at)
    return hc.sign_code(claims, hc.SoftwareSigner(key, kid=kid))


def his_example() -> dict:
    """The worked example of docs/his-integration.md, executed as written."""
    text = (ROOT / "docs" / "his-integration.md").read_text(encoding="utf-8")
    block = text.split("<!-- his-example:start -->")[1].split("<!-- his-example:end -->")[0]
    source = block.split("```python\n", 1)[1].rsplit("```", 1)[0]
    namespace: dict = {}
    exec(compile(source, "docs/his-integration.md", "exec"), namespace)
    return namespace


def consent(method: int = common_pb2.CONSENT_METHOD_IN_PERSON, *,
            given_at: dt.datetime | None = None) -> common_pb2.Consent:
    given = common_pb2.Consent(method=method, reference="desk-44/consent/0001")
    given.given_at.FromDatetime(given_at or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
                                - dt.timedelta(minutes=1))
    return given


#: How long 33 stays down in the move test: long enough for gRPC's default backoff (1 s x 1.6 per attempt,
#: +-20 %) to have made a gap over 10 s (the 6th, at about 26 s), and how long a gap may be with the cap.
OUTAGE = 32.0
MAX_RECONNECT_GAP = 7.5


class Reconnects:
    """A TCP listener on a stopped province's port that records when connections arrive and drops them
    (a TLS handshake that fails: to the national service's channel, one failed reconnection attempt)."""

    def __init__(self, port: int) -> None:
        import socket
        import threading

        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self._socket.listen(16)
        self._socket.settimeout(0.1)
        self.times: list[float] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="reconnects", daemon=True)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            self.times.append(time.monotonic())
            connection.close()

    def __enter__(self) -> "Reconnects":
        self._thread.start()
        return self

    def stop(self) -> list[float]:
        self._stopped.set()
        self._thread.join(5)
        self._socket.close()
        return list(self.times)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def register_both(desks, people: list[common_pb2.Document], provinces: tuple[str, ...] = ("33", "44"),
                   ) -> list[tuple[str, str, str, str]]:
    """Register every person at each province and issue a code there: (province, mid, code, number) acked."""
    acked = []
    for document in people:
        for province in provinces:
            reply = desks[province].register_reply(document)
            assert reply.provisional, "registered while the national service was down: provisional"
            mid = reply.main_index_id
            acked.append((province, mid, desks[province].issue(mid).code_text, document.number))
    return acked


def outcome(cluster: Cluster, desks, document) -> tuple[str, str] | None:
    """(survivor, home) once both provinces and then the national index agree on ``document``; else None.

    The provinces are asked first: probing the national index for a document
    nobody holds yet would claim it for the probing province.
    """
    views = {desks[p].where(document) for p in ("33", "44")}
    if len(views) != 1:
        return None
    (view,) = views
    return view if national_holder(cluster, document) == view else None
