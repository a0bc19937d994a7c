"""SM2 device keys end to end with real processes: a province that allows them, and one that does not.

``healthcode-issuer serve`` runs as a subprocess (``issuer.devenv``) with
``[wallets] device_key_algorithms = ["ES256", "SM2"]``; ``healthcode-wallet``
creates an SM2 device key (file keystore) and enrols over gRPC with an SM2-SM3
proof of possession; the terminal is ``healthcode-verifier`` as a process,
offline, with the issuer's key from a development trust bundle: the phone's
live code is valid, and the same text is stale two minutes later. An issuer
with the default configuration (ES256 only) refuses the same wallet's
enrolment on ``device_key.algorithm``, naming the allowed algorithm, and
stores nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("gmalglib", reason="SM2 needs the 'sm2' extra (gmalglib)")

from healthcode import Algorithm  # noqa: E402
from healthcode import presentation as hp  # noqa: E402
from issuer.client import IssuerClient  # noqa: E402
from issuer.devenv import DevEnvironment, ServerProcess  # noqa: E402
from issuer.documents import make_resident_id, parse_document  # noqa: E402
from verifier.trust_sources import DEV_BUNDLE_NAME, dev_bundle_bytes  # noqa: E402
from wallet import Wallet  # noqa: E402

from .wallet_cli_support import ROOT, owner_only, wallet  # noqa: E402

UTC = dt.timezone.utc
PASSPHRASE = "correct horse battery"


def terminal(env: DevEnvironment, data_dir: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """``healthcode-verifier`` with the issuer's key from an unsigned development bundle."""
    mirror = data_dir.parent / "mirror"
    if not mirror.exists():
        mirror.mkdir()
        (mirror / DEV_BUNDLE_NAME).write_bytes(dev_bundle_bytes(env.keyring(), version=1))
    head = [sys.executable, "-m", "verifier", "--data-dir", str(data_dir), "--dev-trust", "--source", str(mirror)]
    return subprocess.run([*head, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def enrolment(tmp_path: pathlib.Path, server: ServerProcess, env: DevEnvironment, number: str) -> list[str]:
    number_file = owner_only(tmp_path / "document-number", number)
    return ["--server", server.address, "--ca", str(env.directory / "pki" / "ca.pem"),
            "--api-key-file", str(env.directory / "app.apikey"),
            "--document-type", "resident_id", "--document-number-file", str(number_file)]


def register(env: DevEnvironment, server: ServerProcess, number: str) -> None:
    client = IssuerClient(server.address, ca_pem=env.ca_pem, api_key=env.api_key)
    try:
        client.find_or_register(parse_document("resident_id", number, today=dt.date.today()))
    finally:
        client.close()


def test_an_sm2_phone_enrols_where_the_province_allows_it_and_verifies_at_the_terminal(tmp_path):
    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(UTC))
    with env.config_path.open("a") as f:
        f.write('\n[wallets]\ndevice_key_algorithms = ["ES256", "SM2"]\n')
    number = make_resident_id("330106", dt.date(1980, 5, 17), 123)
    secret = owner_only(tmp_path / "passphrase", PASSPHRASE)
    phone = ["--wallet", str(tmp_path / "phone"), "--secret-file", str(secret)]
    with ServerProcess(env) as server:
        register(env, server, number)
        run = wallet("init", *phone, "--algorithm", "SM2")
        assert run.returncode == 0 and "Device key: SM2 in the file keystore" in run.stdout, run.stderr
        run = wallet("enrol", *phone, *enrolment(tmp_path, server, env, number))
        assert run.returncode == 0 and "Enrolled" in run.stdout, run.stderr
        assert number not in run.stdout + run.stderr
    status = wallet("status", "--wallet", str(tmp_path / "phone"))
    assert status.returncode == 0 and "Device key: SM2, file keystore" in status.stdout, status.stderr

    # the credential binds the phone's SM2 key (crv -65537); the presentation is made offline
    with Wallet.open(tmp_path / "phone", PASSPHRASE) as phone_wallet:
        held = phone_wallet.credential()
        now = dt.datetime.now(UTC)
        text = phone_wallet.present(now)
        point = phone_wallet.device.public_point()
    verified = hp.verify_presentation(text, env.keyring(), now=now)
    assert verified.credential.holder_key == hp.holder_cnf(point, Algorithm.SM2_SM3)
    assert verified.credential.holder_key[1][-1] == -65537 and verified.credential.serial == held.serial

    # the terminal, a real process with the issuer's key and no network to the issuer (it is stopped)
    data_dir = tmp_path / "terminal"
    assert (run := terminal(env, data_dir, "sync")).returncode == 0, run.stderr
    run = terminal(env, data_dir, "verify", "--json", text)
    record = json.loads(run.stdout)
    assert run.returncode == 0 and record["result"] == "valid", run.stdout + run.stderr
    assert (record["serial"], record["kind"]) == (str(held.serial), "dynamic") and number not in run.stdout
    later = (now + dt.timedelta(seconds=120)).strftime("%Y-%m-%dT%H:%M:%SZ")
    run = terminal(env, data_dir, "--now", later, "verify", "--json", text)
    assert run.returncode == 1 and json.loads(run.stdout)["reason"] == "stale_presentation", run.stdout
    run = terminal(env, data_dir, "verify", "--json", held.text)  # the credential alone: a copy
    assert run.returncode == 1 and json.loads(run.stdout)["reason"] == "presentation_required", run.stdout


def test_a_province_without_sm2_refuses_an_sm2_phone_naming_what_it_allows(tmp_path):
    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(UTC))  # default: ES256 only
    number = make_resident_id("330106", dt.date(1981, 6, 18), 124)
    secret = owner_only(tmp_path / "passphrase", PASSPHRASE)
    phone = ["--wallet", str(tmp_path / "phone"), "--secret-file", str(secret)]
    with ServerProcess(env) as server:
        register(env, server, number)
        assert (run := wallet("init", *phone, "--algorithm", "SM2")).returncode == 0, run.stderr
        run = wallet("enrol", *phone, *enrolment(tmp_path, server, env, number))
        assert run.returncode == 1, run.stdout + run.stderr
        assert "device_key.algorithm" in run.stderr and "allowed: ES256" in run.stderr, run.stderr
        assert number not in run.stdout + run.stderr
    with Wallet.open(tmp_path / "phone", PASSPHRASE) as phone_wallet:
        assert phone_wallet.state().credential is None
