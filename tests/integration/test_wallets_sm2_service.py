"""SM2 device keys at the Wallets API, for real: the issuer's server on 127.0.0.1 over TLS, a real SQLite store.

The server's ``WalletIssuer`` allows ES256 and SM2 (``[wallets]
device_key_algorithms = ["ES256", "SM2"]``). An SM2 phone (a real SM2 key)
enrols with an SM2-SM3 proof of possession; its credential binds the key as an
EC2 COSE_Key on the SM2 curve (``crv`` -65537) and verifies inside an SM2
presentation. Bad SM2 input is INVALID_ARGUMENT with field violations and
stores nothing: a point off the SM2 curve, a P-256 point named SM2, a proof by
another key (the challenge used up), an SM2 proof for a key named ES256. The
configuration's own checks are at the end.
"""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

pytest.importorskip("gmalglib", reason="SM2 needs the 'sm2' extra (gmalglib)")

from healthcode import Algorithm  # noqa: E402
from healthcode.presentation import (  # noqa: E402
    encode_presentation,
    holder_cnf,
    step_at,
    verify_presentation,
)
from issuer import auth  # noqa: E402
from issuer.api import wallets_pb2, wallets_pb2_grpc  # noqa: E402
from issuer.config import ConfigError, IssuerConfig, load_config  # noqa: E402
from issuer.server import IssuerServer, ServerOptions, TlsMaterial  # noqa: E402
from issuer.service import ServiceSettings  # noqa: E402
from issuer.wallets import WalletIssuer  # noqa: E402

from .issuer_server_support import (APP, APP_KEY, PROVINCE, Client, Domain, LoopThread, Phone,  # noqa: E402
                                    bad_request)

pb = wallets_pb2
SM2 = Algorithm.SM2_SM3


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from issuer.tls import DevPki

    base = tmp_path_factory.mktemp("wallets-sm2")
    loop = LoopThread()
    pki = DevPki.create(now=dt.datetime.now(dt.timezone.utc))
    cert = pki.server()
    domain = Domain(base / "issuer.db")
    options = ServerOptions(
        service=ServiceSettings(province=PROVINCE), listen="127.0.0.1:0",
        tls=TlsMaterial(cert.cert_pem, cert.key_pem, None),
        api_keys=(auth.ApiKey("app", bytes.fromhex(auth.hash_api_key(APP_KEY))),),
        rate_limit=auth.RateLimit(10_000.0, 10_000.0), grace=1.0)
    wallets = WalletIssuer(codes=domain.codes, device_key_algorithms=(Algorithm.ES256, Algorithm.SM2_SM3))

    async def start():
        return await IssuerServer.start(options, index=domain.index, codes=domain.codes, on_close=domain.close,
                                        wallets=wallets)

    server = loop.run(start())
    client = Client(server.port, pki)
    stub = wallets_pb2_grpc.WalletsStub(client.channel)
    yield client, stub, domain
    client.close()
    loop.run(server.shutdown(0))
    loop.close()


def _challenge(stub, mid: str) -> bytes:
    return stub.CreateChallenge(pb.CreateChallengeRequest(main_index_id=mid), metadata=APP, timeout=10).challenge


def _enrol(stub, mid: str, phone: Phone, **changes):
    challenge = changes.pop("challenge", None) or _challenge(stub, mid)
    request = pb.IssueCredentialRequest(main_index_id=mid, challenge=challenge, device_key=phone.device_key(),
                                        proof=phone.proof(challenge))
    for name, value in changes.items():
        if name.startswith("key_"):
            setattr(request.device_key, name.removeprefix("key_"), value)
        else:
            setattr(request, name, value)
    return stub.IssueCredential(request, metadata=APP, timeout=10).credential


def _live(stub, mid: str) -> list[int]:
    reply = stub.ListLiveCodes(pb.ListLiveCodesRequest(main_index_id=mid), metadata=APP, timeout=10)
    return [live.code.ref.serial for live in reply.codes]


@pytest.mark.parametrize("compressed", [False, True], ids=["uncompressed", "compressed"])
def test_an_sm2_phone_enrols_and_presents(served, compressed):
    client, stub, domain = served
    mid = client.register()
    phone = Phone(SM2)
    point = phone.point if not compressed else bytes((2 + (phone.point[64] & 1),)) + phone.point[1:33]
    credential = _enrol(stub, mid, phone, key_public_key=point)
    now = dt.datetime.now(dt.timezone.utc)
    verified = verify_presentation(encode_presentation(credential.code_text, step_at(now), phone),
                                   domain.keyring(now), now=now)
    assert verified.credential.holder_key == holder_cnf(phone.point, Algorithm.SM2_SM3)
    assert verified.credential.holder_key[1][-1] == -65537
    # a P-256 phone still enrols on the same issuer, superseding the SM2 credential
    p256 = _enrol(stub, mid, Phone(Algorithm.ES256))
    assert _live(stub, mid) == [p256.ref.serial]


