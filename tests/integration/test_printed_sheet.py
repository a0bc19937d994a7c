"""The printed sheet a resident keeps, from a real issuer: text layer, scannable codes, reprinting.

The PDF's text is read back with poppler's ``pdftotext`` and its pages are
rasterised with ``pdftoppm`` and scanned with zbar (``verifier.images``), as a
front desk's phone would; ``reprint`` is checked against the issuer's own state.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

import healthcode as hc
from issuer.api import common_pb2
from issuer.batch import JOURNAL
from issuer.client import IssuerClient
from issuer.devenv import DevEnvironment, ServerProcess
from issuer.documents import make_resident_id
from verifier.images import decode_image

ROWS = 7  # two pages at six a page


def _poppler(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} (poppler-utils) is missing; ./dev installs it")
        pytest.skip(f"{tool} (poppler-utils) is not installed")
    return path


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    """One issuer, one batch of ROWS residents printed as a PDF."""
    tmp = tmp_path_factory.mktemp("printed")
    env = DevEnvironment.create(tmp / "issuer", now=dt.datetime.now(dt.timezone.utc))
    numbers = [make_resident_id("330106", dt.date(1948, 5, 1) + dt.timedelta(days=40 * i), 11) for i in range(ROWS)]
    csv_path = tmp / "residents.csv"
    csv_path.write_text("document_type,document_number\n" + "".join(f"resident_id,{n}\n" for n in numbers))
    with ServerProcess(env) as server:
        run = subprocess.run([sys.executable, "-m", "issuer", "batch-issue", str(csv_path), "--server",
                              server.address, "--ca", str(env.directory / "pki" / "ca.pem"), "--api-key-file",
                              str(env.directory / "app.apikey"), "--out", str(tmp / "out")],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        journal = [json.loads(line) for line in (tmp / "out" / JOURNAL).read_text().splitlines()]
        yield env, server, tmp, numbers, journal


def _pdf_text(path) -> str:
    return subprocess.run([_poppler("pdftotext"), "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def test_pdf_has_a_searchable_text_layer_with_everything_a_resident_reads(printed):
    env, _, tmp, numbers, journal = printed
    text = _pdf_text(tmp / "out" / "sheets.pdf")
    expires = dt.datetime.fromisoformat(journal[0]["expires_at"]).astimezone(
        dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M")
    for expected in ("电子健康码 Electronic Health Code", "浙江 Zhejiang (33)",
                     f"有效期至 Valid until {expires} 北京时间 (CST)", "hospital front desk", "身份证件", "No. 7",
                     f"证件号码 Document no. {numbers[0][:3]}{'*' * 11}{numbers[0][-4:]}"):
        assert expected in text, expected
    assert text.count("电子健康码 Electronic Health Code") == ROWS
    assert not any(number in text for number in numbers)  # masked only, never the full number
    assert "EHC1:" not in text


def test_every_code_on_the_pdf_pages_scans_back(printed, tmp_path):
    _, _, tmp, _, journal = printed
    subprocess.run([_poppler("pdftoppm"), "-r", "150", "-gray", "-png", str(tmp / "out" / "sheets.pdf"),
                    str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == 2
    scanned = [text for page in pages for text in decode_image(page)]
    assert sorted(scanned) == sorted(entry["code_text"] for entry in journal)


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_reprint_revokes_the_old_code_and_prints_one_new_valid_code(printed, tmp_path, suffix):
    env, server, _, numbers, journal = printed
    row = 2 if suffix == ".png" else 3
    number_file = tmp_path / "number.txt"
    number_file.write_text(numbers[row - 1] + "\n")
    old_text = next(entry["code_text"] for entry in journal if entry["row"] == row)
    with IssuerClient(server.address, ca_pem=env.ca_pem, api_key=env.api_key) as client:
        previous = client.status(old_text)
        phone = _enrol_a_phone(client, client.status(old_text).main_index_id)
        out = tmp_path / f"reprint{suffix}"
        run = subprocess.run([sys.executable, "-m", "issuer", "reprint", "--server", server.address,
                              "--ca", str(env.directory / "pki" / "ca.pem"),
                              "--api-key-file", str(env.directory / "app.apikey"),
                              "--document-type", "resident_id", "--document-number-file", str(number_file),
                              "--out", str(out)], capture_output=True, text=True, timeout=60,
                             preexec_fn=lambda: os.umask(0o022))
        assert run.returncode == 0, run.stderr
        assert "revoked 1 earlier printed code(s)" in run.stdout and "北京时间 (CST)" in run.stdout
        assert numbers[row - 1] not in run.stdout + run.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        if suffix == ".pdf":
            subprocess.run([_poppler("pdftoppm"), "-r", "150", "-gray", "-png", str(out), str(tmp_path / "p")],
                           check=True)
            assert "补打 Reprint" in _pdf_text(out)
            (image,) = sorted(tmp_path.glob("p-*.png"))
        else:
            image = out
        (new_text,) = decode_image(image)
        assert new_text != old_text
        old, new = client.status(old_text), client.status(new_text)
        assert previous.state == common_pb2.CODE_STATE_VALID
        assert old.state == common_pb2.CODE_STATE_REVOKED and new.state == common_pb2.CODE_STATE_VALID
        assert old.revocation_reason == common_pb2.REVOCATION_REASON_LOST_DEVICE
        assert new.main_index_id == old.main_index_id
        # the resident's phone credential is not the lost sheet: it stays live
        assert client.status(phone.code_text).state == common_pb2.CODE_STATE_VALID
    assert hc.check(new_text, env.keyring(), now=dt.datetime.now(dt.timezone.utc)).valid


def _enrol_a_phone(client, main_index_id):
    """Bind a fresh P-256 phone key to the resident over the Wallets API; the credential."""
    from healthcode.algorithms import generate_signing_key
    from healthcode.presentation import proof_of_possession_input
    from issuer.api import wallets_pb2

    device = generate_signing_key()
    challenge = client.wallets.CreateChallenge(
        wallets_pb2.CreateChallengeRequest(main_index_id=main_index_id), metadata=client._metadata).challenge
    return client.wallets.IssueCredential(wallets_pb2.IssueCredentialRequest(
        main_index_id=main_index_id, challenge=challenge,
        device_key=wallets_pb2.DeviceKey(algorithm=wallets_pb2.DEVICE_KEY_ALGORITHM_ES256,
                                         public_key=device.public_key().spki_der()[-65:]),
        proof=device.sign(proof_of_possession_input(challenge, device.public_key()))),
        metadata=client._metadata).credential


def test_reprint_for_an_unknown_resident_is_one_error_line(printed, tmp_path):
    env, server, _, _, _ = printed
    number_file = tmp_path / "number.txt"
    number_file.write_text(make_resident_id("330106", dt.date(1990, 1, 1), 999))
    run = subprocess.run([sys.executable, "-m", "issuer", "reprint", "--server", server.address,
                          "--ca", str(env.directory / "pki" / "ca.pem"),
                          "--api-key-file", str(env.directory / "app.apikey"),
                          "--document-type", "resident_id", "--document-number-file", str(number_file),
                          "--out", str(tmp_path / "x.pdf")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.startswith("Error: NOT_FOUND: ") and run.stderr.count("\n") == 1, run.stderr
    assert not (tmp_path / "x.pdf").exists()
