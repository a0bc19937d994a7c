"""Roles × services, for real: the issuer's server on 127.0.0.1 over mTLS, DevPki client certificates.

One server per module serves every service an issuer can serve (ResidentIndex,
HealthCodes and Wallets over a real SQLite domain, KeyAdmin over a real province key
set and trust repository, health, reflection v1alpha and v1) with a client CA,
an issuance API key ("app"), a wallet-role API key ("web"), one certificate listed in
``auth.issuance_clients`` ("desk") and one in ``auth.wallet_clients`` ("kiosk"). Each caller
calls every method of every service; the table :data:`EXPECTED` says which services let it
through (issue 11, item 2: an ``admin:44`` or ``national:ops`` certificate could call
FindResident, merge and revoke in province 33), and for the wallet role (issue 16: a key that
may sit in a public web page) which methods (:data:`WALLET_ADMITTED`). Denied calls are
PERMISSION_DENIED before the servicer runs: nothing is read or changed. The same server's HTTP
listener (Connect JSON) is held to the same table for the services it serves.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

import healthcode as hc
from issuer import auth
from issuer.api import common_pb2, health_codes_pb2, key_admin_pb2, national_link_pb2, resident_index_pb2, wallets_pb2
from issuer.http_server import HttpOptions
from issuer.server import IssuerServer, ServerOptions, TlsMaterial
from issuer.config import ConfigError, IssuerConfig
from issuer.documents import make_resident_id
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.key_admin import KeyAdminService
from issuer.national_link_service import NationalLinkServicer
from issuer.national_setup import keyring_of
from issuer.privacy import IdentifierVault
from issuer.resolution import PatientResolver
from issuer.service import ServiceSettings
from issuer.store.sqlite import SQLiteStore
from issuer.tls import DevPki
from issuer.wallets import WalletIssuer

from .connect_client import ConnectClient
from .issuer_server_support import LoopThread
from .test_key_admin import HOUR, Nation, utc_now

API_KEY = "roles-app-key-" + "d" * 40
APP = (("authorization", f"Bearer {API_KEY}"),)
WRONG_KEY = (("authorization", "Bearer " + "x" * 40),)
WALLET_KEY = "roles-wallet-key-" + "w" * 40
WEB = (("authorization", f"Bearer {WALLET_KEY}"),)
BURST_KEY = "roles-wallet-burst-" + "b" * 40  # a wallet key without its own rate: the role's default bucket

RESIDENT_INDEX = "healthcode.issuer.v1.ResidentIndex"
HEALTH_CODES = "healthcode.issuer.v1.HealthCodes"
WALLETS = "healthcode.issuer.v1.Wallets"
KEY_ADMIN = "healthcode.admin.v1.KeyAdmin"
NATIONAL_LINK = "healthcode.issuer.v1.NationalLink"
HEALTH = "grpc.health.v1.Health"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
DESCRIPTORS = {
    RESIDENT_INDEX: resident_index_pb2.DESCRIPTOR.services_by_name["ResidentIndex"],
    HEALTH_CODES: health_codes_pb2.DESCRIPTOR.services_by_name["HealthCodes"],
    WALLETS: wallets_pb2.DESCRIPTOR.services_by_name["Wallets"],
    KEY_ADMIN: key_admin_pb2.DESCRIPTOR.services_by_name["KeyAdmin"],
    NATIONAL_LINK: national_link_pb2.DESCRIPTOR.services_by_name["NationalLink"],
}

#: caller -> (client certificate CN, metadata). Every connection needs a certificate (client CA set).
CALLERS = {
    "api-key": ("no-role-client", APP),  # the key decides: an issuance client
    "issuance-certificate": ("desk", ()),  # listed in auth.issuance_clients
    "wallet-key": ("no-role-client", WEB),  # an API key with role = "wallet"
    "wallet-certificate": ("kiosk", ()),  # listed in auth.wallet_clients
    "wallet-key-on-issuance-certificate": ("desk", WEB),  # the key decides: the wallet role, not the certificate's
    "admin-33": ("admin:33", ()),
    "admin-44": ("admin:44", ()),
    "national": ("national:ops", ()),
    "national-index": ("national-index:ops", ()),
    "province-44": ("province:44", ()),
    "admin-99": ("admin:99", ()),  # not a province: no role
    "unlisted-certificate": ("ops", ()),  # from the client CA, but not named: no role
    "wrong-api-key": ("desk", WRONG_KEY),  # a key, if sent, decides: unauthenticated
}
SERVICES = (RESIDENT_INDEX, HEALTH_CODES, WALLETS, KEY_ADMIN, NATIONAL_LINK, HEALTH, REFLECTION_V1ALPHA, REFLECTION_V1)
A, D, U, W = "admitted", "denied", "unauthenticated", "wallet methods only"
#: What the wallet role reaches (W): a resident's enrolment and live codes (not the access log: review finding);
#: every other method of the service is denied. Written out here, not read from issuer.auth, so that a change
#: there fails this test.
WALLET_ADMITTED = {
    RESIDENT_INDEX: {"FindResident", "RegisterResident"},
    WALLETS: {"CreateChallenge", "IssueCredential", "ListLiveCodes"},
}
#: caller -> one outcome per service of SERVICES (health: always admitted, no credentials needed).
#: NationalLink (issue 14): the national index service's calls into the province, national-index:<name>
#: certificates only (a national key administrator's national:<name> certificate cannot resolve or release).
EXPECTED = {
    "api-key":              (A, A, A, D, D, A, A, A),
    "issuance-certificate": (A, A, A, D, D, A, A, A),
    "wallet-key":           (W, D, W, D, D, A, A, A),
    "wallet-certificate":   (W, D, W, D, D, A, A, A),
    "wallet-key-on-issuance-certificate": (W, D, W, D, D, A, A, A),
    "admin-33":             (D, D, D, A, D, A, A, A),
    "admin-44":             (D, D, D, A, D, A, A, A),  # admitted to KeyAdmin; KeyAdmin refuses province 33 itself
    "national":             (D, D, D, A, D, A, A, A),  # key administration only: never NationalLink
    "national-index":       (D, D, D, D, A, A, A, A),  # the national index service: NationalLink only
    "province-44":          (D, D, D, D, D, A, A, A),  # a province (at a national service): not NationalLink
    "admin-99":             (D, D, D, D, D, A, D, D),
    "unlisted-certificate": (D, D, D, D, D, A, D, D),
    "wrong-api-key":        (U, U, U, U, U, A, U, U),
}
MATRIX = [(caller, service, EXPECTED[caller][i]) for caller in CALLERS for i, service in enumerate(SERVICES)]
#: The services the HTTP listener serves (Connect, gRPC-Web); KeyAdmin and NationalLink are gRPC only.
HTTP_SERVICES = (RESIDENT_INDEX, HEALTH_CODES, WALLETS)
HTTP_MATRIX = [(caller, service, EXPECTED[caller][SERVICES.index(service)]) for caller in CALLERS
               for service in HTTP_SERVICES]
#: The name a refusal gives the caller: an API key's configured name, else the certificate's CN.
KEY_NAMES = {APP: "app", WEB: "web", WRONG_KEY: None}


def resident_number(n: int) -> str:
    return make_resident_id("330106", dt.date(1960, 1, 1) + dt.timedelta(days=n), n % 1000)


class Served:
    """The module's server, its domain, and one channel per client certificate."""

    def __init__(self, loop: LoopThread, server: IssuerServer, pki: DevPki, store: SQLiteStore,
                 nation: Nation) -> None:
        self.loop, self.server, self.pki, self.store, self.nation = loop, server, pki, store, nation
        self._channels: dict[str, grpc.Channel] = {}
        self._http: dict[str, ConnectClient] = {}
        self.pki_files: dict = {}

    def http(self, cn: str) -> ConnectClient:
        """A Connect JSON client of the HTTP listener, presenting ``cn``'s client certificate."""
        if cn not in self._http:
            files = self.pki_files
            self._http[cn] = ConnectClient(self.server.http_port, self.pki.ca_cert_pem, "json",
                                           client_cert=(str(files[f"{cn}.pem"]), str(files[f"{cn}.key"])))
        return self._http[cn]

    def channel(self, cn: str) -> grpc.Channel:
        if cn not in self._channels:
            cert = self.pki.client(cn)
            creds = grpc.ssl_channel_credentials(self.pki.ca_cert_pem, cert.key_pem, cert.cert_pem)
            self._channels[cn] = grpc.secure_channel(f"127.0.0.1:{self.server.port}", creds)
        return self._channels[cn]

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        for client in self._http.values():
            client.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("roles")
    loop = LoopThread()
    pki = DevPki.create(now=dt.datetime.now(dt.timezone.utc))
    nation = Nation(base / "nation", utc_now())
    store = SQLiteStore(base / "issuer.db")
    signer = hc.SoftwareSigner(hc.generate_signing_key(hc.Algorithm.ES256))
    index = ResidentIndex(store=store, vault=IdentifierVault.from_secret(os.urandom(32)))
    national_link = NationalLinkServicer(store=store, province="33", resolver=PatientResolver(
        index=index, store=store, province="33", keyring_at=keyring_of(signer, "33")))
    codes = CodeIssuer(store=store, province="33", signer=signer, validity=dt.timedelta(days=7))
    server_cert = pki.server()
    options = ServerOptions(
        service=ServiceSettings(province="33"), listen="127.0.0.1:0",
        tls=TlsMaterial(server_cert.cert_pem, server_cert.key_pem, pki.ca_cert_pem),
        api_keys=(auth.ApiKey("app", bytes.fromhex(auth.hash_api_key(API_KEY))),
                  auth.ApiKey("web", bytes.fromhex(auth.hash_api_key(WALLET_KEY)), auth.RateLimit(10_000.0, 10_000.0),
                              role=auth.Role.WALLET),
                  auth.ApiKey("web-burst", bytes.fromhex(auth.hash_api_key(BURST_KEY)), role=auth.Role.WALLET)),
        issuance_clients=frozenset({"desk"}), wallet_clients=frozenset({"kiosk"}),
        rate_limit=auth.RateLimit(10_000.0, 10_000.0), grace=1.0,  # the wallet role keeps its default bucket
        http=HttpOptions(listen="127.0.0.1:0"))
    key_admin = KeyAdminService(nation.admin, clock=lambda: nation.now + HOUR)

    async def start():
        return await IssuerServer.start(options, index=index, codes=codes, key_admin=key_admin, on_close=store.close,
                                        wallets=WalletIssuer(codes=codes), national_link=national_link)

    server = loop.run(start())
    s = Served(loop, server, pki, store, nation)
    s.pki_files = pki.write(base / "pki", clients=sorted({cn for cn, _ in CALLERS.values()} | {"admin:33"}))
    yield s
    s.close()
    loop.run(server.shutdown(0))
    nation.keystore.close()
    loop.close()


