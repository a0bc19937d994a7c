"""The KeyAdmin gRPC service, for real: the issuer's server over mTLS with DevPki client certificates.

Each test gets its own national trust repository and province 33 (made with
:mod:`keys.ceremony`, the library the CLI is a shell over), an issuer server
on 127.0.0.1 serving KeyAdmin over that province's key set, file keystore and
TUF keys, and clients whose certificate CN names their role. The last test
runs ``issuer.app.run`` from an :class:`IssuerConfig`, to check the wiring.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import os
import pathlib
import shutil
import signal

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

import healthcode as hc
from issuer import auth
from issuer.api import key_admin_pb2 as kpb
from issuer.api import key_admin_pb2_grpc
from issuer.server import IssuerServer, ServerOptions, TlsMaterial
from issuer.config import ConfigError, IssuerConfig
from issuer.key_admin import KeyAdminService, authorize, role_of
from issuer.service import ServiceSettings
from issuer.tls import DevPki
from keys import ceremony, province_keys
from keys.keystore import FileKeystore
from keys.key_set_file import load_key_set
from shellkit.files import write_file_atomically
from verifier.trustsync import TrustSync

from .grpc_status_support import error_reason, field_violations
from . import issuer_server_support

UTC = dt.timezone.utc
loop, pki = issuer_server_support.loop, issuer_server_support.pki  # the module-scoped fixtures, shared
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
PASSPHRASE = b"key admin test passphrase"
KEYSTORE_SECRET = b"keystore secret 33"
API_KEY = "admin-api-key-" + "c" * 40
SUBJECT = hc.main_index_id_from_bytes(hashlib.sha256(b"key admin resident").digest()[:16])
ALL_METHODS = ("ListKeys", "PlanRotation", "RotateKey", "MarkCompromised", "RetireKey", "PublishKeyList")


def utc_now() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


def passphrase(holder, *, new=False) -> bytes:
    return PASSPHRASE


class Nation:
    """A repository (2 of 3 officials), province 33 with one TUF key and one published signing key."""

    def __init__(self, base: pathlib.Path, now: dt.datetime, *, create: bool = True) -> None:
        self.base, self.now = base, now
        self.repo_dir = base / "repo"
        self.national = ceremony.NationalKeys(base / "national-keys")
        self.home = ceremony.ProvinceHome("33", base / "province-33")
        if create:
            ceremony.init_root(self.repo_dir, self.national, officials=3, threshold=2, passphrase=passphrase,
                               now=now)
            ceremony.add_province(ceremony.open_repository(self.repo_dir), self.home, passphrase=passphrase,
                                  now=now, tuf_keys=1, tuf_threshold=1,
                                  targets_signers=ceremony.load_officials(self.national, "targets", passphrase))
        self.keystore = FileKeystore(self.home.keystore_dir, KEYSTORE_SECRET)
        self.changes: list = []
        repo = ceremony.open_repository(self.repo_dir, online=ceremony.load_online(self.national, passphrase))
        self.admin = province_keys.ProvinceKeyAdmin(
            province="33", key_set_path=self.home.key_set_path, keystore=self.keystore, repo=repo,
            tuf_signers=ceremony.province_signers(self.home, passphrase), publish_snapshot=True,
            on_change=self.changes.append)
        if create:
            self.admin.add_key(now)
            self.admin.publish(now=now)
            self.changes.clear()
        self.first = self.key_set().keys[0]

    @classmethod
    def copy_of(cls, template: "Nation", base: pathlib.Path) -> "Nation":
        shutil.copytree(template.base, base)
        return cls(base, template.now, create=False)

    def client(self, name: str = "verifier") -> TrustSync:
        root = (self.repo_dir / "metadata" / "1.root.json").read_bytes()
        return TrustSync(self.base / name / "md", self.base / name / "t", self.repo_dir, root)

    def key_set(self):
        return load_key_set(self.home.key_set_path)


class Served:
    def __init__(self, nation: Nation, server: IssuerServer, pki: DevPki, clock: list) -> None:
        self.nation, self.server, self.pki, self.clock = nation, server, pki, clock
        self._channels = []

    def stub(self, cn: str) -> key_admin_pb2_grpc.KeyAdminStub:
        cert = self.pki.client(cn)
        creds = grpc.ssl_channel_credentials(self.pki.ca_cert_pem, cert.key_pem, cert.cert_pem)
        channel = grpc.secure_channel(f"127.0.0.1:{self.server.port}", creds)
        self._channels.append(channel)
        return key_admin_pb2_grpc.KeyAdminStub(channel)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    nation = Nation(tmp_path_factory.mktemp("nation"), utc_now())
    nation.keystore.close()
    return nation


@pytest.fixture
def served(loop, pki, tmp_path, template):
    nation = Nation.copy_of(template, tmp_path / "nation")
    clock = [template.now + HOUR]
    server_cert = pki.server()
    options = ServerOptions(
        service=ServiceSettings(province="33"), listen="127.0.0.1:0",
        tls=TlsMaterial(server_cert.cert_pem, server_cert.key_pem, pki.ca_cert_pem),
        api_keys=(auth.ApiKey("app", bytes.fromhex(auth.hash_api_key(API_KEY))),),
        rate_limit=auth.RateLimit(1000.0, 1000.0), grace=1.0)
    service = KeyAdminService(nation.admin, clock=lambda: clock[0])

    async def start():
        return await IssuerServer.start(options, index=object(), codes=object(), key_admin=service)

    server = loop.run(start())
    s = Served(nation, server, pki, clock)
    yield s
    s.close()
    loop.run(server.shutdown(0))
    nation.keystore.close()


def error_info(error: grpc.RpcError) -> str:
    return error_reason(error) or ""


def call(stub, method: str, request, **kw):
    return getattr(stub, method)(request, timeout=30, **kw)


def ts(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=int(moment.timestamp()))


def request_for(method: str, province: str = "33", kid: bytes = b"\x01" * 8, now: dt.datetime | None = None):
    now = now or utc_now()
    return {
        "ListKeys": lambda: kpb.ListKeysRequest(province=province),
        "PlanRotation": lambda: kpb.PlanRotationRequest(province=province),
        "RotateKey": lambda: kpb.RotateKeyRequest(province=province),
        "MarkCompromised": lambda: kpb.MarkCompromisedRequest(province=province, kid=kid, since=ts(now)),
        "RetireKey": lambda: kpb.RetireKeyRequest(province=province, kid=kid),
        "PublishKeyList": lambda: kpb.PublishKeyListRequest(province=province),
    }[method]()


# --------------------------------------------------------------------------- a province admin


def test_province_admin_lists_rotates_and_publishes(served):
    stub = served.stub("admin:33")
    now = served.clock[0]
    listed = call(stub, "ListKeys", kpb.ListKeysRequest(province="33"))
    assert listed.province == "33" and listed.revision == 1 and len(listed.keys) == 1
    key = listed.keys[0]
    assert (key.kid, key.state, key.signing, key.keystore) == (served.nation.first.kid, kpb.KEY_STATE_ACTIVE, True,
                                                               "file")
    assert listed.policy.lead_time_seconds == 7 * 86400 and listed.policy.usage_period_seconds == 90 * 86400
    assert call(stub, "PlanRotation", kpb.PlanRotationRequest(province="33")).reason == kpb.PLAN_REASON_UNSPECIFIED

    rotated = call(stub, "RotateKey", kpb.RotateKeyRequest(province="33", algorithm=kpb.KEY_ALGORITHM_EDDSA))
    assert rotated.revision == 2 and rotated.key.state == kpb.KEY_STATE_PREPUBLISHED
    assert rotated.key.algorithm == kpb.KEY_ALGORITHM_EDDSA and not rotated.key.signing
    assert rotated.key.use_from.seconds == int((now + 7 * DAY).timestamp())  # now + lead time
    assert any("not yet published" in w for w in rotated.warnings)
    assert served.nation.key_set().revision == 2 and len(served.nation.changes) == 1  # on_change told the issuer
    assert not any(b"PRIVATE KEY" in f for f in rotated.SerializeToString().split())

    published = call(stub, "PublishKeyList", kpb.PublishKeyListRequest(province="33"))
    assert published.publication.serial == 2 and published.publication.visible
    assert "metadata/timestamp.json" in published.publication.written
    result = served.nation.client().refresh(now + 2 * HOUR)
    assert sorted(k.kid for k in result.keyring) == sorted([served.nation.first.kid, rotated.key.kid])


# --------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("method", ALL_METHODS)
def test_another_provinces_admin_is_denied_and_logged(served, caplog, method):
    caplog.set_level(logging.WARNING, logger="issuer.key_admin")
    with pytest.raises(grpc.RpcError) as err:
        call(served.stub("admin:44"), method, request_for(method, kid=served.nation.first.kid))
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "admin:44 administers province 44, not 33" in err.value.details()
    assert error_info(err.value) == "PERMISSION_DENIED"
    denials = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "issuer.key_admin"]
    assert len(denials) == 1
    text = denials[0].getMessage()
    assert "caller admin:44" in text and f"method {method}" in text and "target province 33" in text
    assert served.nation.first.kid.hex() not in text  # request contents stay out of the log
    assert served.nation.key_set().revision == 1  # nothing changed


def test_an_admin_cannot_reach_another_province_through_its_own_certificate(served, caplog):
    caplog.set_level(logging.WARNING, logger="issuer.key_admin")
    with pytest.raises(grpc.RpcError) as err:
        call(served.stub("admin:33"), "ListKeys", kpb.ListKeysRequest(province="44"))
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "target province 44" in caplog.text


def test_national_role_reads_and_cuts_off_a_compromised_key_but_does_not_rotate(served):
    national = served.stub("national:ops")
    now = served.clock[0]
    client = served.nation.client()
    ring = client.refresh(now).keyring
    assert len(call(national, "ListKeys", kpb.ListKeysRequest(province="33")).keys) == 1
    for method in ("RotateKey", "RetireKey"):
        with pytest.raises(grpc.RpcError) as err:
            call(national, method, request_for(method, kid=served.nation.first.kid))
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert f"national:ops may not call {method}" in err.value.details()
    # another province than this issuer's: permitted, but not held here
    with pytest.raises(grpc.RpcError) as err:
        call(national, "ListKeys", kpb.ListKeysRequest(province="44"))
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "holds the keys of province 33 only" in err.value.details()

    # the emergency path in one call: mark + publish; one refresh later later codes are rejected
    signer = served.nation.keystore.load_signer(served.nation.first.handle)
    minute = dt.timedelta(minutes=1)
    since = now - 10 * minute  # the key signs from the ceremony, an hour before `now`
    later = hc.sign_code(hc.CodeClaims(province="33", subject=SUBJECT, serial=7, issued_at=since + minute,
                                       expires_at=since + DAY), signer)
    earlier = hc.sign_code(hc.CodeClaims(province="33", subject=SUBJECT, serial=6, issued_at=since - 20 * minute,
                                         expires_at=since + DAY), signer)
    assert hc.check(later, ring, now=now).valid
    marked = call(national, "MarkCompromised", kpb.MarkCompromisedRequest(
        province="33", kid=served.nation.first.kid, since=ts(since), publish=True))
    assert marked.key.state == kpb.KEY_STATE_COMPROMISED and marked.key.compromised_since.seconds == int(
        since.timestamp())
    assert marked.publication.visible and marked.publication.serial == 2
    after = client.refresh(now + HOUR).keyring
    assert hc.check(later, after, now=now + HOUR).reason is hc.Reason.KEY_COMPROMISED
    assert hc.check(earlier, after, now=now + HOUR).valid


@pytest.mark.parametrize("cn, metadata, why", [
    # even on a province admin's TLS connection, an API key is judged alone: an issuance client
    ("admin:33", (("authorization", f"Bearer {API_KEY}"),), "API key 'app' has the issuance role"),
    ("ops", (), "certificate 'ops' has no role"),
    ("admin:99", (), "certificate 'admin:99' has no role"),
    ("national:", (), "certificate 'national:' has no role"),
])
def test_api_key_and_unknown_callers_are_refused(served, caplog, cn, metadata, why):
    """The issuer's admission layer refuses them before KeyAdmin runs (tests/integration/test_roles.py
    has the whole matrix); KeyAdmin's own checks stay behind it (test_permission_table)."""
    caplog.set_level(logging.WARNING, logger="issuer.auth")
    with pytest.raises(grpc.RpcError) as err:
        call(served.stub(cn), "ListKeys", kpb.ListKeysRequest(province="33"), metadata=metadata)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED and why in err.value.details()
    assert ("healthcode.admin.v1.KeyAdmin is open to admin:<province> certificates and national:<name> "
            "certificates only") in err.value.details()
    assert "access denied" in caplog.text and API_KEY not in caplog.text
    assert served.nation.key_set().revision == 1


