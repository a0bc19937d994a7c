"""The national gRPC server, for real: 127.0.0.1, mTLS from issuer/tls.py's DevPki, generated stubs, a real
SQLite store, and test provinces 33 and 44 answering NationalLink over mTLS.

Admission matrix, the bad-input table (each: status, field violations where they apply, nothing stored,
no number in the error), cross-province resolution (static and dynamic codes, replays), rate limits,
and a privacy byte scan of the database, its WAL and the logs.
"""

from __future__ import annotations

import datetime as dt
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import healthcode as hc
from healthcode import presentation as hp
from issuer.api import common_pb2
from issuer.wire import received_error_info
from national.api import national_index_pb2 as pb
from national.store import open_national_store

from .grpc_status_support import error_reason as reason, violations
from .national_support import (NOW, LoopThread, NationalHarness, Pki, TestProvince, captured_json_logs, encodings,
                               new_mid, resident)

CLIENTS = ["province:33", "province:44", "hospital:44:gz-first", "hospital:33:hz-first"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("national")
    loop, pki = LoopThread(), Pki.create()
    provinces = {code: TestProvince(code, pki) for code in ("33", "44")}
    for p in provinces.values():
        loop.run(p.start())
    with captured_json_logs() as logs:
        store = open_national_store(tmp / "national.db")
        harness = NationalHarness(loop, pki, store, provinces, hospital_rate=1000.0, hospital_burst=1000.0)
        harness.db_path, harness.logs = tmp / "national.db", logs
        yield harness
        harness.close()
        store.close()
    for p in provinces.values():
        loop.run(p.stop())
    loop.close()


def wire_doc(doc) -> common_pb2.Document:
    return common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=doc.number)