def _call_method(channel: grpc.Channel, service: str, method, metadata):
    """Call ``method`` (a MethodDescriptor) with an empty request; the status code it ends with."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    stub = channel.unary_unary(f"/{service}/{method.name}", request_serializer=request_class.SerializeToString,
                               response_deserializer=response_class.FromString)
    try:
        stub(request_class(), metadata=metadata, timeout=10)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def _outcomes(served: Served, caller: str, service: str) -> list[tuple[str, grpc.StatusCode, str]]:
    """(method, status code, details) of every method of ``service`` called by ``caller``."""
    cn, metadata = CALLERS[caller]
    channel = served.channel(cn)
    if service == HEALTH:  # no credentials: the health service needs none
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        return [("Check", grpc.StatusCode.OK if reply.status == health_pb2.HealthCheckResponse.SERVING
                 else grpc.StatusCode.UNAVAILABLE, "")]
    if service in (REFLECTION_V1ALPHA, REFLECTION_V1):
        stream = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        try:
            replies = list(stream(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                  metadata=metadata, timeout=10))
        except grpc.RpcError as e:
            return [("ServerReflectionInfo", e.code(), e.details())]
        listed = {s.name for s in replies[0].list_services_response.service}
        assert {RESIDENT_INDEX, HEALTH_CODES, WALLETS, KEY_ADMIN, NATIONAL_LINK, HEALTH, REFLECTION_V1ALPHA,
                REFLECTION_V1} <= listed
        return [("ServerReflectionInfo", grpc.StatusCode.OK, "")]
    return [(m.name, *_call_method(channel, service, m, metadata)) for m in DESCRIPTORS[service].methods]


@pytest.mark.parametrize("caller, service, expected", MATRIX,
                         ids=[f"{c}-{s.split('.')[-1] if 'reflection' not in s else s.split('.')[-2]}-{e}"
                              for c, s, e in MATRIX])
def test_role_matrix(served, caplog, caller, service, expected):
    outcomes = _outcomes(served, caller, service)
    assert outcomes
    for method, code, details in outcomes:
        _check_outcome(caller, service, method, expected, code, details)
    if expected == D or (expected == W and any(m not in WALLET_ADMITTED.get(service, ()) for m, _, _ in outcomes)):
        assert "access denied: caller" in caplog.text


def _check_outcome(caller: str, service: str, method: str, expected: str, code: grpc.StatusCode,
                   details: str) -> None:
    where = f"{caller} -> {service}/{method}: {code.name} {details}"
    if expected == W:
        expected = A if method in WALLET_ADMITTED.get(service, ()) else D
    if expected == U:
        assert code is grpc.StatusCode.UNAUTHENTICATED, where
    elif expected == D:
        assert code is grpc.StatusCode.PERMISSION_DENIED, where
        # refused by the admission layer, not the servicer: by service, or by method where the service's differ
        assert f"{service} is open to" in details or f"{service}/{method} is open to" in details, where
        cn, metadata = CALLERS[caller]
        assert "'" + (KEY_NAMES.get(metadata) or cn) + "'" in details, where
    else:  # admitted: the servicer ran (an empty request is invalid, the health check serves)
        assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                            grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), where


@pytest.mark.parametrize("caller, service, expected", HTTP_MATRIX,
                         ids=[f"{c}-{s.split('.')[-1]}-{e}" for c, s, e in HTTP_MATRIX])
def test_role_matrix_over_http(served, caplog, caller, service, expected):
    """The same admission over Connect JSON (the HTTP listener, client certificates optional and verified)."""
    cn, metadata = CALLERS[caller]
    client = served.http(cn)
    for method in DESCRIPTORS[service].methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        outcome = client.call(f"/{service}/{method.name}", request_class(),
                              message_factory.GetMessageClass(method.output_type), metadata=metadata)
        _check_outcome(caller, service, method.name, expected, outcome.code, outcome.message)


def test_grpc_only_services_are_not_served_over_http(served):
    for service in (KEY_ADMIN, NATIONAL_LINK):
        method = DESCRIPTORS[service].methods[0]
        status, _, _ = served.http("admin:33" if service == KEY_ADMIN else "national-index:ops").request(
            "POST", f"/{service}/{method.name}", b"{}", {"Content-Type": "application/json"})
        assert status == 404, service


def test_the_wallet_methods_are_what_the_wallet_role_reaches():
    assert auth.WALLET_METHODS == {f"{service}/{m}" for service, methods in WALLET_ADMITTED.items() for m in methods}
    assert auth.Role.WALLET not in auth.SERVICE_ROLES[HEALTH_CODES]


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_the_wallet_role_has_its_own_stricter_bucket(served, transport):
    """A wallet key without its own rate gets the role's default bucket (20/s, burst 40), not the server's
    (10,000/s here): 100 calls back to back are cut; an issuance key making the same calls is not."""
    document = common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=resident_number(9))
    request = resident_index_pb2.FindResidentRequest(document=document)
    path = f"/{RESIDENT_INDEX}/FindResident"

    def codes(metadata) -> list[grpc.StatusCode]:
        if transport == "http":
            client = served.http("no-role-client")
            return [client.call(path, request, resident_index_pb2.FindResidentResponse, metadata=metadata).code
                    for _ in range(100)]
        stub = served.channel("no-role-client").unary_unary(
            path, request_serializer=resident_index_pb2.FindResidentRequest.SerializeToString,
            response_deserializer=resident_index_pb2.FindResidentResponse.FromString)
        return [_grpc_code(stub, request, metadata) for _ in range(100)]

    time.sleep(2.5)  # the bucket full again (the other transport's run may have emptied it)
    wallet = codes(((("authorization", f"Bearer {BURST_KEY}"),)))
    assert wallet[:40] == [grpc.StatusCode.NOT_FOUND] * 40  # the burst: the servicer ran (an unknown resident)
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in wallet[40:]
    assert set(codes(APP)) == {grpc.StatusCode.NOT_FOUND}


def _grpc_code(stub, request, metadata) -> grpc.StatusCode:
    try:
        stub(request, metadata=metadata, timeout=10)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_denied_messages_name_the_caller_its_role_and_who_the_service_is_for(served):
    cases = [
        ("admin:44", RESIDENT_INDEX, "certificate 'admin:44' has the admin role; healthcode.issuer.v1.ResidentIndex/"
                                     "RegisterResident is open to issuance clients and wallet clients only"),
        ("national:ops", HEALTH_CODES, "certificate 'national:ops' has the national role; "
                                       "healthcode.issuer.v1.HealthCodes is open to issuance clients only"),
        ("admin:33", WALLETS, "certificate 'admin:33' has the admin role; "
                              "healthcode.issuer.v1.Wallets/CreateChallenge is open to issuance clients and wallet "
                              "clients only"),
        ("kiosk", HEALTH_CODES, "certificate 'kiosk' has the wallet role; "
                                "healthcode.issuer.v1.HealthCodes is open to issuance clients only"),
        ("desk", KEY_ADMIN, "certificate 'desk' has the issuance role; healthcode.admin.v1.KeyAdmin is open to "
                            "admin:<province> certificates and national:<name> certificates only"),
        ("ops", RESIDENT_INDEX, "certificate 'ops' has no role (a CN must be admin:<province>, national:<name>, "
                                "or listed in auth.issuance_clients or auth.wallet_clients)"),
    ]
    for cn, service, message in cases:
        method = DESCRIPTORS[service].methods[0]
        code, details = _call_method(served.channel(cn), service, method, ())
        assert (code, message in details) == (grpc.StatusCode.PERMISSION_DENIED, True), (cn, service, details)


def test_the_reviewers_attacks_are_refused_and_change_nothing(served):
    """Issue 11: admin and national certificates looked residents up by ID number, merged them and
    revoked all of a resident's codes in province 33."""
    app = served.channel("no-role-client")  # with the API key: the issuance client
    register = app.unary_unary(f"/{RESIDENT_INDEX}/RegisterResident",
                               request_serializer=resident_index_pb2.RegisterResidentRequest.SerializeToString,
                               response_deserializer=resident_index_pb2.RegisterResidentResponse.FromString)
    document = common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=resident_number(1))
    other_document = common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=resident_number(2))
    mid = register(resident_index_pb2.RegisterResidentRequest(primary=document), metadata=APP, timeout=10).main_index_id
    other = register(resident_index_pb2.RegisterResidentRequest(primary=other_document), metadata=APP,
                     timeout=10).main_index_id
    issue = app.unary_unary(f"/{HEALTH_CODES}/IssueCode",
                            request_serializer=health_codes_pb2.IssueCodeRequest.SerializeToString,
                            response_deserializer=health_codes_pb2.IssueCodeResponse.FromString)
    code = issue(health_codes_pb2.IssueCodeRequest(main_index_id=mid, idempotency_key="roles-0001"), metadata=APP,
                 timeout=10).code

    attacks = [
        ("FindResident", RESIDENT_INDEX, resident_index_pb2.FindResidentRequest(document=document),
         resident_index_pb2.FindResidentResponse),
        ("MergeResidents", RESIDENT_INDEX, resident_index_pb2.MergeResidentsRequest(
            survivor_main_index_id=other, merged_main_index_id=mid), resident_index_pb2.MergeResidentsResponse),
        ("RevokeCode", HEALTH_CODES, health_codes_pb2.RevokeCodeRequest(
            main_index_id=mid, reason=common_pb2.REVOCATION_REASON_FRAUD), health_codes_pb2.RevokeCodeResponse),
    ]
    for cn in ("national:ops", "national-index:ops", "admin:44", "admin:99", "admin:33"):
        for method, service, request, response in attacks:
            stub = served.channel(cn).unary_unary(f"/{service}/{method}",
                                                  request_serializer=type(request).SerializeToString,
                                                  response_deserializer=response.FromString)
            with pytest.raises(grpc.RpcError) as err:
                stub(request, timeout=10)
            assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED, (cn, method)
            assert mid not in err.value.details()
    status = app.unary_unary(f"/{HEALTH_CODES}/GetCodeStatus",
                             request_serializer=health_codes_pb2.GetCodeStatusRequest.SerializeToString,
                             response_deserializer=health_codes_pb2.GetCodeStatusResponse.FromString)
    assert status(health_codes_pb2.GetCodeStatusRequest(ref=code.ref), metadata=APP,
                  timeout=10).code.state == common_pb2.CODE_STATE_VALID  # not revoked
    find = app.unary_unary(f"/{RESIDENT_INDEX}/FindResident",
                           request_serializer=resident_index_pb2.FindResidentRequest.SerializeToString,
                           response_deserializer=resident_index_pb2.FindResidentResponse.FromString)
    assert find(resident_index_pb2.FindResidentRequest(document=other_document), metadata=APP,
                timeout=10).main_index_id == other  # not merged


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_wallet_key_cannot_issue_renew_revoke_merge_or_read_codes(served, transport):
    """Issue 16: the web page's key is public. With it, a resident enrols (and lists their live codes), but
    nobody can issue, renew, revoke, render or look up a code, link or merge residents: PERMISSION_DENIED,
    nothing changed, no identifier in the refusal."""
    app = served.channel("no-role-client")
    number = resident_number(100 + (transport == "http"))
    document = common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=number)
    other = common_pb2.Document(type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=resident_number(
        200 + (transport == "http")))

    def call(service, method, request, response, metadata):
        path = f"/{service}/{method}"
        if transport == "http":
            outcome = served.http("no-role-client").call(path, request, response, metadata=metadata)
            return outcome.code, outcome.message, outcome.response
        stub = app.unary_unary(path, request_serializer=type(request).SerializeToString,
                               response_deserializer=response.FromString)
        try:
            return grpc.StatusCode.OK, "", stub(request, metadata=metadata, timeout=10)
        except grpc.RpcError as e:
            return e.code(), e.details(), None

    rpb, hpb, wpb = resident_index_pb2, health_codes_pb2, wallets_pb2
    # enrolment's first step works with the wallet key: the resident registers themselves
    code, _, reply = call(RESIDENT_INDEX, "RegisterResident", rpb.RegisterResidentRequest(primary=document),
                          rpb.RegisterResidentResponse, WEB)
    assert code is grpc.StatusCode.OK
    mid = reply.main_index_id
    other_mid = call(RESIDENT_INDEX, "RegisterResident", rpb.RegisterResidentRequest(primary=other),
                     rpb.RegisterResidentResponse, APP)[2].main_index_id
    issued = call(HEALTH_CODES, "IssueCode", hpb.IssueCodeRequest(main_index_id=mid), hpb.IssueCodeResponse,
                  APP)[2].code
    attacks = [
        (HEALTH_CODES, "IssueCode", hpb.IssueCodeRequest(main_index_id=mid), hpb.IssueCodeResponse),
        (HEALTH_CODES, "RenewCode", hpb.RenewCodeRequest(code_text=issued.code_text), hpb.RenewCodeResponse),
        (HEALTH_CODES, "RevokeCode", hpb.RevokeCodeRequest(
            main_index_id=mid, reason=common_pb2.REVOCATION_REASON_FRAUD), hpb.RevokeCodeResponse),
        (HEALTH_CODES, "GetCodeStatus", hpb.GetCodeStatusRequest(code_text=issued.code_text),
         hpb.GetCodeStatusResponse),
        (HEALTH_CODES, "RenderCode", hpb.RenderCodeRequest(ref=issued.ref, format=hpb.IMAGE_FORMAT_PNG),
         hpb.RenderCodeResponse),
        (RESIDENT_INDEX, "MergeResidents", rpb.MergeResidentsRequest(survivor_main_index_id=other_mid,
                                                                     merged_main_index_id=mid),
         rpb.MergeResidentsResponse),
        (RESIDENT_INDEX, "LinkIdentifier", rpb.LinkIdentifierRequest(main_index_id=mid, document=other),
         rpb.LinkIdentifierResponse),
        (RESIDENT_INDEX, "MoveResidentIn", rpb.MoveResidentInRequest(), rpb.MoveResidentInResponse),
    ]
    for service, method, request, response in attacks:
        code, details, _ = call(service, method, request, response, WEB)
        assert code is grpc.StatusCode.PERMISSION_DENIED, (method, code, details)
        assert "API key 'web' has the wallet role" in details and "issuance clients only" in details, details
        assert mid not in details and number not in details and issued.code_text not in details
    # nothing changed: one code, still valid; the two residents still two
    code, _, status = call(HEALTH_CODES, "GetCodeStatus", hpb.GetCodeStatusRequest(ref=issued.ref),
                           hpb.GetCodeStatusResponse, APP)
    assert status.code.state == common_pb2.CODE_STATE_VALID
    code, _, live = call(WALLETS, "ListLiveCodes", wpb.ListLiveCodesRequest(main_index_id=mid),
                         wpb.ListLiveCodesResponse, WEB)  # a wallet call: admitted, but printed codes are not listed
    assert code is grpc.StatusCode.OK and list(live.codes) == []  # (their text works at a terminal on its own)
    code, _, live = call(WALLETS, "ListLiveCodes", wpb.ListLiveCodesRequest(main_index_id=mid),
                         wpb.ListLiveCodesResponse, APP)  # the issuance client sees it
    assert code is grpc.StatusCode.OK and [c.code.ref.serial for c in live.codes] == [issued.ref.serial]
    assert call(RESIDENT_INDEX, "FindResident", rpb.FindResidentRequest(document=other), rpb.FindResidentResponse,
                WEB)[2].main_index_id == other_mid