def test_permission_table():
    national, admin33 = role_of("national:ops"), role_of("admin:33")
    assert role_of("admin:33x") is None and role_of(None) is None and role_of("national:a b") is None
    assert [m for m in ALL_METHODS if authorize(national, m, "44")] == [
        "ListKeys", "PlanRotation", "MarkCompromised", "PublishKeyList"]
    assert all(authorize(admin33, m, "33") for m in ALL_METHODS)
    assert not any(authorize(admin33, m, "44") for m in ALL_METHODS)


# --------------------------------------------------------------------------- bad input and refusals


def test_bad_input_and_refusals_map_to_status_codes(served):
    stub = served.stub("admin:33")
    kid = served.nation.first.kid
    now = served.clock[0]
    cases = [
        ("ListKeys", kpb.ListKeysRequest(), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "province"),
        ("MarkCompromised", kpb.MarkCompromisedRequest(province="33", kid=kid), grpc.StatusCode.INVALID_ARGUMENT,
         "INVALID_ARGUMENT", "since"),
        ("MarkCompromised", kpb.MarkCompromisedRequest(province="33", kid=kid, since=ts(now + DAY)),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "since"),
        ("RetireKey", kpb.RetireKeyRequest(province="33"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
         "kid"),
        ("RotateKey", kpb.RotateKeyRequest(province="33", use_from=ts(now - DAY)),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "use_from"),
        ("RetireKey", kpb.RetireKeyRequest(province="33", kid=b"\x00" * 8), grpc.StatusCode.NOT_FOUND,
         "KEY_NOT_FOUND", None),
        ("RetireKey", kpb.RetireKeyRequest(province="33", kid=kid), grpc.StatusCode.FAILED_PRECONDITION,
         "POLICY_VIOLATION", None),  # the only signing key: issuance would stop
    ]
    for method, request, code, reason, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            call(stub, method, request)
        assert (err.value.code(), error_info(err.value)) == (code, reason), (method, err.value.details())
        if field is not None:
            fields = [f for f, _ in field_violations(err.value)]
            assert fields == [field], (method, fields)
    assert served.nation.key_set().revision == 1
    forced = call(stub, "RetireKey", kpb.RetireKeyRequest(province="33", kid=kid, force=True))
    assert forced.key.state == kpb.KEY_STATE_RETIRED


OUT_OF_RANGE = [
    ("RotateKey-use_from-plus-2^62", "RotateKey", "use_from", 2**62),
    ("RotateKey-use_from-minus-2^62", "RotateKey", "use_from", -(2**62)),
    ("RotateKey-use_from-year-9000", "RotateKey", "use_from", 221845392000),  # 9000-01-01: beyond the key window
    ("MarkCompromised-since-plus-2^62", "MarkCompromised", "since", 2**62),
    ("MarkCompromised-since-minus-2^62", "MarkCompromised", "since", -(2**62)),
    ("MarkCompromised-since-before-1970", "MarkCompromised", "since", -1),
]


@pytest.mark.parametrize("method, field, seconds", [c[1:] for c in OUT_OF_RANGE], ids=[c[0] for c in OUT_OF_RANGE])
def test_out_of_range_timestamps_are_invalid_argument_with_a_field_violation(served, method, field, seconds):
    stub = served.stub("admin:33")
    moment = timestamp_pb2.Timestamp(seconds=seconds)
    request = (kpb.RotateKeyRequest(province="33", use_from=moment) if method == "RotateKey" else
               kpb.MarkCompromisedRequest(province="33", kid=served.nation.first.kid, since=moment))
    with pytest.raises(grpc.RpcError) as err:
        call(stub, method, request)
    assert (err.value.code(), error_info(err.value)) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"), (
        err.value.details())
    violations = []
    for detail in rpc_status.from_call(err.value).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            violations += [(v.field, v.reason) for v in br.field_violations]
    assert violations == [(field, "RANGE")]
    assert f"{field} must be between 1970-01-01 and 9000-01-01 UTC" in err.value.details()
    assert served.nation.key_set().revision == 1  # nothing changed


