"""The Wallets API (issue 13, items 1 and 4), for real: the issuer's server on 127.0.0.1 over TLS.

A phone is a real P-256 key (:func:`healthcode.algorithms.generate_signing_key`);
it enrols with a proof of possession over a single-use challenge, and the
credential it gets verifies inside a dynamic presentation and is refused
alone. Around it: every bad input (INVALID_ARGUMENT with field violations,
nothing stored), challenge reuse and expiry, one live code per resident per
channel (a second enrolment, a second static code), ListLiveCodes, RenewCode
keeping the device binding, and a lost phone revoked and re-enrolled. The
store's part (challenges, channels) runs on both stores in
``test_store_contract.py``; the domain's flow also runs here on both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging

import grpc
import pytest

import healthcode as hc
from healthcode.codec import ClaimKey, decode_unverified
from healthcode.errors import PresentationRequired
from healthcode.presentation import (
    encode_presentation,
    step_at,
    verify_presentation,
)
from issuer import auth
from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc, wallets_pb2, wallets_pb2_grpc
from issuer.server import IssuerServer, ServerOptions, TlsMaterial
from issuer.errors import InvalidRequest
from issuer.model import Channel
from issuer.service import ServiceSettings
from issuer.wallets import CHALLENGE_TTL, WalletIssuer

from .issuer_server_support import (APP, APP_KEY, PROVINCE, Client, Domain, LoopThread, Phone, bad_request, doc,
                                    resident_id)

pb = wallets_pb2
WALLET_KEY = "wallets-web-key-" + "w" * 40  # a wallet-role key, as a public web page holds it
WEB = (("authorization", f"Bearer {WALLET_KEY}"),)
hpb = health_codes_pb2
ES256 = pb.DEVICE_KEY_ALGORITHM_ES256


# --------------------------------------------------------------------------- the phone and the harness


class Clock:
    """The server's clock: real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.offset


class Served:
    def __init__(self, loop: LoopThread, server: IssuerServer, domain: Domain, client: Client, clock: Clock) -> None:
        self.loop, self.server, self.domain, self.client, self.clock = loop, server, domain, client, clock
        self.wallets = wallets_pb2_grpc.WalletsStub(client.channel)
        self.codes: health_codes_pb2_grpc.HealthCodesStub = client.codes

    def resident(self) -> tuple[str, object]:
        document = doc(resident_id())
        return self.client.register(document), document

    def challenge(self, mid: str) -> bytes:
        return self.wallets.CreateChallenge(pb.CreateChallengeRequest(main_index_id=mid), metadata=APP,
                                            timeout=10).challenge

    def enrol(self, mid: str, phone: Phone, *, challenge: bytes | None = None, key: str = "", proof=None):
        challenge = self.challenge(mid) if challenge is None else challenge
        request = pb.IssueCredentialRequest(main_index_id=mid, challenge=challenge, device_key=phone.device_key(),
                                            proof=phone.proof(challenge) if proof is None else proof,
                                            idempotency_key=key)
        return self.wallets.IssueCredential(request, metadata=APP, timeout=10).credential

    def live(self, mid: str, metadata=APP) -> list[tuple[int, int]]:
        reply = self.wallets.ListLiveCodes(pb.ListLiveCodesRequest(main_index_id=mid), metadata=metadata, timeout=10)
        return [(live.code.ref.serial, live.channel) for live in reply.codes]

    def status(self, code) -> object:
        return self.codes.GetCodeStatus(hpb.GetCodeStatusRequest(ref=code.ref), metadata=APP, timeout=10).code


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from issuer.tls import DevPki

    base = tmp_path_factory.mktemp("wallets")
    loop = LoopThread()
    pki = DevPki.create(now=dt.datetime.now(dt.timezone.utc))
    cert = pki.server()
    domain = Domain(base / "issuer.db")
    clock = Clock()
    options = ServerOptions(
        service=ServiceSettings(province=PROVINCE), listen="127.0.0.1:0",
        tls=TlsMaterial(cert.cert_pem, cert.key_pem, None),
        api_keys=(auth.ApiKey("app", bytes.fromhex(auth.hash_api_key(APP_KEY))),
                  auth.ApiKey("web", bytes.fromhex(auth.hash_api_key(WALLET_KEY)), role=auth.Role.WALLET)),
        rate_limit=auth.RateLimit(10_000.0, 10_000.0), grace=1.0)

    async def start():
        return await IssuerServer.start(options, index=domain.index, codes=domain.codes, clock=clock,
                                        on_close=domain.close, wallets=WalletIssuer(codes=domain.codes))

    server = loop.run(start())
    client = Client(server.port, pki)
    yield Served(loop, server, domain, client, clock)
    client.close()
    loop.run(server.shutdown(0))
    loop.close()