def _not_on_sm2_curve() -> bytes:
    return b"\x04" + bytes(31) + b"\x01" + bytes(31) + b"\x01"


BAD = [
    ("off_curve", lambda phone: dict(key_public_key=_not_on_sm2_curve()), [("device_key.public_key", "CURVE")]),
    ("compressed_off_curve", lambda phone: dict(key_public_key=b"\x02" + (5).to_bytes(32, "big")),
     [("device_key.public_key", "CURVE")]),
    ("p256_point_named_sm2", lambda phone: dict(key_public_key=Phone(Algorithm.ES256).point),
     [("device_key.public_key", "CURVE")]),
    ("proof_by_another_key", lambda phone: dict(proof=Phone(SM2).proof(b"\x00" * 32)), [("proof", "PROOF")]),
    ("sm2_point_named_es256", lambda phone: dict(key_algorithm=pb.DEVICE_KEY_ALGORITHM_ES256),
     [("device_key.public_key", "CURVE")]),
]


@pytest.mark.parametrize("change, expected", [(c, e) for _, c, e in BAD], ids=[n for n, _, _ in BAD])
def test_bad_sm2_input_is_invalid_argument_and_stores_nothing(served, change, expected):
    client, stub, _ = served
    mid = client.register()
    phone = Phone(SM2)
    with pytest.raises(grpc.RpcError) as caught:
        _enrol(stub, mid, phone, **change(phone))
    assert bad_request(caught.value) == expected
    assert _live(stub, mid) == []


def test_an_sm2_proof_does_not_pass_for_a_p256_key_nor_the_reverse(served):
    client, stub, _ = served
    mid = client.register()
    p256, sm2 = Phone(Algorithm.ES256), Phone(SM2)
    challenge = _challenge(stub, mid)
    request = pb.IssueCredentialRequest(main_index_id=mid, challenge=challenge, device_key=p256.device_key(),
                                        proof=sm2.proof(challenge))
    with pytest.raises(grpc.RpcError) as caught:
        stub.IssueCredential(request, metadata=APP, timeout=10)
    assert bad_request(caught.value) == [("proof", "PROOF")]
    assert _live(stub, mid) == []


def test_config_device_key_algorithms(tmp_path):
    base = dict(province="33", database="x.db", vault_key="v.key", signing_key="s.pem", insecure_dev_plaintext=True,
                api_keys="callers.toml")
    assert IssuerConfig(**base).device_key_algorithm_list == (Algorithm.ES256,)
    both = IssuerConfig(**base, device_key_algorithms=("ES256", "SM2"))
    assert both.device_key_algorithm_list == (Algorithm.ES256, Algorithm.SM2_SM3)
    assert IssuerConfig(**base, device_key_algorithms=("SM2",)).device_key_algorithm_list == (Algorithm.SM2_SM3,)
    for bad in ((), ("EdDSA",), ("ES256", "ES256"), ("sm2",), ("SM2-SM3",)):
        with pytest.raises(ConfigError, match="wallets.device_key_algorithms"):
            IssuerConfig(**base, device_key_algorithms=bad)
    toml = tmp_path / "issuer.toml"
    toml.write_text('province = "33"\ndatabase = "x.db"\n[auth]\napi_keys = "c.toml"\n[keys]\nsigning_key = "s.pem"\n'
                    'vault_key = "v.key"\n[wallets]\ndevice_key_algorithms = ["ES256", "SM2"]\n')
    loaded = load_config(toml, {"insecure_dev_plaintext": True})
    assert loaded.device_key_algorithm_list == (Algorithm.ES256, Algorithm.SM2_SM3)
    toml.write_text(toml.read_text().replace('["ES256", "SM2"]', '"SM2"'))
    with pytest.raises(ConfigError, match="device_key_algorithms"):
        load_config(toml, {"insecure_dev_plaintext": True})
    with pytest.raises(ValueError):
        WalletIssuer(codes=None, device_key_algorithms=(Algorithm.EDDSA,))  # type: ignore[arg-type]