def test_the_server_lists_the_service(served):
    assert "healthcode.admin.v1.KeyAdmin" in served.server.service_names


# --------------------------------------------------------------------------- the issuer's wiring


def _config(tmp: pathlib.Path, nation: Nation, **kw) -> IssuerConfig:
    values = dict(
        province="33", database=tmp / "issuer.db", vault_key=tmp / "vault.key", key_set=nation.home.key_set_path,
        keystore_dir=nation.home.keystore_dir, signing_key_passphrase_env="HC_KS", listen="127.0.0.1:0",
        tls_cert=tmp / "server.pem", tls_key=tmp / "server.key", client_ca=tmp / "ca.pem",
        key_set_check_interval=3600.0, trust_repo=nation.repo_dir, tuf_keys=nation.home.tuf_dir,
        tuf_keys_passphrase_env="HC_TUF", online_keys=nation.national.online, online_keys_passphrase_env="HC_ONLINE")
    values.update(kw)
    return IssuerConfig(**values)


def test_config_requires_mtls_and_a_key_set_for_key_admin(tmp_path):
    base = dict(province="33", database=tmp_path / "i.db", vault_key=tmp_path / "v", listen="127.0.0.1:0",
                tls_cert=tmp_path / "c", tls_key=tmp_path / "k", trust_repo=tmp_path / "repo")
    with pytest.raises(ConfigError, match="mTLS only"):
        IssuerConfig(**base, key_set=tmp_path / "ks.json", keystore_dir=tmp_path / "s", api_keys=tmp_path / "a")
    with pytest.raises(ConfigError, match="needs rotating keys"):
        IssuerConfig(**base, signing_key=tmp_path / "k.pem", client_ca=tmp_path / "ca")
    with pytest.raises(ConfigError, match="need key_admin.trust_repo"):
        IssuerConfig(**{**base, "trust_repo": None}, key_set=tmp_path / "ks.json", keystore_dir=tmp_path / "s",
                     client_ca=tmp_path / "ca", tuf_keys=tmp_path / "tuf")
    from issuer.config import load_config

    path = tmp_path / "issuer.toml"
    path.write_text('province = "33"\ndatabase = "i.db"\n[tls]\ncert = "c"\nkey = "k"\nclient_ca = "ca"\n'
                    '[keys]\nkey_set = "ks.json"\nkeystore_dir = "s"\nvault_key = "v"\n'
                    '[key_admin]\ntrust_repo = "repo"\ntuf_keys = "tuf-33"\ntuf_passphrase_env = "HC_TUF"\n'
                    'online_keys = "online"\nonline_passphrase_env = "HC_ONLINE"\n')
    config = load_config(path)
    assert (config.trust_repo, config.tuf_keys, config.tuf_keys_passphrase_env, config.online_keys) == (
        tmp_path / "repo", tmp_path / "tuf-33", "HC_TUF", tmp_path / "online")