# --------------------------------------------------------------------------- enrolment


def test_a_phone_enrols_and_its_credential_verifies_only_inside_a_presentation(served, caplog):
    caplog.set_level(logging.INFO)
    mid, _ = served.resident()
    phone = Phone()
    reply = served.wallets.CreateChallenge(pb.CreateChallengeRequest(main_index_id=mid), metadata=APP, timeout=10)
    assert len(reply.challenge) == 32
    expires = reply.expires_at.ToDatetime(tzinfo=dt.timezone.utc)
    assert dt.timedelta(minutes=4) < expires - dt.datetime.now(dt.timezone.utc) <= CHALLENGE_TTL
    credential = served.enrol(mid, phone, challenge=reply.challenge)
    assert credential.main_index_id == mid and credential.state == common_pb2.CODE_STATE_VALID
    now = dt.datetime.now(dt.timezone.utc)
    keyring = served.domain.keyring(now)
    presentation = encode_presentation(credential.code_text, step_at(now), phone)
    verified = verify_presentation(presentation, keyring, now=now)
    assert verified.credential.serial == credential.ref.serial
    assert verified.credential.holder_key is not None
    with pytest.raises(PresentationRequired):  # a screenshot of the credential alone is worth nothing
        hc.verify(credential.code_text, keyring, now=now)
    assert served.live(mid) == [(credential.ref.serial, pb.CHANNEL_PHONE)]
    assert mid not in caplog.text and reply.challenge.hex() not in caplog.text  # JSON logs carry no identifiers


def test_the_resident_may_be_named_by_a_document(served):
    mid, document = served.resident()
    phone = Phone()
    challenge = served.wallets.CreateChallenge(pb.CreateChallengeRequest(document=document), metadata=APP,
                                               timeout=10).challenge
    request = pb.IssueCredentialRequest(document=document, challenge=challenge, device_key=phone.device_key(),
                                        proof=phone.proof(challenge))
    credential = served.wallets.IssueCredential(request, metadata=APP, timeout=10).credential
    assert credential.main_index_id == mid
    listed = served.wallets.ListLiveCodes(pb.ListLiveCodesRequest(document=document), metadata=APP, timeout=10)
    assert [c.code.ref.serial for c in listed.codes] == [credential.ref.serial]


def test_a_compressed_device_key_is_accepted_and_bound_to_the_same_key(served):
    mid, _ = served.resident()
    phone = Phone()
    x, y = phone.point[1:33], phone.point[33:]
    compressed = bytes((2 + (y[-1] & 1),)) + x
    challenge = served.challenge(mid)
    request = pb.IssueCredentialRequest(
        main_index_id=mid, challenge=challenge, proof=phone.proof(challenge),
        device_key=pb.DeviceKey(algorithm=ES256, public_key=compressed))
    credential = served.wallets.IssueCredential(request, metadata=APP, timeout=10).credential
    now = dt.datetime.now(dt.timezone.utc)
    verify_presentation(encode_presentation(credential.code_text, step_at(now), phone), served.domain.keyring(now),
                        now=now)


