"""The issuer's gRPC server, for real: 127.0.0.1, TLS from issuer/tls.py, generated stubs.

This module: health and reflection, every RPC end to end, bad input on every
RPC, and domain errors mapped to status codes. Admission, limits, deadlines
and shutdown are in test_issuer_server_calls.py; metrics, logs, the CLI and
its configuration in test_issuer_server_ops.py; the harness in
issuer_server_support.py.
"""

from __future__ import annotations

import datetime as dt
import logging

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

import healthcode as hc
from issuer import errors, wire
from issuer.store.base import DuplicateIdentifier, StoreClosed
from .issuer_server_support import (
    APP,
    BAD_CHECK,
    BAD_INPUT,
    Client,
    FUTURE_BIRTH,
    GOOD_MID,
    GOOD_REF,
    PROVINCE,
    _ID,
    bad_request,
    doc,
    hpb,
    passport,
    pb,
    resident_id,
    rpb,
)
from .issuer_server_support import harness, loop, pki, served  # noqa: F401 - fixtures


# --------------------------------------------------------------------------- health and reflection


def test_health_serving_without_credentials(served):  # noqa: F811 - the imported fixture
    server, _, client = served
    for name in ["", "healthcode.issuer.v1.ResidentIndex", "healthcode.issuer.v1.HealthCodes"]:
        reply = client.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def test_reflection_lists_services_with_a_key_only(served):  # noqa: F811 - the imported fixture
    _, _, client = served
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = list(client.reflection.ServerReflectionInfo(iter([request]), metadata=APP, timeout=5))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"healthcode.issuer.v1.ResidentIndex", "healthcode.issuer.v1.HealthCodes",
            "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    with pytest.raises(grpc.RpcError) as e:
        list(client.reflection.ServerReflectionInfo(iter([request]), timeout=5))
    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_reflection_serves_the_api_descriptors(served):  # noqa: F811 - the imported fixture
    _, _, client = served
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="healthcode.issuer.v1.HealthCodes")
    reply = next(iter(client.reflection.ServerReflectionInfo(iter([request]), metadata=APP, timeout=5)))
    assert reply.file_descriptor_response.file_descriptor_proto


# --------------------------------------------------------------------------- good input, every RPC


def test_resident_index_rpcs(served):  # noqa: F811 - the imported fixture
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


def test_health_code_rpcs(served):  # noqa: F811 - the imported fixture
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


# --------------------------------------------------------------------------- bad input, every RPC (the table is in
# issuer_server_support.py, shared with test_http_api.py)


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_invalid_argument_with_field_paths(served, case):  # noqa: F811 - the imported fixture
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
def failing(harness):  # noqa: F811 - the imported fixture
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


# --------------------------------------------------------------------------- reflection v1 (item 8)


@pytest.mark.parametrize("service", ["grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"])
def test_reflection_is_served_as_v1_and_v1alpha(served, service):  # noqa: F811 - the imported fixture
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