def status_of(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def claim_request(mid, *docs, **kw) -> pb.ClaimIdentityRequest:
    return pb.ClaimIdentityRequest(main_index_id=mid, documents=[wire_doc(d) for d in docs], **kw)


def test_health_serves(world):
    stub = health_pb2_grpc.HealthStub(world.pki.channel(world.port, "province:33"))
    assert stub.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


# --------------------------------------------------------------------------- admission


@pytest.mark.parametrize("cn, index_code, hospital_code", [
    ("province:33", grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED),
    ("province:44", grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED),
    ("province:99", grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
    ("hospital:44:gz-first", grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT),
    ("hospital:99:nowhere", grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
    ("hospital:44:", grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
    ("national:ops", grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
    ("admin:33", grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
    ("registration-desk", grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
])
def test_admission_matrix(world, cn, index_code, hospital_code):
    def code_of(call):
        try:
            call()
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    assert code_of(lambda: world.index_stub(cn).ListEvents(pb.ListEventsRequest(), timeout=10)) == index_code
    # An empty ResolveCode: admitted hospitals get INVALID_ARGUMENT (their request is bad), the rest are refused first.
    assert code_of(lambda: world.hospital_stub(cn).ResolveCode(pb.ResolveCodeRequest(), timeout=10)) == hospital_code


def test_a_connection_without_a_client_certificate_fails(world):
    creds = grpc.ssl_channel_credentials(world.pki.pki.ca_cert_pem)
    stub = health_pb2_grpc.HealthStub(grpc.secure_channel(f"127.0.0.1:{world.port}", creds))
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # the handshake itself is refused


# --------------------------------------------------------------------------- claims over the wire


def test_claim_held_and_events_over_the_wire(world):
    a, b, doc = new_mid(), new_mid(), resident(n=1001)
    p33, p44 = world.index_stub("province:33"), world.index_stub("province:44")
    r = p33.ClaimIdentity(claim_request(a, doc), timeout=10)
    assert (r.outcome, r.main_index_id, r.home_province) == (pb.CLAIM_OUTCOME_CLAIMED, a, "33")
    r = p44.ClaimIdentity(claim_request(b, doc), timeout=10)
    assert (r.outcome, r.main_index_id, r.home_province) == (pb.CLAIM_OUTCOME_HELD, a, "33")
    registered = pb.ClaimIdentityRequest().registered_at
    registered.FromSeconds(int((NOW - dt.timedelta(days=1)).timestamp()))
    r = p44.ClaimIdentity(claim_request(b, doc, provisional=True, registered_at=registered), timeout=10)
    assert (r.outcome, r.main_index_id, r.home_province) == (pb.CLAIM_OUTCOME_MERGED, b, "44")
    events = p33.ListEvents(pb.ListEventsRequest(), timeout=10).events
    mine = [e for e in events if e.main_index_id == a]
    assert [(e.kind, e.other_main_index_id, e.other_province) for e in mine] == [
        (pb.EVENT_KIND_MERGED_AWAY, b, "44")]


def _future_ts():
    ts = pb.ClaimIdentityRequest().registered_at
    ts.FromSeconds(int((dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).timestamp()))
    return ts


BAD_ID = resident(n=2001).number[:-1] + ("0" if resident(n=2001).number[-1] != "0" else "1")  # wrong check character


@pytest.mark.parametrize("name, request_, code, fields", [
    ("no main index ID", lambda: claim_request("", resident(n=2002)), grpc.StatusCode.INVALID_ARGUMENT,
     {"main_index_id": "REQUIRED"}),
    ("malformed main index ID", lambda: claim_request("not-an-id", resident(n=2002)),
     grpc.StatusCode.INVALID_ARGUMENT, {"main_index_id": "FORMAT"}),
    ("no documents", lambda: claim_request(new_mid()), grpc.StatusCode.INVALID_ARGUMENT, {"documents": "REQUIRED"}),
    ("malformed document", lambda: pb.ClaimIdentityRequest(main_index_id=new_mid(), documents=[
        common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=BAD_ID)]),
     grpc.StatusCode.INVALID_ARGUMENT, None),
    ("document without type", lambda: pb.ClaimIdentityRequest(main_index_id=new_mid(), documents=[
        common_pb2.Document(number=resident(n=2003).number)]), grpc.StatusCode.INVALID_ARGUMENT,
     {"documents[0].type": "REQUIRED"}),
    ("18 documents", lambda: claim_request(new_mid(), *[resident(n=2100 + i) for i in range(18)]),
     grpc.StatusCode.INVALID_ARGUMENT, {"documents": "COUNT"}),
    ("provisional without registered_at", lambda: claim_request(new_mid(), resident(n=2004), provisional=True),
     grpc.StatusCode.INVALID_ARGUMENT, {"registered_at": "REQUIRED"}),
    ("registered in the future", lambda: claim_request(new_mid(), resident(n=2005), registered_at=_future_ts()),
     grpc.StatusCode.INVALID_ARGUMENT, {"registered_at": "FUTURE"}),
    ("claim for another province", lambda: claim_request(new_mid(), resident(n=2006), home_province="44"),
     grpc.StatusCode.PERMISSION_DENIED, None),
    ("home province not a province", lambda: claim_request(new_mid(), resident(n=2006), home_province="zz"),
     grpc.StatusCode.INVALID_ARGUMENT, {"home_province": "INVALID"}),
])
def test_bad_claims(world, name, request_, code, fields):
    request = request_()
    before = world.index.lookup(resident(n=2006))
    error = status_of(lambda: world.index_stub("province:33").ClaimIdentity(request, timeout=10))
    assert error.code() is code, name
    if fields is not None:
        assert violations(error) == fields
    if name == "malformed document":
        assert list(violations(error)) == ["documents[0].number"]
    for doc in request.documents:
        assert doc.number not in (error.details() or "")
    assert world.index.identity(request.main_index_id) is None if request.main_index_id.isalnum() else True
    assert before is None and world.index.lookup(resident(n=2006)) is None  # nothing stored


def _consent(method=common_pb2.CONSENT_METHOD_IN_PERSON, age=dt.timedelta(minutes=5), reference="desk-44/1"):
    c = common_pb2.Consent(method=method, reference=reference)
    c.given_at.FromSeconds(int((dt.datetime.now(dt.timezone.utc) - age).timestamp()))
    return c


@pytest.mark.parametrize("name, consent, fields", [
    ("no consent", None, {"consent": "REQUIRED"}),
    ("no method", _consent(method=common_pb2.CONSENT_METHOD_UNSPECIFIED), {"consent.method": "REQUIRED"}),
    ("consent too old", _consent(age=dt.timedelta(days=31)), {"consent.given_at": "EXPIRED"}),
    ("no reference", _consent(reference=""), {"consent.reference": "FORMAT"}),
])
def test_transfer_without_valid_consent(world, name, consent, fields):
    mid, doc = new_mid(), resident(n=3001 + len(name))
    world.index_stub("province:33").ClaimIdentity(claim_request(mid, doc), timeout=10)
    request = pb.TransferResidentRequest(main_index_id=mid, document=wire_doc(doc))
    if consent is not None:
        request.consent.CopyFrom(consent)
    error = status_of(lambda: world.index_stub("province:44").TransferResident(request, timeout=10))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and violations(error) == fields
    assert world.index.identity(mid).home_province == "33"
    assert mid not in [r[0] for r in world.provinces["33"].released]


def test_transfer_over_the_wire(world):
    mid, doc = new_mid(), resident(n=3100)
    world.index_stub("province:33").ClaimIdentity(claim_request(mid, doc), timeout=10)
    r = world.index_stub("province:44").TransferResident(pb.TransferResidentRequest(
        main_index_id=mid, document=wire_doc(doc), consent=_consent()), timeout=10)
    assert (r.main_index_id, r.previous_province) == (mid, "33")
    assert (mid, "44", "desk-44/1") in world.provinces["33"].released


# --------------------------------------------------------------------------- resolution


def resolve(world, code, cn="hospital:44:gz-first", purpose=pb.PURPOSE_REGISTRATION):
    return world.hospital_stub(cn).ResolveCode(pb.ResolveCodeRequest(code=code, purpose=purpose), timeout=10)


def test_cross_province_resolution(world):
    p33 = world.provinces["33"]
    mid, doc = new_mid(), resident(n=4001)
    p33.patients[mid] = doc
    r = resolve(world, p33.code_for(mid), purpose=pb.PURPOSE_EMERGENCY)
    assert (r.main_index_id, r.home_province, r.primary_document.number) == (mid, "33", doc.number)
    assert r.access_id and r.resolved_at.seconds > 0
    assert p33.accesses[-1] == (mid, "gz-first", "44", pb.PURPOSE_EMERGENCY)
    assert p33.callers[-1] == "national-index:ops"


def test_dynamic_presentation_resolves_once(world):
    p33 = world.provinces["33"]
    mid, doc = new_mid(), resident(n=4002)
    p33.patients[mid] = doc
    device = hc.generate_signing_key(hc.Algorithm.ES256)
    p33._serial += 1
    credential = hc.sign_code(hc.CodeClaims(
        province="33", subject=mid, serial=p33._serial, issued_at=NOW - dt.timedelta(minutes=1),
        expires_at=NOW + dt.timedelta(days=7), holder_key=hp.holder_cnf(device.public_key().spki_der()[-65:])),
        p33.signer)
    live = hp.encode_presentation(credential, hp.step_at(dt.datetime.now(dt.timezone.utc)), device)
    assert resolve(world, live).main_index_id == mid
    replay = status_of(lambda: resolve(world, live))
    assert (replay.code(), reason(replay)) == (grpc.StatusCode.FAILED_PRECONDITION, "REPLAYED")
    copy = status_of(lambda: resolve(world, credential))  # the credential behind the live code, copied
    assert (copy.code(), reason(copy)) == (grpc.StatusCode.FAILED_PRECONDITION, "PRESENTATION_REQUIRED")


def _forged(world):
    code = world.provinces["33"].code_for(new_mid())
    return code[:-6] + ("A" if code[-6] != "A" else "B") + code[-5:]


def _other_key(world):
    """A code naming province 44, signed with a key province 44 never published."""
    rogue = TestProvince("44", world.pki)
    return rogue.code_for(new_mid())


def _expired(world):
    return world.provinces["33"].code_for(new_mid(), days=1, issued=NOW - dt.timedelta(days=3))


@pytest.mark.parametrize("name, make, cn, purpose, code, want_reason", [
    ("no purpose", lambda w: w.provinces["33"].code_for(new_mid()), "hospital:44:gz-first", pb.PURPOSE_UNSPECIFIED,
     grpc.StatusCode.INVALID_ARGUMENT, None),
    ("no code", lambda w: "", "hospital:44:gz-first", pb.PURPOSE_TREATMENT, grpc.StatusCode.INVALID_ARGUMENT, None),
    ("oversized code", lambda w: "EHC1:" + "A" * 5000, "hospital:44:gz-first", pb.PURPOSE_TREATMENT,
     grpc.StatusCode.INVALID_ARGUMENT, None),
    ("garbage", lambda w: "EHC1:not a code", "hospital:44:gz-first", pb.PURPOSE_TREATMENT,
     grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED"),
    ("forged", _forged, "hospital:44:gz-first", pb.PURPOSE_TREATMENT, grpc.StatusCode.INVALID_ARGUMENT, None),
    ("other key", _other_key, "hospital:44:gz-first", pb.PURPOSE_TREATMENT, grpc.StatusCode.INVALID_ARGUMENT,
     "UNKNOWN_KEY"),
    ("expired", _expired, "hospital:44:gz-first", pb.PURPOSE_TREATMENT, grpc.StatusCode.FAILED_PRECONDITION,
     "EXPIRED"),
    ("province certificate", lambda w: w.provinces["33"].code_for(new_mid()), "province:44", pb.PURPOSE_TREATMENT,
     grpc.StatusCode.PERMISSION_DENIED, None),
])
def test_bad_resolutions(world, name, make, cn, purpose, code, want_reason):
    before = len(world.provinces["33"].accesses)
    error = status_of(lambda: resolve(world, make(world), cn=cn, purpose=purpose))
    assert error.code() is code, (name, error.details())
    if want_reason is not None:
        assert reason(error) == want_reason
    if name == "no purpose":
        assert violations(error) == {"purpose": "REQUIRED"}
    if name == "oversized code":
        assert violations(error) == {"code": "TOO_LONG"}
    if name == "forged":
        assert reason(error) in ("BAD_SIGNATURE", "MALFORMED")
    if code is grpc.StatusCode.INVALID_ARGUMENT and name not in ("no purpose", "no code"):  # a bad code: its field
        assert set(violations(error)) == {"code"}
        assert name == "oversized code" or violations(error)["code"] == reason(error)
    assert len(world.provinces["33"].accesses) == before  # never routed


@pytest.mark.parametrize("refusal, want", [
    (("revoked", "code was revoked (deceased)"), "REVOKED"),
    (("superseded", "code was revoked (superseded)"), "SUPERSEDED"),
    (("replayed", "this live code was resolved already (fraud)"), "REPLAYED"),
    (("expired", "code refused: expired (fraud)"), "EXPIRED"),
    (("fraud_hold", "code held: fraud investigation"), "PROVINCE_REFUSED"),  # not a reason hospitals get
])
def test_a_home_provinces_refusal_passes_its_reason_on_never_its_message(world, refusal, want):
    """The HIS gets the province's stable reason (from a fixed list, else PROVINCE_REFUSED) and a message
    built from that reason alone: nothing the province wrote, such as why a code was revoked, reaches it."""
    from national.links import REFUSAL_MESSAGES

    p33 = world.provinces["33"]
    mid = new_mid()
    p33.patients[mid] = resident(n=4003)
    code = p33.code_for(mid)
    p33.revoked.add(p33._serial)
    p33.refusal = refusal
    try:
        error = status_of(lambda: resolve(world, code))
    finally:
        p33.refusal = ("revoked", "code was revoked (deceased)")
    assert (error.code(), reason(error)) == (grpc.StatusCode.FAILED_PRECONDITION, want)
    assert error.details() == REFUSAL_MESSAGES[want]
    assert "deceased" not in error.details() and "fraud" not in error.details().lower()
    assert " / " in error.details()  # Chinese / English


def test_home_province_unreachable_is_unavailable(world, tmp_path):
    pki, loop = world.pki, world.loop
    p33 = world.provinces["33"]
    lonely = NationalHarness(loop, pki, open_national_store(tmp_path / "n.db"), {"33": p33},
                             endpoints={"33": "127.0.0.1:1"})
    try:
        stub = lonely.hospital_stub("hospital:44:gz-first")
        error = status_of(lambda: stub.ResolveCode(pb.ResolveCodeRequest(code=p33.code_for(new_mid()),
                                                                         purpose=pb.PURPOSE_TREATMENT), timeout=10))
        assert (error.code(), reason(error)) == (grpc.StatusCode.UNAVAILABLE, "PROVINCE_UNAVAILABLE")
        assert dict(received_error_info(error).metadata) == {"province": "33"}  # which province, for a desk
    finally:
        lonely.close()
        lonely.store.close()


def test_hospitals_are_rate_limited_one_by_one(world, tmp_path):
    limited = NationalHarness(world.loop, world.pki, open_national_store(tmp_path / "n.db"), world.provinces,
                              hospital_rate=0.01, hospital_burst=3)
    try:
        a, b = limited.hospital_stub("hospital:44:gz-first"), limited.hospital_stub("hospital:33:hz-first")
        codes = []
        for _ in range(4):
            try:
                a.ResolveCode(pb.ResolveCodeRequest(), timeout=10)
            except grpc.RpcError as e:
                codes.append(e.code())
        assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert status_of(lambda: b.ResolveCode(pb.ResolveCodeRequest(), timeout=10)).code() is (
            grpc.StatusCode.INVALID_ARGUMENT)  # another hospital has its own bucket
    finally:
        limited.close()
        limited.store.close()


# --------------------------------------------------------------------------- privacy


def test_privacy_byte_scan(world):
    numbers = []
    p33 = world.index_stub("province:33")
    for i in range(50):
        doc = resident(region="330106", n=5000 + i, birth=dt.date(1980, 1, 1) + dt.timedelta(days=37 * i))
        numbers.append(doc.number)
        p33.ClaimIdentity(claim_request(new_mid(), doc), timeout=10)
    # the error paths too: a held claim and a malformed one
    status_of(lambda: world.index_stub("province:44").ClaimIdentity(claim_request(
        new_mid(), resident(region="330106", n=5000, birth=dt.date(1980, 1, 1)), home_province="33"), timeout=10))
    for handler in logging.getLogger().handlers:
        handler.flush()
    blobs = {}
    for suffix in ("", "-wal", "-shm"):
        path = world.db_path.with_name(world.db_path.name + suffix)
        if path.exists():
            blobs[path.name] = path.read_bytes()
    blobs["logs"] = world.logs.getvalue().encode()
    assert blobs[world.db_path.name + "-wal"] or blobs[world.db_path.name], "nothing written?"
    assert '"event":"rpc"' in world.logs.getvalue() or "rpc" in world.logs.getvalue()
    for number in numbers:
        for needle in encodings(number):
            for name, blob in blobs.items():
                assert needle not in blob, f"an encoding of an inserted number is in {name}"


def test_reflection_lists_the_national_services(world):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(world.pki.channel(world.port, "hospital:44:gz-first"))
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=10)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"healthcode.national.v1.NationalIndex", "healthcode.national.v1.HospitalResolution"} <= names


def test_metrics_count_rpcs_by_method_and_code(world, tmp_path):
    import urllib.request

    served = NationalHarness(world.loop, world.pki, open_national_store(tmp_path / "n.db"), world.provinces,
                             metrics=True)
    try:
        stub = served.index_stub("province:33")
        stub.ListEvents(pb.ListEventsRequest(), timeout=10)
        status_of(lambda: served.hospital_stub("province:33").ResolveCode(pb.ResolveCodeRequest(), timeout=10))
        port = served.server.metrics_port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert ('healthcode_national_rpcs_total{code="OK",method="healthcode.national.v1.NationalIndex/ListEvents"} 1.0'
                in text)
        assert 'code="PERMISSION_DENIED",method="healthcode.national.v1.HospitalResolution/ResolveCode"' in text
        assert "healthcode_national_rpc_latency_seconds_bucket" in text
    finally:
        served.close()
        served.store.close()
