"""End to end with real processes: the wallet enrols at the REAL issuer, presents offline, renews.

``healthcode-issuer serve`` runs as a subprocess on 127.0.0.1 (``issuer.devenv``);
``healthcode-wallet`` runs as the user would; the terminal side is the core's
``verify_presentation`` with the issuer's key and a ``ReplayCache``, offline.

The story: the app's back end registers the resident; the phone enrols with
proof of possession; its presentation verifies offline, a second scan of the
same one is a replay, and one older than the window is stale; it renews (the
old credential superseded, the device binding kept); a lost phone's credential
is revoked and the wallet says so; a new phone enrols for the same resident;
with the issuer gone, renewal says "offline" and the phone keeps presenting.
"""

from __future__ import annotations

import datetime as dt

import pytest

import healthcode as hc
from healthcode import Reason
from healthcode import presentation as hp
from issuer.api import common_pb2, health_codes_pb2, wallets_pb2
from issuer.client import IssuerClient, document_message
from issuer.devenv import DevEnvironment, ServerProcess
from issuer.documents import make_resident_id, parse_document
from verifier.images import decode_image
from wallet import Wallet
from wallet.remote import WalletClient

from .wallet_cli_support import owner_only, wallet

UTC = dt.timezone.utc
PASSPHRASE = "correct horse battery"


def auth(env: DevEnvironment) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {env.api_key}"),)


@pytest.fixture
def world(tmp_path):
    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(UTC))
    with ServerProcess(env) as server:
        yield env, server


def state_of(client: IssuerClient, text: str) -> tuple[int, int]:
    code = client.status(text)
    return code.state, code.revocation_reason


def test_enrol_present_offline_renew_revoke_rebind(world, tmp_path):
    env, server = world
    number = make_resident_id("330106", dt.date(1980, 5, 17), 123)
    document = parse_document("resident_id", number, today=dt.date.today())
    client = IssuerClient(server.address, ca_pem=env.ca_pem, api_key=env.api_key)
    client.find_or_register(document)  # the app's back end registers the resident first

    secret = owner_only(tmp_path / "passphrase", PASSPHRASE)
    number_file = owner_only(tmp_path / "document-number", number)
    connection = ["--server", server.address, "--ca", str(env.directory / "pki" / "ca.pem"),
                  "--api-key-file", str(env.directory / "app.apikey")]
    enrol_args = [*connection, "--document-type", "resident_id", "--document-number-file", str(number_file)]
    phone = ["--wallet", str(tmp_path / "phone"), "--secret-file", str(secret)]

    # enrol: init, then CreateChallenge -> proof -> IssueCredential
    assert (run := wallet("init", *phone)).returncode == 0, run.stderr
    run = wallet("enrol", *phone, *enrol_args)
    assert run.returncode == 0, run.stderr
    assert "Enrolled" in run.stdout and number not in run.stdout + run.stderr

    # present offline; the terminal verifies offline, refuses a replay and a stale one
    ring = env.keyring()
    cache = hp.ReplayCache()
    with Wallet.open(tmp_path / "phone", PASSPHRASE) as phone_wallet:
        first = phone_wallet.credential()
        now = dt.datetime.now(UTC)
        text = phone_wallet.present(now)
        verified = hp.verify_presentation(text, ring, now=now)
        assert verified.credential.serial == first.serial
        assert hp.holder_key_from_cnf(verified.credential.holder_key).spki_der()[-65:] == \
            phone_wallet.device.public_point()
        cache.admit(verified, now)
        with pytest.raises(hc.Replayed):
            cache.admit(hp.verify_presentation(text, ring, now=now), now)
        later = now + dt.timedelta(seconds=120)
        assert hp.check_presentation(text, ring, now=later).reason is Reason.STALE_PRESENTATION
        fresh = phone_wallet.present(later)
        assert hp.check_presentation(fresh, ring, now=later).valid
    assert hc.check(first.text, ring, now=now).reason is Reason.PRESENTATION_REQUIRED  # the credential alone

    # renew: a new credential, the same device; the old one superseded at the issuer
    run = wallet("renew", *phone)
    assert run.returncode == 0, run.stderr
    with Wallet.open(tmp_path / "phone", PASSPHRASE) as phone_wallet:
        renewed = phone_wallet.credential()
        now = dt.datetime.now(UTC)
        assert renewed.serial != first.serial
        assert hp.verify_presentation(phone_wallet.present(now), ring, now=now).credential.serial == renewed.serial
    assert state_of(client, first.text) == (common_pb2.CODE_STATE_REVOKED, common_pb2.REVOCATION_REASON_SUPERSEDED)
    status = wallet("status", "--wallet", str(tmp_path / "phone"))
    assert status.returncode == 0 and f"serial {renewed.serial}" in status.stdout and "北京时间" in status.stdout

    # the phone is lost: its credential is revoked; the wallet says so, plainly
    client.codes.RevokeCode(health_codes_pb2.RevokeCodeRequest(
        code_text=renewed.text, reason=common_pb2.REVOCATION_REASON_LOST_DEVICE),
        metadata=auth(env), timeout=10)
    run = wallet("renew", *phone)
    assert run.returncode == 1 and run.stderr.startswith("Error: revoked:") and "lost" in run.stderr, run.stderr

    # a new phone enrols for the same resident
    new_phone = ["--wallet", str(tmp_path / "new-phone"), "--secret-file", str(secret)]
    assert (run := wallet("init", *new_phone)).returncode == 0, run.stderr
    run = wallet("enrol", *new_phone, *enrol_args)
    assert run.returncode == 0, run.stderr
    with Wallet.open(tmp_path / "new-phone", PASSPHRASE) as new_wallet:
        bound = new_wallet.credential()
        now = dt.datetime.now(UTC)
        assert hp.verify_presentation(new_wallet.present(now), ring, now=now).credential.serial == bound.serial
    assert state_of(client, bound.text)[0] == common_pb2.CODE_STATE_VALID
    client.close()

    # the issuer goes away: renewal says offline, the phone keeps presenting
    server.stop()
    run = wallet("renew", *new_phone, "--retry-seconds", "1")
    assert run.returncode == 1 and run.stderr.startswith("Error: offline:"), run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    out = tmp_path / "offline.png"
    assert (run := wallet("png", *new_phone, "--out", str(out))).returncode == 0, run.stderr
    (text,) = decode_image(out.read_bytes())
    assert hp.check_presentation(text, ring, now=dt.datetime.now(UTC)).valid
    status = wallet("status", "--wallet", str(tmp_path / "new-phone"))
    assert "上次失败 Last failure: offline" in status.stdout and "Pending: a renewal" in status.stdout