# --------------------------------------------------------------------------- bad input


def _not_on_curve() -> bytes:
    return b"\x04" + bytes(31) + b"\x01" + bytes(31) + b"\x01"


BAD_REQUESTS = [
    # (name, change to a good request, expected (field, reason) violations)
    ("no_resident", lambda r: r.ClearField("main_index_id"), [("resident", "REQUIRED")]),
    ("bad_main_index_id", lambda r: setattr(r, "main_index_id", "not-an-id"), [("main_index_id", "FORMAT")]),
    ("no_challenge", lambda r: r.ClearField("challenge"), [("challenge", "REQUIRED")]),
    ("short_challenge", lambda r: setattr(r, "challenge", b"c" * 31), [("challenge", "LENGTH")]),
    ("no_device_key", lambda r: r.ClearField("device_key"), [("device_key", "REQUIRED")]),
    ("no_algorithm", lambda r: r.device_key.ClearField("algorithm"), [("device_key.algorithm", "REQUIRED")]),
    ("sm2_algorithm", lambda r: setattr(r.device_key, "algorithm", pb.DEVICE_KEY_ALGORITHM_SM2_SM3),
     [("device_key.algorithm", "UNSUPPORTED")]),
    ("unknown_algorithm", lambda r: setattr(r.device_key, "algorithm", 7), [("device_key.algorithm", "ALGORITHM")]),
    ("no_public_key", lambda r: r.device_key.ClearField("public_key"), [("device_key.public_key", "REQUIRED")]),
    ("key_64_bytes", lambda r: setattr(r.device_key, "public_key", r.device_key.public_key[1:]),
     [("device_key.public_key", "FORMAT")]),
    ("key_bad_prefix", lambda r: setattr(r.device_key, "public_key", b"\x05" + r.device_key.public_key[1:]),
     [("device_key.public_key", "FORMAT")]),
    ("key_not_on_curve", lambda r: setattr(r.device_key, "public_key", _not_on_curve()),
     [("device_key.public_key", "CURVE")]),
    ("compressed_x_off_curve", lambda r: setattr(r.device_key, "public_key", b"\x02" + b"\xff" * 32),
     [("device_key.public_key", "CURVE")]),
    ("no_proof", lambda r: r.ClearField("proof"), [("proof", "REQUIRED")]),
    ("der_proof", lambda r: setattr(r, "proof", b"0" * 71), [("proof", "LENGTH")]),
    ("bad_idempotency_key", lambda r: setattr(r, "idempotency_key", "short"), [("idempotency_key", "FORMAT")]),
    ("everything_at_once", lambda r: (r.ClearField("challenge"), r.ClearField("proof"),
                                      setattr(r.device_key, "public_key", b"\x04")),
     [("challenge", "REQUIRED"), ("device_key.public_key", "FORMAT"), ("proof", "REQUIRED")]),
]


@pytest.mark.parametrize("change, expected", [(c, e) for _, c, e in BAD_REQUESTS], ids=[n for n, _, _ in BAD_REQUESTS])
def test_bad_input_is_invalid_argument_with_field_violations_and_stores_nothing(served, change, expected):
    mid, _ = served.resident()
    phone = Phone()
    challenge = served.challenge(mid)
    request = pb.IssueCredentialRequest(main_index_id=mid, challenge=challenge, device_key=phone.device_key(),
                                        proof=phone.proof(challenge))
    change(request)
    with pytest.raises(grpc.RpcError) as err:
        served.wallets.IssueCredential(request, metadata=APP, timeout=10)
    assert bad_request(err.value) == expected
    assert mid not in err.value.details()
    assert served.live(mid) == []
    served.enrol(mid, phone, challenge=challenge)  # the challenge was not spent by a malformed request