def test_key_admin_still_checks_the_province_behind_admission(served):
    admin44 = served.channel("admin:44")
    stub = admin44.unary_unary(f"/{KEY_ADMIN}/ListKeys",
                               request_serializer=key_admin_pb2.ListKeysRequest.SerializeToString,
                               response_deserializer=key_admin_pb2.ListKeysResponse.FromString)
    with pytest.raises(grpc.RpcError) as err:
        stub(key_admin_pb2.ListKeysRequest(province="33"), timeout=30)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "admin:44 administers province 44, not 33" in err.value.details()
    admin33 = served.channel("admin:33").unary_unary(
        f"/{KEY_ADMIN}/ListKeys", request_serializer=key_admin_pb2.ListKeysRequest.SerializeToString,
        response_deserializer=key_admin_pb2.ListKeysResponse.FromString)
    assert len(admin33(key_admin_pb2.ListKeysRequest(province="33"), timeout=30).keys) == 1


# --------------------------------------------------------------------------- how roles are configured


@pytest.mark.parametrize("cn, issuance, wallet, role", [
    ("admin:33", (), (), auth.Role.PROVINCE_ADMIN),
    ("admin:99", (), (), None),
    ("admin:3", (), (), None),
    ("national:ops", (), (), auth.Role.NATIONAL),
    ("national:", (), (), None),
    ("national-index:ops", (), (), auth.Role.NATIONAL_INDEX),
    ("national-index:", (), (), None),
    ("national-index:ops", ("national-index:ops",), (), auth.Role.NATIONAL_INDEX),  # a listing never changes it
    ("desk", ("desk",), (), auth.Role.ISSUANCE),
    ("desk", (), (), None),
    ("admin:33", ("admin:33",), ("admin:33",), auth.Role.PROVINCE_ADMIN),  # a listing never changes an admin's role
    ("admin:99", ("admin:99",), ("admin:99",), None),
    ("kiosk", ("desk",), ("kiosk",), auth.Role.WALLET),
    ("desk", ("desk",), ("kiosk",), auth.Role.ISSUANCE),
    ("kiosk", ("kiosk",), ("kiosk",), None),  # in both lists: no role (the config refuses it too)
    ("province:44", (), ("province:44",), auth.Role.PROVINCE),
])
def test_certificate_role(cn, issuance, wallet, role):
    assert auth.certificate_role(cn, frozenset(issuance), frozenset(wallet)) is role


