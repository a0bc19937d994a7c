"""Issue 14's "done when": three provinces and the national index as real processes.

``tools.bench.national_cluster`` writes one throwaway PKI and the files of
three provincial issuers (33, 44, 11) and the national service, and runs each
as its own OS process (``python -m issuer serve``, ``python -m national
serve``) on 127.0.0.1 with mTLS. The tests drive them through the generated
stubs only, as a registration desk, a province, the national operations
centre and hospitals would:

* unique identities: a resident registered at 33 cannot be registered again
  at 44 (the answer names 33; 44 holds no second identity);
* a move 33 -> 44 with consent: the same main index ID, 33's live codes
  superseded, 33's record pointing to 44; without consent it is refused; with
  33's issuer SIGKILLed it is UNAVAILABLE and changes nothing;
* a partition: the national service stopped (SIGTERM), killed (SIGKILL)
  between registrations, and killed amid concurrent registrations with claims
  in flight, while 33 and 44 both register the same people; after it returns
  and reconciliation runs, one main index ID per person survives nationally,
  the loser's codes are revoked, both provinces know, and no acknowledged
  registration is lost;
* a province-44 hospital resolves a province-33 code through the national
  service, with a purpose, and the access is in the resident's log at 33 (read
  by the app); a live code resolves once; each hospital is rate limited;
* docs/his-integration.md's example and its wiring A (scans fed to
  ``healthcode-verifier run --stdin``, the same text resolved) as written;
* the failures: forged, expired, revoked, other-province-signed and oversized
  codes, no purpose, non-hospital certificates, claims for another province,
  malformed documents: each a clear status, and no document number in any
  error, log, database or WAL file (scanned after a clean stop).

The cluster is started once for the module (four processes); tests use
distinct residents.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import itertools
import json
import subprocess
import sys
import time
from typing import Iterator

import grpc
import pytest

import healthcode as hc
from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc, resident_index_pb2, resident_index_pb2_grpc

from tools.bench.national_cluster import HOSPITALS, NATIONAL_CN, NOBODY_CN, Cluster, desk_cn, hospital_cn, \
    province_cn, scan_for

pytest.importorskip("national.api.national_index_pb2")

from .grpc_status_support import violations  # noqa: E402
from .national_cluster_helpers import (HOSPITAL_33, HOSPITAL_44, MAX_RECONNECT_GAP, OUTAGE,  # noqa: E402
                                       RECONCILE_TIMEOUT, ROOT, RPC_TIMEOUT, USED_NUMBERS, Desk, Reconnects, consent,
                                       error_info, his_example, national_holder, national_index, national_pb2,
                                       new_number, outcome, refused, register_both, resident_id, resolve, signed,
                                       wait_for)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# --------------------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("national-cluster"), now=dt.datetime.now(dt.timezone.utc))
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def desks(cluster) -> Iterator[dict[str, Desk]]:
    out = {p: Desk(cluster, p) for p in cluster.issuers}
    yield out
    for desk in out.values():
        desk.channel.close()


# --------------------------------------------------------------------------- unique identities


def test_a_second_province_gets_the_home_province_not_a_second_identity(cluster, desks):
    document = resident_id(new_number())
    mid = desks["33"].register(document)

    error = refused(lambda: desks["44"].register(document), grpc.StatusCode.ALREADY_EXISTS)
    assert error_info(error) == ("HELD_BY_PROVINCE", {"home_province": "33"}), error_info(error)
    refused(lambda: desks["44"].find(document), grpc.StatusCode.NOT_FOUND)
    assert national_holder(cluster, document) == (mid, "33")
    assert desks["33"].find(document) == mid


def test_linking_a_document_held_elsewhere_is_refused(cluster, desks):
    first, second = resident_id(new_number()), resident_id(new_number())
    desks["33"].register(first)
    mid_44 = desks["44"].register(second)
    refused(lambda: desks["44"].index.LinkIdentifier(
        resident_index_pb2.LinkIdentifierRequest(main_index_id=mid_44, document=first), timeout=RPC_TIMEOUT),
        grpc.StatusCode.ALREADY_EXISTS)
    assert national_holder(cluster, second) == (mid_44, "44")


def test_a_province_claims_only_for_itself(cluster, desks):
    document = resident_id(new_number())
    mid_33 = desks["33"].register(document)
    extra = resident_id(new_number())
    # 44 adding a document to 33's identity: homed elsewhere
    refused(lambda: national_index(cluster, province_cn("44")).ClaimIdentity(
        national_pb2.ClaimIdentityRequest(main_index_id=mid_33, documents=[document, extra]), timeout=RPC_TIMEOUT),
        grpc.StatusCode.FAILED_PRECONDITION)
    # a claim homed in another province than the caller's own: refused, nothing stored
    refused(lambda: national_index(cluster, province_cn("44")).ClaimIdentity(
        national_pb2.ClaimIdentityRequest(main_index_id=hc.main_index_id_from_bytes(b"\x44" * 16),
                                          documents=[extra], home_province="33"), timeout=RPC_TIMEOUT),
        grpc.StatusCode.PERMISSION_DENIED)
    # nobody but a province claims
    for cn in (HOSPITAL_44, NATIONAL_CN, desk_cn("33"), NOBODY_CN):
        refused(lambda cn=cn: national_index(cluster, cn).ClaimIdentity(
            national_pb2.ClaimIdentityRequest(main_index_id=mid_33, documents=[extra]), timeout=RPC_TIMEOUT),
            grpc.StatusCode.PERMISSION_DENIED)
    # nothing stored: the extra document is still free nationally (11 can claim it for a new identity)
    fresh = hc.main_index_id_from_bytes(b"\x11" * 16)
    probe = national_index(cluster, province_cn("11")).ClaimIdentity(
        national_pb2.ClaimIdentityRequest(main_index_id=fresh, documents=[extra]), timeout=RPC_TIMEOUT)
    assert (probe.outcome, probe.main_index_id, probe.home_province) == (national_pb2.CLAIM_OUTCOME_CLAIMED,
                                                                         fresh, "11")


def test_malformed_claims_get_field_violations(cluster, desks):
    stub = national_index(cluster, province_cn("33"))
    error = refused(lambda: stub.ClaimIdentity(national_pb2.ClaimIdentityRequest(
        main_index_id="not-an-id", documents=[common_pb2.Document(type=1, number="12345")]), timeout=RPC_TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert {"main_index_id", "documents[0].number"} <= set(violations(error)), violations(error)
    # at a province with a national link: refused before any claim
    bad = common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=new_number()[:-1] + "0")
    if bad.number == USED_NUMBERS[-1]:
        bad.number = bad.number[:-1] + "1"
    USED_NUMBERS.append(bad.number)
    error = refused(lambda: desks["33"].register(bad), grpc.StatusCode.INVALID_ARGUMENT)
    assert "primary.number" in violations(error), violations(error)


# --------------------------------------------------------------------------- hospitals resolve codes


def test_a_guangdong_hospital_resolves_a_zhejiang_code_and_the_resident_sees_it(cluster, desks):
    number = new_number()
    passport = common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_PASSPORT, number="E" + number[-8:], country="CHN")
    USED_NUMBERS.append(passport.number)
    mid = desks["33"].register(resident_id(number), passport)
    code = desks["33"].issue(mid)

    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    reply = resolve(cluster, HOSPITAL_44, code.code_text, national_pb2.PURPOSE_REGISTRATION)
    assert reply.main_index_id == mid
    assert reply.home_province == "33"
    assert (reply.primary_document.type, reply.primary_document.number) == (common_pb2.DOCUMENT_TYPE_RESIDENT_ID,
                                                                            number)
    assert reply.access_id
    assert reply.resolved_at.ToDatetime(dt.timezone.utc) >= before - dt.timedelta(seconds=1)

    again = resolve(cluster, HOSPITAL_33, code.code_text, national_pb2.PURPOSE_TREATMENT)
    assert again.main_index_id == mid and again.access_id != reply.access_id

    log = desks["33"].accesses(mid)
    assert [a.access_id for a in log] == [again.access_id, reply.access_id]  # newest first
    # the resident's app reads the same log through its back end (an issuance API key; its TLS certificate names
    # no role); the wallet-role key a phone page carries does not reach it: a main index ID is in every QR
    with cluster.channel("33", NOBODY_CN) as channel:
        app = resident_index_pb2_grpc.ResidentIndexStub(channel)
        seen = app.ListAccesses(resident_index_pb2.ListAccessesRequest(main_index_id=mid),
                                metadata=cluster.provinces["33"].metadata, timeout=RPC_TIMEOUT).accesses
        assert list(seen) == log
        refused(lambda: app.ListAccesses(resident_index_pb2.ListAccessesRequest(main_index_id=mid),
                                         metadata=cluster.provinces["33"].wallet_metadata, timeout=RPC_TIMEOUT),
                grpc.StatusCode.PERMISSION_DENIED)
        refused(lambda: health_codes_pb2_grpc.HealthCodesStub(channel).IssueCode(
            health_codes_pb2.IssueCodeRequest(main_index_id=mid), metadata=cluster.provinces["33"].wallet_metadata,
            timeout=RPC_TIMEOUT), grpc.StatusCode.PERMISSION_DENIED)
    entry = log[1]
    assert (entry.hospital_organisation, entry.hospital_province, entry.purpose, entry.code_kind) == (
        HOSPITALS[0][1], "44", national_pb2.PURPOSE_REGISTRATION, "static")
    assert entry.resolved_at.seconds == reply.resolved_at.seconds
    refused(lambda: desks["44"].accesses(mid), grpc.StatusCode.NOT_FOUND)  # the log lives at the home province


def test_resolving_bad_codes_is_refused_and_logged_nowhere(cluster, desks):
    mid = desks["33"].register(resident_id(new_number()))
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    key_33 = cluster.provinces["33"].signing_key
    key_44 = cluster.provinces["44"].signing_key
    revoked = desks["33"].issue(mid)
    desks["33"].codes.RevokeCode(health_codes_pb2.RevokeCodeRequest(
        code_text=revoked.code_text, reason=common_pb2.REVOCATION_REASON_LOST_DEVICE), timeout=RPC_TIMEOUT)
    window = {"issued_at": now - dt.timedelta(minutes=5), "expires_at": now + dt.timedelta(days=1)}
    cases = {
        "forged": signed(hc.generate_signing_key(hc.Algorithm.ES256), province="33", subject=mid,
                          kid=key_33.public_key().key_id(), **window),
        "expired": signed(key_33, province="33", subject=mid, issued_at=now - dt.timedelta(minutes=50),
                           expires_at=now - dt.timedelta(minutes=1)),
        "revoked": revoked.code_text,
        "other province's key": signed(key_44, province="33", subject=mid, **window),
        "not a code": "EHC1:NOT-A-CODE",
        "too long": "EHC1:" + "A" * 5000,
    }
    for name, text in cases.items():
        status, reason = EXPECTED_REFUSALS[name]
        error = refused(lambda text=text: resolve(cluster, HOSPITAL_44, text), status)
        assert error.details() and error_info(error)[0] == reason, (name, error_info(error), error.details())
        assert "lost_device" not in error.details()  # why a code was revoked is no hospital's business
    assert violations(error) == {"code": "TOO_LONG"}
    assert desks["33"].accesses(mid) == []

    good = desks["33"].issue(mid).code_text
    error = refused(lambda: resolve(cluster, HOSPITAL_44, good, national_pb2.PURPOSE_UNSPECIFIED),
                    grpc.StatusCode.INVALID_ARGUMENT)
    assert "purpose" in violations(error)
    for cn in (desk_cn("44"), province_cn("44"), NATIONAL_CN, NOBODY_CN):
        refused(lambda cn=cn: resolve(cluster, cn, good), grpc.StatusCode.PERMISSION_DENIED)
    assert desks["33"].accesses(mid) == []


#: The status and ErrorInfo reason each bad code gets (docs/his-integration.md §4 tells the clerk by these).
EXPECTED_REFUSALS: dict[str, tuple[grpc.StatusCode, str]] = {
    "forged": (grpc.StatusCode.INVALID_ARGUMENT, "BAD_SIGNATURE"),
    "expired": (grpc.StatusCode.FAILED_PRECONDITION, "EXPIRED"),
    "revoked": (grpc.StatusCode.FAILED_PRECONDITION, "REVOKED"),  # the home province's reason, passed on
    "other province's key": (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_KEY"),
    "not a code": (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED"),
    "too long": (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
}


def test_the_his_example_in_the_docs_resolves_and_explains_refusals(cluster, desks):
    example = his_example()
    cert, key = (cluster.pki / f"{HOSPITAL_44}.pem").read_bytes(), (cluster.pki / f"{HOSPITAL_44}.key").read_bytes()
    stub = example["open_resolver"](cluster.national.address, cluster.ca_pem, cert, key)
    number = new_number()
    mid = desks["33"].register(resident_id(number))
    code = desks["33"].issue(mid)

    patient = example["resolve_scan"](stub, code.code_text, national_pb2.PURPOSE_EMERGENCY)
    assert (patient["main_index_id"], patient["document_number"], patient["home_province"]) == (mid, number, "33")
    assert patient["resolved_at"].utcoffset() == dt.timedelta(hours=8)
    assert [a.access_id for a in desks["33"].accesses(mid)] == [patient["access_id"]]

    desks["33"].codes.RevokeCode(health_codes_pb2.RevokeCodeRequest(
        code_text=code.code_text, reason=common_pb2.REVOCATION_REASON_LOST_DEVICE), timeout=RPC_TIMEOUT)
    error = refused(lambda: example["resolve_scan"](stub, code.code_text, national_pb2.PURPOSE_REGISTRATION),
                    grpc.StatusCode.FAILED_PRECONDITION)
    assert "作废" in example["clerk_message"](error)
    error = refused(lambda: example["resolve_scan"](stub, "EHC1:NOT-A-CODE", national_pb2.PURPOSE_REGISTRATION),
                    grpc.StatusCode.INVALID_ARGUMENT)
    assert "无效健康码" in example["clerk_message"](error)


def test_a_live_code_resolves_once_with_the_person_present(cluster, desks):
    from healthcode.presentation import encode_presentation, proof_of_possession_input, step_at
    from issuer.api import wallets_pb2, wallets_pb2_grpc

    number = new_number()
    mid = desks["33"].register(resident_id(number))
    phone = hc.generate_signing_key(hc.Algorithm.ES256)
    wallets = wallets_pb2_grpc.WalletsStub(desks["33"].channel)
    challenge = wallets.CreateChallenge(wallets_pb2.CreateChallengeRequest(main_index_id=mid),
                                        timeout=RPC_TIMEOUT).challenge
    credential = wallets.IssueCredential(wallets_pb2.IssueCredentialRequest(
        main_index_id=mid, challenge=challenge,
        device_key=wallets_pb2.DeviceKey(algorithm=wallets_pb2.DEVICE_KEY_ALGORITHM_ES256,
                                         public_key=phone.public_key().spki_der()[-65:]),
        proof=phone.sign(proof_of_possession_input(challenge, phone.public_key()))), timeout=RPC_TIMEOUT).credential

    shown = encode_presentation(credential.code_text, step_at(dt.datetime.now(dt.timezone.utc)), phone)
    reply = resolve(cluster, HOSPITAL_44, shown, national_pb2.PURPOSE_EMERGENCY)
    assert (reply.main_index_id, reply.primary_document.number) == (mid, number)
    # the same presentation again (a screenshot passed on), and the bare credential: the person is not present
    refused(lambda: resolve(cluster, HOSPITAL_44, shown), grpc.StatusCode.FAILED_PRECONDITION)
    refused(lambda: resolve(cluster, HOSPITAL_44, credential.code_text), grpc.StatusCode.FAILED_PRECONDITION)
    log = desks["33"].accesses(mid)
    assert [(a.access_id, a.code_kind, a.purpose) for a in log] == [
        (reply.access_id, "dynamic", national_pb2.PURPOSE_EMERGENCY)]


def test_each_hospital_is_rate_limited(cluster, desks):
    from tools.bench.national_cluster import LIMITED_HOSPITAL

    mid = desks["33"].register(resident_id(new_number()))
    code = desks["33"].issue(mid).code_text
    limited = hospital_cn(*LIMITED_HOSPITAL)
    answers = []
    for _ in range(4):
        try:
            answers.append(resolve(cluster, limited, code).access_id)
        except grpc.RpcError as e:
            answers.append(e.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in answers, answers
    assert resolve(cluster, HOSPITAL_44, code).main_index_id == mid  # another hospital is not held back
    assert len(desks["33"].accesses(mid)) == sum(isinstance(a, str) for a in answers) + 1  # refused: no entry


def test_wiring_a_the_his_feeds_the_verifier_and_resolves_the_same_text(cluster, desks, tmp_path):
    """docs/his-integration.md §2, wiring A: scan -> verifier stdin -> JSON line -> ResolveCode with the text."""
    number = new_number()
    mid = desks["44"].register(resident_id(number))
    scanned = desks["44"].issue(mid).code_text
    trust = cluster.directory / "national" / "trust"  # the same keys the national service trusts (dev bundle)
    head = [sys.executable, "-m", "verifier", "--data-dir", str(tmp_path / "hcv"), "--dev-trust",
            "--source", str(trust)]
    assert subprocess.run([*head, "sync"], capture_output=True, timeout=120, cwd=ROOT).returncode == 0
    verifier = subprocess.Popen([*head, "run", "--stdin", "--json", "stdout", "--display", "none", "--no-audit",
                                 "--no-sync"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=ROOT)
    try:
        assert verifier.stdin is not None and verifier.stdout is not None
        verifier.stdin.write(scanned.encode() + b"\n" + b"EHC1:GARBAGE\n")
        verifier.stdin.flush()
        lines = [json.loads(verifier.stdout.readline()) for _ in range(2)]
        verifier.stdin.close()
        assert verifier.wait(60) == 0, verifier.stderr.read() if verifier.stderr else ""
    finally:
        if verifier.poll() is None:
            verifier.kill()
    valid, invalid = lines
    assert (valid["schema"], valid["seq"], valid["result"], valid["province"], valid["main_index_id"]) == (
        "healthcode-verifier/result/1", 1, "valid", "44", mid)
    assert (invalid["seq"], invalid["result"], invalid["main_index_id"]) == (2, "invalid", None)
    assert number not in json.dumps(lines)

    example = his_example()
    cert, key = (cluster.pki / f"{HOSPITAL_33}.pem").read_bytes(), (cluster.pki / f"{HOSPITAL_33}.key").read_bytes()
    patient = example["resolve_scan"](example["open_resolver"](cluster.national.address, cluster.ca_pem, cert, key),
                                      scanned, national_pb2.PURPOSE_REGISTRATION)
    assert (patient["main_index_id"], patient["document_number"], patient["home_province"]) == (
        valid["main_index_id"], number, "44")


# --------------------------------------------------------------------------- moving


def test_a_resident_moves_from_33_to_44_with_consent(cluster, desks):
    document = resident_id(new_number())
    mid = desks["33"].register(document)
    old_code = desks["33"].issue(mid)

    # without consent, with an unset method, with a consent from the future: refused, nothing changed
    error = refused(lambda: desks["44"].move_in(mid, document, None), grpc.StatusCode.INVALID_ARGUMENT)
    assert any(f.startswith("consent") for f in violations(error)), violations(error)
    error = refused(lambda: desks["44"].move_in(mid, document, consent(common_pb2.CONSENT_METHOD_UNSPECIFIED)),
                    grpc.StatusCode.INVALID_ARGUMENT)
    assert "consent.method" in violations(error), violations(error)
    future = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(hours=1)
    error = refused(lambda: desks["44"].move_in(mid, document, consent(given_at=future)),
                    grpc.StatusCode.INVALID_ARGUMENT)
    assert "consent.given_at" in violations(error), violations(error)
    # the national index itself refuses a transfer without consent
    transfer = national_index(cluster, province_cn("44"))
    error = refused(lambda: transfer.TransferResident(national_pb2.TransferResidentRequest(
        main_index_id=mid, document=document), timeout=RPC_TIMEOUT), grpc.StatusCode.INVALID_ARGUMENT)
    assert any(f.startswith("consent") for f in violations(error)), violations(error)
    # a document the identity does not hold: refused
    refused(lambda: desks["44"].move_in(mid, resident_id(new_number()), consent()),
            grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED)
    assert desks["33"].status(old_code.code_text).state == common_pb2.CODE_STATE_VALID
    assert desks["33"].where(document) == (mid, "33")
    refused(lambda: desks["44"].find(document), grpc.StatusCode.NOT_FOUND)

    moved = desks["44"].move_in(mid, document, consent())
    assert (moved.main_index_id, moved.previous_province) == (mid, "33")
    assert desks["44"].where(document) == (mid, "44")
    assert national_holder(cluster, document) == (mid, "44")
    superseded = desks["33"].status(old_code.code_text)
    assert (superseded.state, superseded.revocation_reason) == (common_pb2.CODE_STATE_REVOKED,
                                                                common_pb2.REVOCATION_REASON_SUPERSEDED)
    # 33's record points to 44, and 33 issues no more codes for the resident
    assert desks["33"].where(document) == (mid, "44")
    refused(lambda: desks["33"].issue(mid), grpc.StatusCode.FAILED_PRECONDITION)
    new_code = desks["44"].issue(mid)
    assert resolve(cluster, HOSPITAL_33, new_code.code_text).home_province == "44"
    # moving in twice is not a second identity
    refused(lambda: desks["44"].register(document), grpc.StatusCode.ALREADY_EXISTS)


def test_a_move_while_the_old_province_is_down_changes_nothing(cluster, desks):
    """33's issuer SIGKILLed: every move meanwhile is UNAVAILABLE and changes nothing. While 33 is down a
    listener on its port takes (and drops) the national service's reconnection attempts: their gaps stay
    within national/links.py's 5 s cap (gRPC's default backoff grows past 10 s within 30 s, to 120 s), so
    once 33 is back the move goes through within a few seconds."""
    document = resident_id(new_number())
    mid = desks["33"].register(document)
    code = desks["33"].issue(mid)
    node = cluster.issuers["33"]
    node.kill()
    try:
        with Reconnects(node.port) as attempts:
            until = time.monotonic() + OUTAGE
            while time.monotonic() < until:  # the desk tries again and again: each time UNAVAILABLE, naming 33
                error = refused(lambda: desks["44"].move_in(mid, document, consent()), grpc.StatusCode.UNAVAILABLE)
                assert error_info(error) == ("HOME_PROVINCE_UNAVAILABLE", {"home_province": "33"}), error.details()
                assert "home province 33 (浙江 Zhejiang) cannot be reached now" in error.details()
                time.sleep(1.0)
            seen = attempts.stop()
    finally:
        node.start()
    back = time.monotonic()
    gaps = [round(b - a, 1) for a, b in zip(seen, seen[1:])] + [round(until - seen[-1], 1)] if seen else []
    assert len(seen) >= 5 and max(gaps) <= MAX_RECONNECT_GAP, gaps
    assert national_holder(cluster, document) == (mid, "33")
    refused(lambda: desks["44"].find(document), grpc.StatusCode.NOT_FOUND)
    assert desks["33"].where(document) == (mid, "33")
    assert desks["33"].status(code.code_text).state == common_pb2.CODE_STATE_VALID
    # once 33 is back the move goes through, after the national service's next reconnection attempt at most
    while True:
        try:
            assert desks["44"].move_in(mid, document, consent()).previous_province == "33"
            break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() - back > MAX_RECONNECT_GAP + 2:
                raise
            time.sleep(0.25)
    assert desks["33"].status(code.code_text).revocation_reason == common_pb2.REVOCATION_REASON_SUPERSEDED


# --------------------------------------------------------------------------- partitions


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_a_partition_is_reconciled_to_one_identity_per_person(cluster, desks, how):
    people = [resident_id(new_number()) for _ in range(5)]
    if how == "stopped":
        cluster.national.stop()
        try:
            acked = register_both(desks, people)
        finally:
            cluster.national.start()
    else:  # the first person reaches the national index from 33; then SIGKILL, and the rest is provisional
        reply = desks["33"].register_reply(people[0])
        assert not reply.provisional
        acked = [("33", reply.main_index_id, desks["33"].issue(reply.main_index_id).code_text, people[0].number)]
        cluster.national.kill()
        time.sleep(1.1)  # registered_at is whole seconds: 44's entry is acknowledged strictly later
        try:
            acked += register_both(desks, people[:1], ("44",)) + register_both(desks, people[1:])
        finally:
            cluster.national.start()
    assert len(acked) == 2 * len(people) and len({mid for _, mid, _, _ in acked}) == 2 * len(people)

    by_number: dict[str, list[tuple[str, str, str]]] = {}
    for province, mid, code, number in acked:
        by_number.setdefault(number, []).append((province, mid, code))

    def settled() -> bool:
        try:
            return all(outcome(cluster, desks, document) is not None for document in people)
        except grpc.RpcError:
            return False

    wait_for(settled, RECONCILE_TIMEOUT, "every person reconciled at both provinces")
    for document in people:
        survivor, home = outcome(cluster, desks, document)
        registrations = by_number[document.number]
        assert survivor in {mid for _, mid, _ in registrations}
        assert sum(mid != survivor for _, mid, _ in registrations) == 1  # exactly one loser per person
        if how == "killed" and document is people[0]:
            assert home == "33"  # 33's acknowledged-first, non-provisional identity survives
        for province, mid, code in registrations:
            state = desks[province].status(code)
            if mid == survivor:
                assert province == home and state.state == common_pb2.CODE_STATE_VALID
            else:  # the loser: codes revoked, its record merged into the survivor
                assert (state.state, state.revocation_reason) == (common_pb2.CODE_STATE_REVOKED,
                                                                  common_pb2.REVOCATION_REASON_MERGED)
                refused(lambda p=province, m=mid: desks[p].issue(m), grpc.StatusCode.FAILED_PRECONDITION)


def test_sigkill_of_the_national_service_amid_concurrent_registrations_loses_nothing(cluster, desks):
    """33 and 44 register the same 60 people from 8 threads; the national service is SIGKILLed after 40.

    Claims in flight die with it. A registration answered is acknowledged
    (claimed, or provisional when the claim failed); a province that found the
    person already claimed answers ALREADY_EXISTS (not acknowledged). After the
    service returns and the provinces reconcile: per person, one survivor among
    the acknowledged IDs, every acknowledged entry found at its province
    pointing at it, every other acknowledged ID's code revoked (MERGED).
    """
    people = [resident_id(new_number()) for _ in range(60)]
    jobs = [(province, document) for document in people for province in ("33", "44")]
    acked: list[tuple[str, str, str, str, bool]] = []
    done = itertools.count(1)

    def work(job) -> None:
        province, document = job
        try:
            reply = desks[province].register_reply(document)
            acked.append((province, reply.main_index_id, desks[province].issue(reply.main_index_id).code_text,
                          document.number, reply.provisional))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        if next(done) == 40:
            cluster.national.kill()

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(work, jobs))
    finally:
        cluster.national.kill()
        cluster.national.start()
    provisional = [a for a in acked if a[4]]
    assert provisional and len(provisional) < len(acked), "the kill fell inside the run"
    by_number: dict[str, list[tuple[str, str, str]]] = {}
    for province, mid, code, number, _ in acked:
        by_number.setdefault(number, []).append((province, mid, code))
    assert set(by_number) == {d.number for d in people}  # every person acknowledged somewhere

    def view(document) -> tuple[str, str] | None:
        views = {desks[p].where(document) for p, _, _ in by_number[document.number]}
        return views.pop() if len(views) == 1 else None

    wait_for(lambda: all(view(d) is not None for d in people), RECONCILE_TIMEOUT, "the provinces agree")
    for document in people:
        survivor, home = view(document)
        assert national_holder(cluster, document) == (survivor, home)
        registrations = by_number[document.number]
        assert survivor in {mid for _, mid, _ in registrations}
        for province, mid, code in registrations:
            state = desks[province].status(code)
            if mid == survivor:
                assert state.state == common_pb2.CODE_STATE_VALID
            else:
                assert (state.state, state.revocation_reason) == (common_pb2.CODE_STATE_REVOKED,
                                                                  common_pb2.REVOCATION_REASON_MERGED)


# --------------------------------------------------------------------------- nothing leaked


def test_zz_no_number_in_any_log_or_database(cluster, tmp_path):
    """Last: every number the module sent, searched for in every log, database and WAL file, after a clean stop."""
    assert len(USED_NUMBERS) > 20
    canary = tmp_path / "canary.log"  # the scan finds what it looks for, in each encoding
    canary.write_bytes(b"x" + USED_NUMBERS[0].encode("utf-16-le") + b"y")
    assert scan_for([canary], USED_NUMBERS[:1]) == [(str(canary), USED_NUMBERS[0])]

    for node in cluster.nodes:  # SIGTERM: every process writes its pending log lines and closes its database
        assert node.stop() == 0, node.name
    files = list(cluster.data_files())
    assert sum(1 for f in files if f.suffix == ".log" for _ in f.open("rb")) > 200  # the RPC lines are there
    assert {f.name for f in files} >= {"national.db", "national.log", "issuer.db", "province-33.log"}, files
    assert all(f.stat().st_size > 0 for f in files if f.suffix == ".log")
    assert scan_for(files, USED_NUMBERS) == []