def test_a_bad_proof_is_refused_and_spends_the_challenge(served):
    mid, _ = served.resident()
    phone, thief = Phone(), Phone()
    challenge = served.challenge(mid)
    cases = [
        ("signed_by_another_key", thief.proof(challenge)),
    ]
    for name, proof in cases:
        with pytest.raises(grpc.RpcError) as err:
            served.enrol(mid, phone, challenge=challenge, proof=proof)
        assert bad_request(err.value) == [("proof", "PROOF")], name
    with pytest.raises(grpc.RpcError) as err:  # one guess per challenge
        served.enrol(mid, phone, challenge=challenge)
    assert bad_request(err.value) == [("challenge", "CHALLENGE")]
    assert served.live(mid) == []


@pytest.mark.parametrize("make_proof", [
    pytest.param(lambda phone, other_challenge, challenge: phone.proof(other_challenge), id="over_another_challenge"),
    pytest.param(lambda phone, other_challenge, challenge: phone.sign(b"EHC-DYN-v1\x00" + challenge),
                 id="other_context"),
    pytest.param(lambda phone, other_challenge, challenge: bytes(64), id="zeros"),
])
def test_proofs_that_do_not_sign_this_challenge_for_this_key_are_refused(served, make_proof):
    mid, _ = served.resident()
    phone = Phone()
    challenge = served.challenge(mid)
    with pytest.raises(grpc.RpcError) as err:
        served.enrol(mid, phone, challenge=challenge, proof=make_proof(phone, served.challenge(mid), challenge))
    assert bad_request(err.value) == [("proof", "PROOF")]


def test_unusable_challenges_are_refused_on_field_challenge(served):
    mid, _ = served.resident()
    other, _ = served.resident()
    phone = Phone()
    used = served.challenge(mid)
    served.enrol(mid, phone, challenge=used)
    expiring = served.challenge(mid)
    cases = {
        "unknown": hashlib.sha256(b"never handed out").digest(),
        "used": used,
        "other_residents": served.challenge(other),
    }
    for name, challenge in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            served.enrol(mid, Phone(), challenge=challenge)
        assert bad_request(err.value) == [("challenge", "CHALLENGE")], name
    served.clock.offset = CHALLENGE_TTL + dt.timedelta(seconds=1)
    try:
        with pytest.raises(grpc.RpcError) as err:
            served.enrol(mid, Phone(), challenge=expiring)
        assert bad_request(err.value) == [("challenge", "CHALLENGE")]
        assert "expired" in err.value.details()
    finally:
        served.clock.offset = dt.timedelta(0)
    assert [channel for _, channel in served.live(mid)] == [pb.CHANNEL_PHONE]  # the first enrolment only