@pytest.mark.parametrize("entry, message", [
    ({"role": "admin"}, 'role must be "issuance"'),
    ({"role": "national"}, 'role must be "issuance"'),
    ({"name": "admin:33"}, "belong to key administrators' and services' certificates"),
    ({"name": "national:ops"}, "belong to key administrators' and services' certificates"),
    ({"name": "national-index:ops"}, "belong to key administrators' and services' certificates"),
    ({"role": "Wallet"}, 'role must be "issuance" \\(the default\\) or "wallet"'),
    ({"role": "wallet", "name": "admin:33"}, "belong to key administrators' and services' certificates"),
])
def test_api_keys_file_roles_are_issuance_only(entry, message):
    base = {"name": "app", "key_sha256": auth.hash_api_key("k")}
    with pytest.raises(ValueError, match=message):
        auth.parse_api_keys({"callers": [{**base, **entry}]})
    assert [k.role for k in auth.parse_api_keys({"callers": [base, {"name": "b", "role": "issuance",
                                                                    "key_sha256": auth.hash_api_key("k2")},
                                                             {"name": "w", "role": "wallet",
                                                              "key_sha256": auth.hash_api_key("k3")}]})] == [
        auth.Role.ISSUANCE, auth.Role.ISSUANCE, auth.Role.WALLET]


