"""The provincial issuer with a national link (issue 14), for real: two issuers and the national service.

Everything on 127.0.0.1 over mTLS with one DevPki, in one event loop thread: two
real :class:`issuer.server.IssuerServer` s (provinces 33 and 44: SQLite stores, or PostgreSQL schemas,
:class:`issuer.claims.NationalResidentIndex`, the ``NationalLink`` servicer, a
reconciler run round by round) and the real national server (``national/``:
its SQLite store, blind index, province links and hospital resolution). The
national server is stopped and started again on its port for the partition
tests; the issuers keep serving meanwhile.

What is checked: the first province wins and the second gets ALREADY_EXISTS
naming the home province (no second identity, nothing stored); a move keeps
the main index ID and supersedes the old province's codes; a hospital in 44
resolves a 33 code (static and a live presentation) through the national
service, the access lands in the resident's log, a replay and a revoked code are
refused; registrations while the national service is down are provisional,
and after it returns exactly one identity survives, the loser's codes are
revoked as merged and its province finds the survivor; bad input and wrong
callers get clear statuses; no number in any error or log line. The issuers, the national service
and what the tests send them are in ``national_link_support``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time

import grpc
import pytest

import healthcode as hc
from healthcode import presentation as hp
from issuer.api import common_pb2, health_codes_pb2, national_link_pb2, resident_index_pb2 as rpb, wallets_pb2
from issuer.model import NationalState
from issuer.reconciler import Reconciler
from issuer.server import utc_now
from national.api import national_index_pb2 as npb

from .grpc_status_support import error_info, field_violations
from .national_link_support import (APP, HOSPITAL, TODAY, National, Province, World, consent, doc, free_port,
                                    issue, number, register)
from .national_support import LoopThread, Pki
from .postgres_support import PgSchema, require_postgres


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request, tmp_path_factory):
    """The issuers on SQLite files, or each in a PostgreSQL schema of its own (the national store: SQLite)."""
    schemas: dict[str, PgSchema] = {}
    if request.param == "postgres":
        require_postgres()
        schemas = {c: PgSchema() for c in ("33", "44")}
    base = tmp_path_factory.mktemp("national-link")
    loop = LoopThread()
    pki = Pki.create()
    national = National(base, pki, free_port())
    provinces = {c: Province(c, base, pki, national.port, schemas[c].url if schemas else None) for c in ("33", "44")}
    for p in provinces.values():
        loop.run(p.start())
    loop.run(national.start(provinces))
    w = World(loop, pki, national, provinces)
    yield w
    loop.run(national.stop())
    for p in provinces.values():
        loop.run(p.stop())
    national.store.close()
    loop.close()
    for schema in schemas.values():
        schema.drop()


# --------------------------------------------------------------------------- first province wins


def test_the_first_province_wins_and_the_second_hears_where_the_resident_lives(world, caplog):
    caplog.set_level(logging.DEBUG)
    first = register(world, "33", doc(1))
    assert not first.provisional
    assert world.p["33"].store.get_resident(first.main_index_id).national_state is NationalState.CLAIMED
    with pytest.raises(grpc.RpcError) as e:
        register(world, "44", doc(1), doc(2, "440106"))
    assert e.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "province 33" in e.value.details() and number(1) not in e.value.details()
    info = error_info(e.value)
    assert info is not None and info.reason == "HELD_BY_PROVINCE" and dict(info.metadata) == {"home_province": "33"}
    # nothing stored in 44: neither document finds anyone there, and a retry gets the same answer
    for d in (doc(1), doc(2, "440106")):
        with pytest.raises(grpc.RpcError) as nf:
            world.p["44"].stub("index").FindResident(rpb.FindResidentRequest(document=d), metadata=APP, timeout=10)
        assert nf.value.code() is grpc.StatusCode.NOT_FOUND
    assert world.p["44"].store.unclaimed_residents(limit=10) == []
    # the same person's other document, linked in 44 to someone else: held by 33's identity -> refused
    other = register(world, "44", doc(3, "440106"))
    with pytest.raises(grpc.RpcError) as link:
        world.p["44"].stub("index").LinkIdentifier(rpb.LinkIdentifierRequest(main_index_id=other.main_index_id,
                                                                            document=doc(1)), metadata=APP, timeout=10)
    assert link.value.code() is grpc.StatusCode.ALREADY_EXISTS and "province 33" in link.value.details()
    # a new document linked in 33 is claimed nationally for the same identity
    world.p["33"].stub("index").LinkIdentifier(rpb.LinkIdentifierRequest(main_index_id=first.main_index_id,
                                                                        document=doc(4)), metadata=APP, timeout=10)
    with pytest.raises(grpc.RpcError) as held:
        register(world, "44", doc(4))
    assert held.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert number(1) not in caplog.text and number(4) not in caplog.text


# --------------------------------------------------------------------------- moving


def test_a_move_keeps_the_id_supersedes_the_old_codes_and_points_the_old_record_home(world):
    mid = register(world, "33", doc(10)).main_index_id
    old_code = issue(world, "33", mid)
    moved = world.p["44"].stub("index").MoveResidentIn(
        rpb.MoveResidentInRequest(main_index_id=mid, document=doc(10), consent=consent()), metadata=APP, timeout=15)
    assert (moved.main_index_id, moved.previous_province) == (mid, "33")
    status = world.p["33"].stub("codes").GetCodeStatus(health_codes_pb2.GetCodeStatusRequest(ref=old_code.ref),
                                                       metadata=APP, timeout=10).code
    assert status.state == common_pb2.CODE_STATE_REVOKED
    assert status.revocation_reason == common_pb2.REVOCATION_REASON_SUPERSEDED
    found = world.p["33"].stub("index").FindResident(rpb.FindResidentRequest(document=doc(10)), metadata=APP,
                                                     timeout=10)
    assert (found.main_index_id, found.home_province) == (mid, "44")
    with pytest.raises(grpc.RpcError) as e:  # the old province issues no more codes for them
        issue(world, "33", mid)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "province 44" in e.value.details()
    assert issue(world, "44", mid).main_index_id == mid  # the new one does
    found = world.p["44"].stub("index").FindResident(rpb.FindResidentRequest(document=doc(10)), metadata=APP,
                                                     timeout=10)
    assert (found.main_index_id, found.home_province) == (mid, "44")
    # a retry of the move is answered the same, and changes nothing
    again = world.p["44"].stub("index").MoveResidentIn(
        rpb.MoveResidentInRequest(main_index_id=mid, document=doc(10), consent=consent()), metadata=APP, timeout=15)
    assert (again.main_index_id, again.previous_province) == (mid, "33")
    # registering the moved resident anew in 33 is refused, naming 44
    with pytest.raises(grpc.RpcError) as held:
        register(world, "33", doc(10))
    assert held.value.code() is grpc.StatusCode.ALREADY_EXISTS


def test_a_move_takes_supplementary_documents_along_and_a_resident_can_move_back(world):
    mid = register(world, "33", doc(14)).main_index_id
    issue(world, "33", mid)
    world.p["44"].stub("index").MoveResidentIn(rpb.MoveResidentInRequest(
        main_index_id=mid, document=doc(14), supplementary=[doc(15, "440106")], consent=consent()),
        metadata=APP, timeout=15)
    found = world.p["44"].stub("index").FindResident(rpb.FindResidentRequest(document=doc(15, "440106")),
                                                     metadata=APP, timeout=10)
    assert found.main_index_id == mid
    with pytest.raises(grpc.RpcError) as held:  # the supplementary document is claimed nationally, homed in 44
        register(world, "33", doc(15, "440106"))
    assert held.value.code() is grpc.StatusCode.ALREADY_EXISTS and "province 44" in held.value.details()
    code_44 = issue(world, "44", mid)
    back = world.p["33"].stub("index").MoveResidentIn(
        rpb.MoveResidentInRequest(main_index_id=mid, document=doc(14), consent=consent()), metadata=APP, timeout=15)
    assert (back.main_index_id, back.previous_province) == (mid, "44")
    assert world.p["33"].store.get_resident(mid).national_state is NationalState.CLAIMED
    assert world.p["44"].store.get_resident(mid).home_province == "33"
    status = world.p["44"].stub("codes").GetCodeStatus(health_codes_pb2.GetCodeStatusRequest(ref=code_44.ref),
                                                       metadata=APP, timeout=10).code
    assert status.revocation_reason == common_pb2.REVOCATION_REASON_SUPERSEDED
    assert issue(world, "33", mid).main_index_id == mid  # 33 issues again


def test_a_move_without_consent_or_with_a_document_of_someone_else_changes_nothing(world):
    mid = register(world, "33", doc(11)).main_index_id
    register(world, "33", doc(12))
    stub = world.p["44"].stub("index")
    with pytest.raises(grpc.RpcError) as e:
        stub.MoveResidentIn(rpb.MoveResidentInRequest(main_index_id=mid, document=doc(11)), metadata=APP, timeout=10)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "consent" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.MoveResidentIn(rpb.MoveResidentInRequest(main_index_id=mid, document=doc(12), consent=consent()),
                            metadata=APP, timeout=10)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert number(12) not in e.value.details()
    assert world.p["33"].store.get_resident(mid).national_state is NationalState.CLAIMED
    assert world.p["44"].store.get_resident(mid) is None


def test_a_move_says_whether_the_national_index_or_the_old_home_province_is_unreachable(world):
    """Both are UNAVAILABLE with nothing changed, but the desk hears which: the national index itself
    (NATIONAL_UNAVAILABLE), or the resident's home province behind it (the national service's
    PROVINCE_UNAVAILABLE: HOME_PROVINCE_UNAVAILABLE naming the province)."""
    mid = register(world, "33", doc(16)).main_index_id
    code = issue(world, "33", mid)
    request = rpb.MoveResidentInRequest(main_index_id=mid, document=doc(16), consent=consent())
    move = world.p["44"].stub("index").MoveResidentIn
    world.loop.run(world.national.stop())
    try:
        with pytest.raises(grpc.RpcError) as e:
            move(request, metadata=APP, timeout=15)
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE and error_info(e.value).reason == "NATIONAL_UNAVAILABLE"
        assert "national index" in e.value.details() and "province 33" not in e.value.details()
        # the national index back, but province 33's NationalLink unreachable (nothing listens there)
        world.loop.run(world.national.start(world.p, endpoints={"33": f"127.0.0.1:{free_port()}"}))
        deadline = time.monotonic() + 10
        while True:  # 44's channel to the national index reconnects first
            with pytest.raises(grpc.RpcError) as e:
                move(request, metadata=APP, timeout=15)
            if error_info(e.value).reason != "NATIONAL_UNAVAILABLE" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert e.value.code() is grpc.StatusCode.UNAVAILABLE, e.value.details()
        info = error_info(e.value)
        assert (info.reason, dict(info.metadata)) == ("HOME_PROVINCE_UNAVAILABLE", {"home_province": "33"})
        assert e.value.details() == ("the resident's home province 33 (浙江 Zhejiang) cannot be reached now; "
                                     "nothing changed, try again later")
    finally:
        world.loop.run(world.national.stop())
        world.loop.run(world.national.start(world.p))
    assert world.p["44"].store.get_resident(mid) is None
    assert world.p["33"].store.get_resident(mid).national_state is NationalState.CLAIMED
    status = world.p["33"].stub("codes").GetCodeStatus(health_codes_pb2.GetCodeStatusRequest(ref=code.ref),
                                                       metadata=APP, timeout=10).code
    assert status.state == common_pb2.CODE_STATE_VALID
    deadline = time.monotonic() + 10
    while True:  # both reachable again: the move goes through
        try:
            assert move(request, metadata=APP, timeout=15).previous_province == "33"
            break
        except grpc.RpcError as e:
            if e.code() is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --------------------------------------------------------------------------- hospitals resolve


def test_a_hospital_in_44_resolves_a_33_code_and_the_resident_reads_the_access(world):
    mid = register(world, "33", doc(20)).main_index_id
    code = issue(world, "33", mid)
    reply = world.hospital().ResolveCode(npb.ResolveCodeRequest(code=code.code_text, purpose=npb.PURPOSE_REGISTRATION),
                                         timeout=10)
    assert (reply.main_index_id, reply.home_province) == (mid, "33")
    assert (reply.primary_document.type, reply.primary_document.number) == (common_pb2.DOCUMENT_TYPE_RESIDENT_ID,
                                                                            number(20))
    log = world.p["33"].stub("index").ListAccesses(rpb.ListAccessesRequest(main_index_id=mid), metadata=APP,
                                                   timeout=10)
    assert [(a.access_id, a.hospital_organisation, a.hospital_province, a.purpose, a.code_kind)
            for a in log.accesses] == [(reply.access_id, "gz-zhongshan-1", "44", npb.PURPOSE_REGISTRATION, "static")]
    # a second resolution is logged too, newest first, one per page
    second = world.hospital().ResolveCode(npb.ResolveCodeRequest(code=code.code_text, purpose=npb.PURPOSE_BILLING),
                                          timeout=10)
    page = world.p["33"].stub("index").ListAccesses(rpb.ListAccessesRequest(main_index_id=mid, page_size=1),
                                                    metadata=APP, timeout=10)
    assert [a.access_id for a in page.accesses] == [second.access_id] and page.next_page_token
    rest = world.p["33"].stub("index").ListAccesses(
        rpb.ListAccessesRequest(main_index_id=mid, page_size=1, page_token=page.next_page_token), metadata=APP,
        timeout=10)
    assert [a.access_id for a in rest.accesses] == [reply.access_id] and not rest.next_page_token
    # revoked: refused, and not logged
    world.p["33"].stub("codes").RevokeCode(health_codes_pb2.RevokeCodeRequest(
        ref=code.ref, reason=common_pb2.REVOCATION_REASON_LOST_DEVICE), metadata=APP, timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        world.hospital().ResolveCode(npb.ResolveCodeRequest(code=code.code_text, purpose=npb.PURPOSE_TREATMENT),
                                     timeout=10)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION and number(20) not in e.value.details()
    # the province's reason is passed on; why the code was revoked is not (neither by 33 nor by the national service)
    assert error_info(e.value).reason == "REVOKED" and "lost_device" not in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        world.p["33"].stub("link", "national-index:ops").ResolvePatient(national_link_pb2.ResolvePatientRequest(
            code=code.code_text, purpose=1, hospital=national_link_pb2.Hospital(organisation="gz-zhongshan-1",
                                                                                province="44")), timeout=10)
    assert error_info(e.value).reason == "REVOKED" and "lost_device" not in e.value.details()
    assert len(world.p["33"].store.accesses_of(mid, limit=10)) == 2


def _phone(world, n):
    """A resident of province 33 (document ``n``) with a phone credential: (main index ID, credential, device key)."""
    from healthcode.algorithms import generate_signing_key

    mid = register(world, "33", doc(n)).main_index_id
    device = generate_signing_key()  # the phone's P-256 key
    wallets = world.p["33"].stub("wallets")
    challenge = wallets.CreateChallenge(wallets_pb2.CreateChallengeRequest(main_index_id=mid), metadata=APP,
                                        timeout=10).challenge
    credential = wallets.IssueCredential(wallets_pb2.IssueCredentialRequest(
        main_index_id=mid, challenge=challenge,
        device_key=wallets_pb2.DeviceKey(algorithm=wallets_pb2.DEVICE_KEY_ALGORITHM_ES256,
                                         public_key=device.public_key().spki_der()[-65:]),
        proof=device.sign(hp.proof_of_possession_input(challenge, device.public_key()))),
        metadata=APP, timeout=10).credential.code_text
    return mid, credential, device


def test_a_live_presentation_resolves_once(world):
    mid, credential, device = _phone(world, 21)
    live = hp.encode_presentation(credential, hp.step_at(dt.datetime.now(dt.timezone.utc)), device)
    reply = world.hospital().ResolveCode(npb.ResolveCodeRequest(code=live, purpose=npb.PURPOSE_EMERGENCY), timeout=10)
    assert reply.main_index_id == mid and reply.primary_document.number == number(21)
    assert world.p["33"].store.accesses_of(mid, limit=5)[0].code_kind == "dynamic"
    # the same live code again, straight at the province (the national service refuses it too): a replay
    link = world.p["33"].stub("link", "national-index:ops")
    hospital = national_link_pb2.Hospital(organisation="gz-zhongshan-1", province="44")
    with pytest.raises(grpc.RpcError) as e:
        link.ResolvePatient(national_link_pb2.ResolvePatientRequest(code=live, purpose=1, hospital=hospital),
                            timeout=10)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION and error_info(e.value).reason == "REPLAYED"
    # another process of province 33 (its own replay cache, the same database) refuses it too: the store decides
    from issuer.national_setup import keyring_of
    from issuer.resolution import CodeRefused, Hospital, PatientResolver

    p33 = world.p["33"]
    other_process = PatientResolver(index=p33.index, store=p33.store, province="33",
                                    keyring_at=keyring_of(p33.signer, "33"))
    with pytest.raises(CodeRefused) as refused:
        world.loop.run(other_process.resolve(live, purpose=1, hospital=Hospital("gz-zhongshan-1", "44"),
                                             now=dt.datetime.now(dt.timezone.utc)))
    assert refused.value.reason == "replayed"
    assert len(p33.store.accesses_of(mid, limit=5)) == 1  # the replay recorded no access
    with pytest.raises(grpc.RpcError) as e:  # the credential shown on its own is no live code
        link.ResolvePatient(national_link_pb2.ResolvePatientRequest(code=credential, purpose=1, hospital=hospital),
                            timeout=10)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(e.value).reason == "PRESENTATION_REQUIRED"
    assert len(world.p["33"].store.accesses_of(mid, limit=5)) == 1


def test_national_link_refuses_other_callers_other_provinces_codes_and_bad_input(world):
    mid = register(world, "44", doc(22, "440106")).main_index_id
    code_44 = issue(world, "44", mid).code_text
    request = national_link_pb2.ResolvePatientRequest(
        code=code_44, purpose=1, hospital=national_link_pb2.Hospital(organisation="hz-1", province="33"))
    for cn in ("desk", "province:44", HOSPITAL, "admin:33"):
        with pytest.raises(grpc.RpcError) as e:
            world.p["33"].stub("link", cn).ResolvePatient(request, timeout=10)
        assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED, cn
        with pytest.raises(grpc.RpcError) as e:
            world.p["44"].stub("link", cn).ReleaseResident(national_link_pb2.ReleaseResidentRequest(
                main_index_id=mid, to_province="33"), timeout=10)
        assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED, cn
    assert world.p["44"].store.get_resident(mid).national_state is NationalState.CLAIMED
    link33 = world.p["33"].stub("link", "national-index:ops")
    with pytest.raises(grpc.RpcError) as e:  # a 44 code at 33: not this province's
        link33.ResolvePatient(request, timeout=10)
    assert e.value.code() is grpc.StatusCode.FAILED_PRECONDITION and error_info(e.value).reason == "OTHER_PROVINCE"
    forged = code_44[:-8] + ("A" * 8 if not code_44.endswith("A" * 8) else "B" * 8)
    with pytest.raises(grpc.RpcError) as e:
        world.p["44"].stub("link", "national-index:ops").ResolvePatient(
            national_link_pb2.ResolvePatientRequest(code=forged, purpose=1, hospital=request.hospital), timeout=10)
    assert e.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(grpc.RpcError) as e:
        link33.ResolvePatient(national_link_pb2.ResolvePatientRequest(
            code="", purpose=9, hospital=national_link_pb2.Hospital(organisation="bad org!", province="99")),
            timeout=10)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert {"code", "purpose", "hospital.organisation", "hospital.province"} <= set(_fields(e.value))
    with pytest.raises(grpc.RpcError) as e:
        link33.ReleaseResident(national_link_pb2.ReleaseResidentRequest(main_index_id="x", to_province="33"),
                               timeout=10)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT and set(_fields(e.value)) == {"main_index_id",
                                                                                          "to_province"}
    assert world.p["44"].store.accesses_of(mid, limit=5) == []


def test_release_is_idempotent_when_replayed(world):
    mid = register(world, "44", doc(23, "440106")).main_index_id
    issue(world, "44", mid)
    link = world.p["44"].stub("link", "national-index:ops")
    release = national_link_pb2.ReleaseResidentRequest(main_index_id=mid, to_province="11", consent_reference="r-1")
    assert link.ReleaseResident(release, timeout=10).superseded_codes == 1
    assert link.ReleaseResident(release, timeout=10).superseded_codes == 0
    with pytest.raises(grpc.RpcError) as e:
        link.ReleaseResident(national_link_pb2.ReleaseResidentRequest(
            main_index_id=hc.main_index_id_from_bytes(os.urandom(16)), to_province="11"), timeout=10)
    assert e.value.code() is grpc.StatusCode.NOT_FOUND


def _fields(error: grpc.RpcError) -> list[str]:
    return [f for f, _ in field_violations(error)]


# --------------------------------------------------------------------------- partitions


def test_registrations_go_on_provisionally_while_the_national_service_is_down_and_reconcile(world, caplog):
    caplog.set_level(logging.DEBUG)
    world.loop.run(world.national.stop())
    try:
        a = register(world, "33", doc(30))
        b = register(world, "44", doc(30), doc(31, "440106"))  # the same person, registered in both
        solo = register(world, "44", doc(32, "440106"))
        assert a.provisional and b.provisional and solo.provisional
        assert a.main_index_id != b.main_index_id
        code_a, code_b = issue(world, "33", a.main_index_id), issue(world, "44", b.main_index_id)
        assert world.reconcile("33").unreachable  # still down: nothing changes
        assert world.p["33"].store.get_resident(a.main_index_id).national_state is NationalState.PROVISIONAL
    finally:
        world.loop.run(world.national.start(world.p))
    for code in ("33", "44"):  # the issuers' channels reconnect within their backoff
        deadline = time.monotonic() + 15
        while world.reconcile(code).unreachable:
            assert time.monotonic() < deadline, f"province {code} did not reach the national service again"
            time.sleep(0.2)
    world.reconcile("33"), world.reconcile("44")  # the events of the merge reach both; applying again is a no-op
    world.reconcile("33"), world.reconcile("44")
    ra, rb = world.p["33"].store.get_resident(a.main_index_id), world.p["44"].store.get_resident(b.main_index_id)
    survivors = [r for r in (ra, rb) if r.merged_into is None]
    assert len(survivors) == 1, (ra, rb)  # exactly one main index ID survives
    survivor = survivors[0]
    loser, loser_code, loser_province = (rb, code_b, "44") if survivor is ra else (ra, code_a, "33")
    assert loser.merged_into == survivor.main_index_id and loser.national_state is NationalState.MERGED
    status = world.p[loser_province].stub("codes").GetCodeStatus(
        health_codes_pb2.GetCodeStatusRequest(ref=loser_code.ref), metadata=APP, timeout=10).code
    assert status.revocation_reason == common_pb2.REVOCATION_REASON_MERGED
    # nothing acknowledged is lost: each province finds the person, and answers the survivor
    for code, document in (("33", doc(30)), ("44", doc(30)), ("44", doc(31, "440106"))):
        found = world.p[code].stub("index").FindResident(rpb.FindResidentRequest(document=document), metadata=APP,
                                                         timeout=10)
        assert found.main_index_id == survivor.main_index_id
    assert world.p["44"].store.get_resident(solo.main_index_id).national_state is NationalState.CLAIMED
    # and the survivor's codes still resolve
    survivor_province = "33" if survivor is ra else "44"
    live = issue(world, survivor_province, survivor.main_index_id)
    assert world.hospital().ResolveCode(npb.ResolveCodeRequest(code=live.code_text, purpose=1),
                                        timeout=10).main_index_id == survivor.main_index_id
    assert number(30) not in caplog.text and number(31, "440106") not in caplog.text


def test_a_claim_cut_off_mid_way_leaves_a_pending_entry_a_retry_takes_up(world):
    """A registration whose claim never happened (a crash) leaves a pending entry: the retry answers its ID."""
    index = world.p["33"].index
    from issuer.documents import parse_document

    document = parse_document("resident_id", number(40), today=TODAY)
    mid = world.loop.run(index.register_resident(document, now=utc_now(), state=NationalState.PENDING))
    again = register(world, "33", doc(40))
    assert again.main_index_id == mid and not again.provisional
    assert world.p["33"].store.get_resident(mid).national_state is NationalState.CLAIMED
    # a pending entry whose documents another province holds is removed by the reconciler, never acknowledged
    held = parse_document("resident_id", number(22, "440106"), today=TODAY)
    orphan = world.loop.run(index.register_resident(held, now=utc_now() - dt.timedelta(hours=1),
                                                    state=NationalState.PENDING))
    run = world.reconcile("33")
    assert run.removed == 1 and world.p["33"].store.get_resident(orphan) is None


def test_the_reconciler_task_claims_on_its_own_once_the_link_returns(world):
    """The background task (as ``serve`` runs it), at a short interval: no round is run by hand."""
    province = world.p["33"]
    task = Reconciler(index=province.index, national=province.client, clock=utc_now, interval=0.2,
                      pending_grace=dt.timedelta(0))
    world.loop.run(world.national.stop())
    try:
        provisional = register(world, "33", doc(50))
        assert provisional.provisional
        world.loop.run(_start(task))
        time.sleep(0.6)  # rounds run and find the national service unreachable: nothing changes
        assert province.store.get_resident(provisional.main_index_id).national_state is NationalState.PROVISIONAL
    finally:
        world.loop.run(world.national.start(world.p))
    try:
        deadline = time.monotonic() + 15
        while province.store.get_resident(provisional.main_index_id).national_state is not NationalState.CLAIMED:
            assert time.monotonic() < deadline, "the reconciler task did not claim the provisional entry"
            time.sleep(0.1)
    finally:
        world.loop.run(task.stop())
    with pytest.raises(grpc.RpcError) as e:  # now held nationally by 33
        register(world, "44", doc(50))
    assert e.value.code() is grpc.StatusCode.ALREADY_EXISTS and "province 33" in e.value.details()


async def _start(reconciler: Reconciler) -> None:
    reconciler.start()


def test_a_live_code_whose_access_was_not_recorded_can_be_resolved_again(world):
    """A presentation is spent only with its access: a store that refused the write leaves it unspent."""
    from issuer.national_setup import keyring_of
    from issuer.resolution import CodeRefused, Hospital, PatientResolver
    from issuer.store.base import StoreOverloaded

    mid, credential, device = _phone(world, 22)
    p33 = world.p["33"]
    now = dt.datetime.now(dt.timezone.utc)
    live = hp.encode_presentation(credential, hp.step_at(now), device)

    class OverloadedOnce:
        """The province's real store, whose first access write is refused as overloaded."""

        def __init__(self, store):
            self._store, self.refused = store, False

        def __getattr__(self, name):
            return getattr(self._store, name)

        def record_access(self, record):
            if not self.refused:
                self.refused = True
                raise StoreOverloaded("too many writes waiting")
            return self._store.record_access(record)

    resolver = PatientResolver(index=p33.index, store=OverloadedOnce(p33.store), province="33",
                               keyring_at=keyring_of(p33.signer, "33"))
    hospital = Hospital("gz-zhongshan-1", "44")
    with pytest.raises(StoreOverloaded):
        world.loop.run(resolver.resolve(live, purpose=1, hospital=hospital, now=now))
    assert p33.store.accesses_of(mid, limit=5) == []
    resolved = world.loop.run(resolver.resolve(live, purpose=1, hospital=hospital, now=now))  # the retry
    assert resolved.main_index_id == mid and len(p33.store.accesses_of(mid, limit=5)) == 1
    with pytest.raises(CodeRefused) as refused:  # and then it is spent
        world.loop.run(resolver.resolve(live, purpose=1, hospital=hospital, now=now))
    assert refused.value.reason == "replayed"