def test_an_unknown_resident_gets_not_found(served):
    nobody = hc.main_index_id_from_bytes(bytes(16))
    for call, request in [
        (served.wallets.CreateChallenge, pb.CreateChallengeRequest(main_index_id=nobody)),
        (served.wallets.ListLiveCodes, pb.ListLiveCodesRequest(main_index_id=nobody)),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            call(request, metadata=APP, timeout=10)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND


def test_an_idempotent_retry_returns_the_same_credential_though_its_challenge_is_used(served):
    mid, _ = served.resident()
    phone = Phone()
    challenge = served.challenge(mid)
    first = served.enrol(mid, phone, challenge=challenge, key="enrol-retry-0001")
    again = served.enrol(mid, phone, challenge=challenge, key="enrol-retry-0001")
    assert again.code_text == first.code_text
    with pytest.raises(grpc.RpcError) as err:  # the same key for another device: a conflict
        served.enrol(mid, Phone(), key="enrol-retry-0001")
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert served.live(mid) == [(first.ref.serial, pb.CHANNEL_PHONE)]


# --------------------------------------------------------------------------- one live code per channel


def test_a_second_enrolment_supersedes_the_first_and_leaves_the_static_code(served):
    mid, _ = served.resident()
    static = served.client.issue(mid)
    first = served.enrol(mid, Phone())
    second = served.enrol(mid, Phone())
    assert served.live(mid) == [(second.ref.serial, pb.CHANNEL_PHONE), (static.ref.serial, pb.CHANNEL_STATIC)]
    assert_superseded(served.status(first))


def test_a_wallet_key_lists_phone_credentials_only_never_a_printed_code(served):
    """A wallet-role key may sit in a public page, and a main index ID is in every code shown on a screen:
    with them, a printed code's text (it works at a terminal on its own) must not be fetched. A phone
    credential is useless without the phone's key, so the page may list those."""
    mid, document = served.resident()
    static = served.client.issue(mid)
    assert served.live(mid, WEB) == []
    listed = served.wallets.ListLiveCodes(pb.ListLiveCodesRequest(document=document), metadata=WEB, timeout=10)
    assert list(listed.codes) == []
    phone = served.enrol(mid, Phone())
    reply = served.wallets.ListLiveCodes(pb.ListLiveCodesRequest(main_index_id=mid), metadata=WEB, timeout=10)
    assert [(c.code.ref.serial, c.channel) for c in reply.codes] == [(phone.ref.serial, pb.CHANNEL_PHONE)]
    assert static.code_text not in str(reply)
    # an issuance client (the desk, the app's back end) still sees both
    assert served.live(mid) == [(phone.ref.serial, pb.CHANNEL_PHONE), (static.ref.serial, pb.CHANNEL_STATIC)]


def assert_superseded(code) -> None:
    assert code.state == common_pb2.CODE_STATE_REVOKED
    assert code.revocation_reason == common_pb2.REVOCATION_REASON_SUPERSEDED


def test_a_static_code_supersedes_the_previous_static_code_and_a_retry_supersedes_nothing(served):
    mid, _ = served.resident()
    phone = served.enrol(mid, Phone())
    first = served.client.issue(mid, key="static-0001")
    second = served.client.issue(mid, key="static-0002")
    assert_superseded(served.status(first))
    retry = served.client.issue(mid, key="static-0002")
    assert retry.code_text == second.code_text
    assert served.live(mid) == [(second.ref.serial, pb.CHANNEL_STATIC), (phone.ref.serial, pb.CHANNEL_PHONE)]
    retry_of_first = served.client.issue(mid, key="static-0001")  # a late retry: the original, as it stands
    assert retry_of_first.code_text == first.code_text
    assert served.live(mid)[0] == (second.ref.serial, pb.CHANNEL_STATIC)


def _cnf(text: str):
    return decode_unverified(text).claims[ClaimKey.CNF]


def test_renewing_a_credential_keeps_its_device_binding_and_channel(served):
    mid, _ = served.resident()
    phone = Phone()
    credential = served.enrol(mid, phone)
    renewed = served.codes.RenewCode(hpb.RenewCodeRequest(ref=credential.ref, idempotency_key="renew-cred-0001"),
                                     metadata=APP, timeout=10).code
    assert _cnf(renewed.code_text) == _cnf(credential.code_text)
    assert served.live(mid) == [(renewed.ref.serial, pb.CHANNEL_PHONE)]
    now = dt.datetime.now(dt.timezone.utc)
    verify_presentation(encode_presentation(renewed.code_text, step_at(now), phone), served.domain.keyring(now),
                        now=now)
    static = served.client.issue(mid)
    renewed_static = served.codes.RenewCode(hpb.RenewCodeRequest(ref=static.ref), metadata=APP, timeout=10).code
    assert ClaimKey.CNF not in decode_unverified(renewed_static.code_text).claims
    assert served.live(mid) == [(renewed_static.ref.serial, pb.CHANNEL_STATIC), (renewed.ref.serial, pb.CHANNEL_PHONE)]


def test_a_lost_phone_is_revoked_and_a_new_one_enrolled(served):
    mid, _ = served.resident()
    lost, new = Phone(), Phone()
    static = served.client.issue(mid)
    old = served.enrol(mid, lost)
    lost_device = common_pb2.REVOCATION_REASON_LOST_DEVICE
    revoked = served.codes.RevokeCode(hpb.RevokeCodeRequest(ref=old.ref, reason=lost_device), metadata=APP, timeout=10)
    assert revoked.revoked_count == 1
    assert served.live(mid) == [(static.ref.serial, pb.CHANNEL_STATIC)]
    credential = served.enrol(mid, new)
    assert served.live(mid) == [(credential.ref.serial, pb.CHANNEL_PHONE), (static.ref.serial, pb.CHANNEL_STATIC)]
    assert served.status(old).revocation_reason == common_pb2.REVOCATION_REASON_LOST_DEVICE  # not overwritten
    assert _cnf(credential.code_text) != _cnf(old.code_text)
    now = dt.datetime.now(dt.timezone.utc)
    with pytest.raises(hc.VerificationError):  # the lost phone cannot present the new credential
        verify_presentation(encode_presentation(credential.code_text, step_at(now), lost),
                            served.domain.keyring(now), now=now)


def test_wallets_is_served_with_health_and_reflection(served):
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    name = "healthcode.issuer.v1.Wallets"
    assert served.client.health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == \
        health_pb2.HealthCheckResponse.SERVING
    replies = list(served.client.reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=APP, timeout=10))
    assert name in {s.name for s in replies[0].list_services_response.service}
    from prometheus_client import generate_latest

    metrics = generate_latest(served.server.metrics.registry).decode()
    assert "healthcode.issuer.v1.Wallets/IssueCredential" in metrics  # timed and counted like the others