def _config_text(auth_section: str, tls_extra: str = 'client_ca = "ca.pem"\n') -> str:
    return ('province = "33"\ndatabase = "i.db"\n[tls]\ncert = "s.pem"\nkey = "s.key"\n' + tls_extra
            + '[auth]\n' + auth_section + '[keys]\nsigning_key = "k.pem"\nvault_key = "v.key"\n')


@pytest.mark.parametrize("auth_section, tls_extra, message", [
    ('issuance_clients = ["admin:33"]\n', 'client_ca = "ca.pem"\n', "key-administration name"),
    ('issuance_clients = ["national:x"]\n', 'client_ca = "ca.pem"\n', "key-administration name"),
    ('issuance_clients = ["a b"]\n', 'client_ca = "ca.pem"\n', "1-64 characters"),
    ('issuance_clients = "desk"\n', 'client_ca = "ca.pem"\n', "auth.issuance_clients has the wrong type"),
    ('api_keys = "c.toml"\nissuance_clients = ["desk"]\n', "", "needs|set tls.client_ca"),
    ('wallet_clients = ["admin:33"]\n', 'client_ca = "ca.pem"\n', "wallet_clients: .*key-administration name"),
    ('wallet_clients = ["a b"]\n', 'client_ca = "ca.pem"\n', "a wallet client's name is 1-64 characters"),
    ('api_keys = "c.toml"\nwallet_clients = ["kiosk"]\n', "", "auth.wallet_clients names client certificates"),
    ('issuance_clients = ["desk"]\nwallet_clients = ["desk"]\n', 'client_ca = "ca.pem"\n',
     "'desk' is listed as an issuance client and as a wallet client"),
    ('wallet_rate = 0\n', 'client_ca = "ca.pem"\n', "auth.wallet_rate must be > 0"),
], ids=["admin-name", "national-name", "bad-name", "not-a-list", "no-client-ca", "wallet-admin-name",
        "wallet-bad-name", "wallet-no-client-ca", "in-both-lists", "wallet-rate"])
