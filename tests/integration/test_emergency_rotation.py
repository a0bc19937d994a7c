"""Emergency rotation for real: ``healthcode-keys`` and the KeyAdmin service (mTLS gRPC on 127.0.0.1).

A provincial admin starts signing with a new key now instead of in 7 days,
where the province's key policy allows it: refused (naming the signing key,
human durations, Beijing time) until ``province key policy --allow-emergency``,
then the new key signs at once, the published key list carries it, and a
verifier that synced verifies its codes.
"""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

import healthcode as hc
from issuer.api import key_admin_pb2 as kpb
from tests.integration.test_key_admin import call, error_info, loop, pki, served, template  # noqa: F401 - fixtures
from tests.integration.test_keys_cli import HOUR, POLICY, T0, Site, code_for

ALLOW = ("province", "key", "policy", "33", "--allow-emergency")


@pytest.fixture
def site(tmp_path):
    site = Site(tmp_path / "site")
    site.run(T0, "root", "init", "--officials", "3", "--threshold", "2")
    site.run(T0, "province", "add", "33", "--home", str(site.home("33")), *POLICY)
    site.run(T0, "province", "key", "generate", "33", "--home", str(site.home("33")))
    site.run(T0, "province", "publish", "33", "--home", str(site.home("33")))
    return site


def test_healthcode_keys_emergency_rotation_refused_then_allowed_and_verified(site):
    home = ("--home", str(site.home("33")))
    now = T0 + HOUR  # 2030-03-01 17:00 Beijing
    old = site.key_set("33").signing_key_at(now)
    # (1) refused: the policy does not allow it; the message names the signing key and the normal way
    err = site.run(now, "province", "key", "rotate", "33", "--emergency", *home, code=1)
    assert (f"emergency rotation refused: province 33's key policy does not allow it (healthcode-keys province key "
            f"policy 33 --allow-emergency); key {old.kid.hex()} signs until 2030-03-21 16:00 北京时间 (CST) "
            "(for 19 d 23 h more); a normal rotation signs from 2030-03-04 17:00 北京时间 (CST) at the earliest "
            "(the lead time of 3 d)") in err
    assert "probe" not in err and "70726f6265" not in err and len(site.key_set("33").keys) == 1  # nothing generated
    # (2) the policy switch: a new key-set revision
    revision = site.key_set("33").revision
    out = site.run(now, *ALLOW, *home)
    assert f"province 33: emergency rotation allowed; key set revision {revision + 1}" in out
    assert "already allowed" in site.run(now, *ALLOW, *home)
    # (3) the emergency rotation: the new key signs now, the old one stops now
    out = site.run(now, "province", "key", "rotate", "33", "--emergency", *home)
    assert "(emergency rotation)" in out
    assert f"key {old.kid.hex()} now stops signing at 2030-03-01T09:00:00Z" in out
    assert "the key signs from now on, and verifiers refuse its codes until they have synced" in out
    key_set = site.key_set("33")
    new = key_set.signing_key_at(now)
    assert new.kid != old.kid and new.use_from == now and key_set.find(old.kid).use_until == now
    # (4) published and synced: a code the new key signs now verifies
    site.run(now, "province", "publish", "33", *home)
    keyring = site.client().refresh(now + 60 * dt.timedelta(seconds=1)).keyring
    code = code_for("33", site.signer("33", new.kid), now)
    assert hc.check(code, keyring, now=now + dt.timedelta(minutes=2)).valid
    # (5) and switched off again
    assert "emergency rotation not allowed" in site.run(now, "province", "key", "policy", "33",
                                                         "--forbid-emergency", *home)


def test_key_admin_emergency_rotation_refused_then_allowed(served):  # noqa: F811 - the imported fixture
    stub = served.stub("admin:33")
    first = served.nation.first
    with pytest.raises(grpc.RpcError) as caught:
        call(stub, "RotateKey", kpb.RotateKeyRequest(province="33", emergency=True))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value) == "POLICY_VIOLATION"
    assert "emergency rotation refused: province 33's key policy does not allow it" in caught.value.details()
    assert f"key {first.kid.hex()} signs until " in caught.value.details()
    assert "北京时间" in caught.value.details() and "the lead time of 7 d" in caught.value.details()
    assert served.nation.key_set().revision == 1  # unchanged, nothing generated

    served.nation.admin.allow_emergency_rotation(True)
    listed = call(stub, "ListKeys", kpb.ListKeysRequest(province="33"))
    assert listed.policy.allow_emergency
    now = served.clock[0]
    rotated = call(stub, "RotateKey", kpb.RotateKeyRequest(province="33", emergency=True))
    assert rotated.key.signing and rotated.key.state == kpb.KEY_STATE_ACTIVE
    assert rotated.key.use_from.seconds == int(now.timestamp())
    assert any(f"key {first.kid.hex()} now stops signing" in w for w in rotated.warnings)
    assert served.nation.changes, "the issuer's signer was told at once"