def test_serve_from_config_offers_key_admin_and_reloads_the_signer_at_once(tmp_path, pki, caplog):
    from issuer import app

    caplog.set_level(logging.INFO)
    nation = Nation(tmp_path / "nation", utc_now())
    nation.keystore.close()  # the issuer opens its own
    server_cert = pki.server()
    (tmp_path / "server.pem").write_bytes(server_cert.cert_pem)
    write_file_atomically(tmp_path / "server.key", server_cert.key_pem)  # secrets: owner-only (0600)
    (tmp_path / "ca.pem").write_bytes(pki.ca_cert_pem)
    write_file_atomically(tmp_path / "vault.key", os.urandom(32).hex().encode() + b"\n")
    config = _config(tmp_path, nation)
    outcome: dict = {}

    def client_side(port: int) -> None:
        cert = pki.client("admin:33")
        creds = grpc.ssl_channel_credentials(pki.ca_cert_pem, cert.key_pem, cert.cert_pem)
        with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            stub = key_admin_pb2_grpc.KeyAdminStub(channel)
            outcome["listed"] = stub.ListKeys(kpb.ListKeysRequest(province="33"), timeout=30)
            outcome["rotated"] = stub.RotateKey(kpb.RotateKeyRequest(province="33"), timeout=30)
            outcome["published"] = stub.PublishKeyList(kpb.PublishKeyListRequest(province="33"), timeout=30)

    async def operate(server) -> None:
        try:
            await asyncio.to_thread(client_side, server.port)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    async def main() -> None:
        await app.run(config, signing_key_passphrase=KEYSTORE_SECRET, tuf_keys_passphrase=PASSPHRASE,
                      online_keys_passphrase=PASSPHRASE, ready=lambda server: asyncio.ensure_future(operate(server)))

    asyncio.run(main())
    assert len(outcome["listed"].keys) == 1 and outcome["rotated"].revision == 2
    assert outcome["published"].publication.visible and outcome["published"].publication.serial == 2
    assert "reloaded: revision 2" in caplog.text  # the rotating signer took the new key set at once
    assert "key admin: admin:33 RotateKey province 33" in caplog.text
    with pytest.raises(ConfigError, match="need key_admin.tuf_passphrase_env"):
        asyncio.run(app.run(config, signing_key_passphrase=KEYSTORE_SECRET, tuf_keys_passphrase=None))