def test_issuance_clients_config_errors(tmp_path, auth_section, tls_extra, message):
    from issuer.config import load_config

    path = tmp_path / "issuer.toml"
    path.write_text(_config_text(auth_section, tls_extra))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_issuance_clients_from_the_config_file(tmp_path):
    from issuer.config import load_config

    path = tmp_path / "issuer.toml"
    path.write_text(_config_text('issuance_clients = ["desk", "batch-printer"]\nwallet_clients = ["kiosk"]\n'
                                 'wallet_rate = 5\nwallet_burst = 10\n'))
    config = load_config(path)
    assert config.issuance_clients == ("desk", "batch-printer") and config.wallet_clients == ("kiosk",)
    assert (config.wallet_rate, config.wallet_burst) == (5.0, 10.0)
    from issuer.app import server_options

    for name in ("s.pem", "s.key", "ca.pem"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "s.key").chmod(0o600)
    options = server_options(config)
    assert options.wallet_clients == {"kiosk"} and options.wallet_rate_limit == auth.RateLimit(5.0, 10.0)
    assert IssuerConfig(province="33", database=tmp_path / "i.db", vault_key=tmp_path / "v",
                        signing_key=tmp_path / "k", tls_cert=tmp_path / "c", tls_key=tmp_path / "k",
                        api_keys=tmp_path / "a").issuance_clients == ()  # default: no certificate issues
    defaults = IssuerConfig(province="33", database=tmp_path / "i.db", vault_key=tmp_path / "v",
                            signing_key=tmp_path / "k", tls_cert=tmp_path / "c", tls_key=tmp_path / "k",
                            api_keys=tmp_path / "a")
    assert defaults.wallet_clients == () and (defaults.wallet_rate, defaults.wallet_burst) == (20.0, 40.0)
    assert defaults.wallet_rate < defaults.rate and defaults.wallet_burst < defaults.burst  # stricter by default