# --------------------------------------------------------------------------- the domain on both stores


def test_the_enrolment_flow_on_both_stores(backend):
    """Challenge, enrolment, reuse, supersession and the listing, on SQLite and PostgreSQL."""
    from issuer.index import ResidentIndex
    from issuer.issuance import CodeIssuer
    from issuer.privacy import IdentifierVault

    from issuer.documents import make_resident_id, parse_document

    now = dt.datetime(2026, 12, 7, 4, 0, tzinfo=dt.timezone.utc)
    store = backend.open()
    try:
        signer = hc.SoftwareSigner(hc.generate_signing_key())
        codes = CodeIssuer(store=store, province=PROVINCE, signer=signer)
        wallets = WalletIssuer(codes=codes)
        index = ResidentIndex(store=store, vault=IdentifierVault.from_secret(b"v" * 32))

        async def flow():
            document = parse_document("resident_id", make_resident_id("330106", dt.date(1980, 1, 2), 7),
                                      today=now.date())
            mid = await index.register_resident(document, now=now)
            static = await codes.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=now)
            phones = [Phone(), Phone()]
            issued = []
            for phone in phones:
                challenge = await wallets.create_challenge(caller="app", main_index_id=mid, now=now)
                issued.append(await wallets.issue_credential(
                    caller="app", main_index_id=mid, challenge=challenge.value, device_key=phone.point,
                    proof=phone.proof(challenge.value), idempotency_key=None, now=now))
                with pytest.raises(InvalidRequest) as err:  # used
                    await wallets.issue_credential(
                        caller="app", main_index_id=mid, challenge=challenge.value, device_key=phone.point,
                        proof=phone.proof(challenge.value), idempotency_key=None, now=now)
                assert err.value.violations[0].field == "challenge"
            live = await wallets.list_live_codes(main_index_id=mid, now=now)
            return static, issued, live

        static, issued, live = asyncio.run(flow())
        assert [(c.ref.serial, c.channel) for c in live] == [(issued[1].ref.serial, Channel.PHONE),
                                                             (static.ref.serial, Channel.STATIC)]
        first = store.get_code(issued[0].ref)
        assert first.channel is Channel.PHONE and first.revocation_reason.value == "superseded"
    finally:
        store.close()



# ------------------------------------------------------------- the wallet role: by main index ID, renewal only


def _wallet_challenge(served, resident: dict) -> bytes:
    return served.wallets.CreateChallenge(pb.CreateChallengeRequest(**resident), metadata=WEB, timeout=10).challenge