def test_a_renewal_that_reached_the_issuer_before_a_crash_is_not_minted_twice(world, tmp_path):
    """The wallet wrote its idempotency key, sent RenewCode, and died before storing the answer."""
    from wallet.state import Pending

    env, server = world
    number = make_resident_id("330106", dt.date(1975, 2, 3), 45)
    document = parse_document("resident_id", number, today=dt.date.today())
    client = WalletClient(server.address, ca_pem=env.ca_pem, api_key=env.api_key)
    client.find_or_register(document)
    secret = owner_only(tmp_path / "passphrase", PASSPHRASE)
    phone = ["--wallet", str(tmp_path / "phone"), "--secret-file", str(secret)]
    assert (run := wallet("init", *phone)).returncode == 0, run.stderr
    run = wallet("enrol", *phone, "--server", server.address, "--ca", str(env.directory / "pki" / "ca.pem"),
                 "--api-key-file", str(env.directory / "app.apikey"), "--document-type", "resident_id",
                 "--document-number-file", str(owner_only(tmp_path / "number", number)))
    assert run.returncode == 0, run.stderr

    with Wallet.open(tmp_path / "phone", PASSPHRASE) as phone_wallet:
        held = phone_wallet.credential()
        key = "wallet-crashed-renewal-0001"
        phone_wallet.files.write(phone_wallet.state().with_(pending=Pending("renew", key, held.serial)))
    minted = client.codes.RenewCode(health_codes_pb2.RenewCodeRequest(code_text=held.text, idempotency_key=key),
                                    metadata=auth(env), timeout=10).code  # what the dead process had sent

    run = wallet("renew", *phone)
    assert run.returncode == 0, run.stderr
    with Wallet.open(tmp_path / "phone", PASSPHRASE) as phone_wallet:
        assert phone_wallet.credential().text == minted.code_text  # the first answer, not a second code
        assert phone_wallet.state().pending is None
    live = client.wallets.ListLiveCodes(wallets_pb2.ListLiveCodesRequest(document=document_message(document)),
                                        metadata=auth(env), timeout=10).codes
    assert [c.code.code_text for c in live] == [minted.code_text]  # one live code: the one minted once
    client.close()