def test_a_served_issuer_with_mtls_admits_its_listed_issuance_client(tmp_path):
    """``healthcode-issuer serve`` as a process, configured by issuer/devenv.py with ``mtls=True``:
    the caller's certificate is listed in auth.issuance_clients and issues codes."""
    from issuer.devenv import DevEnvironment, ServerProcess

    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(dt.timezone.utc), mtls=True)
    assert 'issuance_clients = ["app"]' in env.config_path.read_text()
    with ServerProcess(env) as server, grpc.secure_channel(server.address, env.channel_credentials()) as channel:
        register = channel.unary_unary(
            f"/{RESIDENT_INDEX}/RegisterResident",
            request_serializer=resident_index_pb2.RegisterResidentRequest.SerializeToString,
            response_deserializer=resident_index_pb2.RegisterResidentResponse.FromString)
        number = resident_number(int.from_bytes(os.urandom(2), "big") % 20_000)
        reply = register(resident_index_pb2.RegisterResidentRequest(primary=common_pb2.Document(
            type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=number)), timeout=10)  # no API key: the certificate
        hc.parse_main_index_id(reply.main_index_id)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_the_wallet_role_cannot_read_an_access_log_by_main_index_id(served, transport):
    """Review finding: a main index ID is in every QR code in clear, and a wallet-role key may sit in a public
    page: with both, ListAccesses read any resident's hospital access log. The wallet role no longer reaches
    it (the web wallet never called it); an issuance client (the app's back end) still reads it."""
    number = resident_number(300 + (transport == "http"))
    register = served.channel("no-role-client").unary_unary(
        f"/{RESIDENT_INDEX}/RegisterResident",
        request_serializer=resident_index_pb2.RegisterResidentRequest.SerializeToString,
        response_deserializer=resident_index_pb2.RegisterResidentResponse.FromString)
    mid = register(resident_index_pb2.RegisterResidentRequest(primary=common_pb2.Document(
        type=common_pb2.DOCUMENT_TYPE_RESIDENT_ID, number=number)), metadata=APP, timeout=10).main_index_id
    request = resident_index_pb2.ListAccessesRequest(main_index_id=mid)
    path = f"/{RESIDENT_INDEX}/ListAccesses"
    callers = (("wallet", WEB), ("issuance", APP))
    if transport == "http":
        client = served.http("no-role-client")
        outcomes = {name: client.call(path, request, resident_index_pb2.ListAccessesResponse,
                                      metadata=metadata).code for name, metadata in callers}
    else:
        stub = served.channel("no-role-client").unary_unary(
            path, request_serializer=resident_index_pb2.ListAccessesRequest.SerializeToString,
            response_deserializer=resident_index_pb2.ListAccessesResponse.FromString)
        outcomes = {name: _grpc_code(stub, request, metadata) for name, metadata in callers}
    assert outcomes == {"wallet": grpc.StatusCode.PERMISSION_DENIED, "issuance": grpc.StatusCode.OK}
    assert auth.Role.WALLET in auth.METHOD_ROLES[f"{RESIDENT_INDEX}/FindResident"]
    assert f"{RESIDENT_INDEX}/ListAccesses" not in auth.WALLET_METHODS