def _wallet_issue(served, resident: dict, phone: Phone, challenge: bytes):
    request = pb.IssueCredentialRequest(**resident, challenge=challenge, device_key=phone.device_key(),
                                        proof=phone.proof(challenge))
    return served.wallets.IssueCredential(request, metadata=WEB, timeout=10).credential


def _assert_renewal_only(error: grpc.RpcError) -> None:
    from issuer.wire import received_error_info

    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error.details()
    info = received_error_info(error)
    assert info is not None and info.reason == "RENEWAL_ONLY"
    assert "document" in error.details()


def test_a_wallet_key_binds_a_new_phone_only_by_document_and_renews_by_main_index_id_with_the_bound_key(served):
    """Review finding: every QR code carries the main index ID in clear, and a wallet-role key may sit in a
    public page; by main index ID alone such a caller could bind its own phone to anyone, superseding the
    resident's. By main index ID the wallet role renews only: with the device key of the resident's live
    phone credential (the proof then shows it holds that key). A new phone names the resident by document."""
    mid, document = served.resident()
    phone_a, phone_b = Phone(), Phone()
    with pytest.raises(grpc.RpcError) as nothing_to_renew:  # no phone credential yet
        _wallet_challenge(served, {"main_index_id": mid})
    _assert_renewal_only(nothing_to_renew.value)
    enrolled = _wallet_issue(served, {"document": document}, phone_a, _wallet_challenge(served, {"document": document}))
    assert served.live(mid) == [(enrolled.ref.serial, pb.CHANNEL_PHONE)]

    # another phone, by the main index ID alone: refused, nothing stored, nothing superseded
    challenge = _wallet_challenge(served, {"main_index_id": mid})
    with pytest.raises(grpc.RpcError) as refused:
        _wallet_issue(served, {"main_index_id": mid}, phone_b, challenge)
    _assert_renewal_only(refused.value)
    assert served.live(mid) == [(enrolled.ref.serial, pb.CHANNEL_PHONE)]
    assert served.status(enrolled).state == common_pb2.CODE_STATE_VALID

    # phone A renews by main index ID, with the same challenge (the refusal did not spend it)
    renewed = _wallet_issue(served, {"main_index_id": mid}, phone_a, challenge)
    assert _cnf(renewed.code_text) == _cnf(enrolled.code_text)
    assert served.live(mid) == [(renewed.ref.serial, pb.CHANNEL_PHONE)]
    assert_superseded(served.status(enrolled))

    # a revoked credential renews nothing; phone B enrols by document, and then only B renews by ID
    served.codes.RevokeCode(hpb.RevokeCodeRequest(ref=renewed.ref, reason=common_pb2.REVOCATION_REASON_LOST_DEVICE),
                            metadata=APP, timeout=10)
    with pytest.raises(grpc.RpcError) as revoked:
        _wallet_challenge(served, {"main_index_id": mid})
    _assert_renewal_only(revoked.value)
    by_document = _wallet_issue(served, {"document": document}, phone_b,
                                _wallet_challenge(served, {"document": document}))
    with pytest.raises(grpc.RpcError) as lost_phone:
        _wallet_issue(served, {"main_index_id": mid}, phone_a, _wallet_challenge(served, {"main_index_id": mid}))
    _assert_renewal_only(lost_phone.value)
    assert served.live(mid) == [(by_document.ref.serial, pb.CHANNEL_PHONE)]


def test_an_issuance_client_still_enrols_any_phone_by_main_index_id(served):
    """The app's back end and the front desk keep enrolling by main index ID (they know the resident)."""
    mid, _ = served.resident()
    first = served.enrol(mid, Phone())
    second = served.enrol(mid, Phone())
    assert _cnf(second.code_text) != _cnf(first.code_text)
    assert served.live(mid) == [(second.ref.serial, pb.CHANNEL_PHONE)]
