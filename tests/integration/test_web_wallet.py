"""The phone web wallet in a real browser: enrol, go offline, scan the screen at the terminal.

Debian's headless Chromium (``/usr/bin/chromium``, driven by ``/usr/bin/chromedriver`` through
Selenium) opens the web wallet served by the REAL issuer (``healthcode-issuer serve`` as a
subprocess, its HTTP listener serving Connect and ``/wallet/`` over TLS that the browser verifies
with the issuer's development CA in its NSS database), enrols with a resident ID
through the page (FindResident / RegisterResident, CreateChallenge, IssueCredential over Connect
JSON, the proof signed by a non-extractable WebCrypto key), and shows the live code. Then the
network goes off (DevTools network emulation, and the issuer is stopped), the page is opened
again from its service worker, a screenshot is taken and the QR is read back from it with the
terminal's image decoder; ``healthcode-verifier`` (a real process, offline, trust data synced
from a development bundle holding the issuer's key and the revocations the issuer published)
judges it. One step later the page shows a new presentation and the old one is stale at the
terminal; a revoked credential is refused after the terminal's next sync; a renewal that cannot
reach the issuer says so on the page, and succeeds once the browser is back online; a credential
the page cannot verify against the key list it was given is neither kept nor shown.

The page's API key has the issuer's wallet role only (issue 16: a key in a public page is public):
it enrols and renews, and cannot issue, renew, revoke or look up a code. Its key list is the
issuer's own, served at ``/wallet/keys.json``.

The site and the browser are the web-wallet benchmark's (tools/bench/web_wallet.py). The issuer
issues credentials valid for 0.03 h (108 s), so that the page's own renewal (from half
the validity on) happens within the test.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import pathlib
import ssl
import subprocess
import sys

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from healthcode.base45 import b45encode
from healthcode.keylist import parse_key_list
from healthcode.presentation import STEP_SECONDS, decode_presentation_unverified
from healthcode.revocation import RevocationState
from healthcode.revocation_format import snapshot_target
from issuer.api import common_pb2, health_codes_pb2
from issuer.client import IssuerClient
from issuer.documents import make_resident_id
from selenium.webdriver.common.by import By
from tests.integration.test_verifier_cli import OFFLINE
from tools.bench.web_wallet import Browser, WalletSite, require_browser
from shellkit.files import write_file_atomically
from verifier.images import decode_image
from verifier.trust_sources import dev_bundle_bytes

UTC = dt.timezone.utc
VALIDITY_HOURS = 0.03  # 108 s: renewal is due 54 s after issuance
TIMEOUT = 60


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Site(WalletSite):
    """The issuer serving the wallet (tools/bench/web_wallet.py), with its revocation job publishing at once."""

    def __init__(self, base: pathlib.Path) -> None:
        super().__init__(base, validity_hours=VALIDITY_HOURS, revocation=True)

    def client(self) -> IssuerClient:
        return IssuerClient(self.server.address, ca_pem=self.env.ca_pem, api_key=self.env.api_key)

    def published_revocations(self) -> list[int]:
        """The serials the issuer's revocation job has published for its key (empty before the first)."""
        path = self.env.directory / "revocation-33" / snapshot_target("33", self.key.kid)
        if not path.exists():
            return []
        return list(RevocationState.from_snapshot(path.read_bytes(), province="33", kid=self.key.kid).serials())


class Terminal:
    """A hospital terminal: ``healthcode-verifier`` processes over one data directory, offline but for ``sync``."""

    def __init__(self, base: pathlib.Path, site: Site) -> None:
        self.site = site
        self.data_dir = base / "terminal"
        self.mirror = base / "mirror"  # what the terminal syncs from (the USB stick, the hospital's mirror)
        self.mirror.mkdir()
        self.version = 0

    def cli(self, *args: str, now: dt.datetime | None = None, offline: bool = True) -> subprocess.CompletedProcess:
        """``healthcode-verifier`` with the development trust bundle; ``offline``: every socket refused."""
        head = [sys.executable, "-c", OFFLINE] if offline else [sys.executable, "-m", "verifier"]
        clock = ["--now", iso(now)] if now is not None else []
        return subprocess.run([*head, "--data-dir", str(self.data_dir), "--dev-trust", "--source", str(self.mirror),
                               *clock, *args], capture_output=True, text=True, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL)

    def sync(self, revoked: list[int]) -> None:
        self.version += 1
        (self.mirror / "bundle.json").write_bytes(dev_bundle_bytes(
            [self.site.key], version=self.version, revoked={("33", self.site.key.kid): revoked}))
        run = self.cli("sync", offline=False)
        assert run.returncode == 0, run.stdout + run.stderr

    def verify_image(self, image: pathlib.Path, now: dt.datetime | None = None) -> dict:
        run = self.cli("verify", "--json", "--image", str(image), now=now)
        assert run.returncode in (0, 1), run.stdout + run.stderr
        record = json.loads(run.stdout)
        assert (run.returncode == 0) == (record["result"] == "valid")
        return record


class Phone(Browser):
    """Headless Chromium (tools/bench/web_wallet.py) that takes screenshots and reads the QR back from them."""

    def __init__(self, base: pathlib.Path, ca_pem: bytes) -> None:
        super().__init__(base / "chromium-profile", ca_pem=ca_pem)
        self.shots = base / "screenshots"
        self.shots.mkdir()

    def screenshot(self, name: str) -> pathlib.Path:
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path))
        return path

    def live_code(self, name: str) -> tuple[str, pathlib.Path]:
        """The text of the one QR on the screen, read back from a screenshot."""
        path = self.screenshot(name)
        (text,) = decode_image(path.read_bytes())
        return text, path


@pytest.fixture
def world(tmp_path):
    require_browser()
    site = Site(tmp_path)
    site.start()
    phone = Phone(tmp_path, site.env.ca_pem)  # the browser trusts the issuer's development CA
    try:
        yield site, Terminal(tmp_path, site), phone
    finally:
        phone.close()
        site.stop()


def resident_number(seq: int) -> str:
    return make_resident_id("330106", dt.date(1986, 3, 14), seq)


def test_enrol_in_the_browser_then_the_terminal_verifies_the_screen_offline(world):
    site, terminal, phone = world
    number = resident_number(201)
    terminal.sync([])  # the terminal's trust data, synced while it was online
    phone.driver.get(site.url)
    phone.enrol(number)
    phone.wait(phone.offline_ready, "the service worker to take over")

    # the device key: a non-extractable P-256 key kept in IndexedDB
    key = phone.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const open = indexedDB.open('healthcode-wallet');
        open.onsuccess = () => {
          const get = open.result.transaction('state').objectStore('state').get('device');
          get.onsuccess = async () => {
            const key = get.result.keyPair.privateKey;
            let exported = true;
            try { await crypto.subtle.exportKey('pkcs8', key); } catch { exported = false; }
            done({extractable: key.extractable, exported, curve: key.algorithm.namedCurve, type: key.type});
          };
        };""")
    assert key == {"extractable": False, "exported": False, "curve": "P-256", "type": "private"}
    stored = phone.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const open = indexedDB.open('healthcode-wallet');
        open.onsuccess = () => {
          const all = open.result.transaction('state').objectStore('state').getAll();
          all.onsuccess = () => done(JSON.stringify(all.result, (k, v) => v instanceof CryptoKey ? '<key>' : v));
        };""")
    assert number not in stored  # the document number is never kept

    # the network goes off: DevTools emulation, and the issuer is gone too
    phone.offline(True)
    site.server.stop()
    phone.driver.get(site.url)  # opened again, from the service worker's cache
    phone.wait(phone.step, "the live code offline")
    shown_ms = phone.js("return performance.getEntriesByName('healthcode:code-shown')[0].startTime")
    assert shown_ms <= 1000, f"the code took {shown_ms:.0f} ms to show offline"
    assert phone.js("return navigator.onLine") is False

    first, first_png = phone.live_code("offline")
    assert first.startswith("EHCD:") and number not in first
    step = decode_presentation_unverified(first).step
    assert step == phone.step()
    record = terminal.verify_image(first_png)
    assert (record["result"], record["kind"], record["step"]) == ("valid", "dynamic", step), record
    serial = record["serial"]
    assert serial == phone.serial()

    # one step later: a new presentation; the old one is stale at the terminal
    phone.wait(lambda: phone.step() == step + 1, "the next step", timeout=STEP_SECONDS + 5)
    second, second_png = phone.live_code("next-step")
    assert second != first and decode_presentation_unverified(second).step == step + 1
    assert terminal.verify_image(second_png)["result"] == "valid"
    later = dt.datetime.fromtimestamp((step + 2) * STEP_SECONDS + 45, UTC)  # 60-90 s window passed for `first`
    stale = terminal.verify_image(first_png, now=later)
    assert (stale["result"], stale["reason"]) == ("invalid", "stale_presentation"), stale

    # the credential is revoked (a lost phone): the terminal refuses it once it has synced
    site.start()
    with site.client() as client:
        credential = "EHC1:" + b45encode(decode_presentation_unverified(second).credential_cose)
        client.codes.RevokeCode(health_codes_pb2.RevokeCodeRequest(
            code_text=credential, reason=common_pb2.REVOCATION_REASON_LOST_DEVICE),
            metadata=(("authorization", f"Bearer {site.env.api_key}"),), timeout=10)
    published = phone.wait(lambda: int(serial) in site.published_revocations() and site.published_revocations(),
                           "the issuer's revocation job to publish")
    third, third_png = phone.live_code("revoked")
    assert terminal.verify_image(third_png)["result"] == "valid"  # not synced yet: the terminal cannot know
    terminal.sync(published)
    refused = terminal.verify_image(third_png)
    assert (refused["result"], refused["reason"]) == ("invalid", "revoked"), refused


def test_the_page_renews_on_its_own_and_says_when_it_cannot(world):
    site, terminal, phone = world
    terminal.sync([])
    phone.driver.get(site.url)
    phone.enrol(resident_number(202))
    phone.wait(phone.offline_ready, "the service worker to take over")
    first_serial = phone.serial()
    assert "自动续期" in phone.text("renewal") and "北京时间" in phone.text("renewal")

    phone.offline(True)
    site.server.stop()
    # from half the validity on, the page tries to renew; offline, it says so and keeps the code
    message = phone.wait(lambda: phone.js("return document.getElementById('renewal').dataset.reason") == "offline"
                         and phone.text("renewal"), "the page to report the failed renewal", timeout=90)
    assert "暂时无法续期" in message and "Cannot renew now: the issuer cannot be reached" in message
    assert "北京时间" in message
    assert phone.serial() == first_serial
    text, png = phone.live_code("renewal-offline")
    assert terminal.verify_image(png)["result"] == "valid"  # the old credential still shows, still valid

    # back online: the page renews at once, and shows the new credential's code
    site.start()
    phone.offline(False)
    phone.wait(lambda: phone.serial() not in (None, first_serial), "the renewed credential", timeout=30)
    assert phone.js("return document.getElementById('renewal').dataset.reason") == ""
    renewed, png = phone.live_code("renewed")
    record = terminal.verify_image(png)
    assert record["result"] == "valid" and record["serial"] == phone.serial() != first_serial
    with site.client() as client:
        old = client.status("EHC1:" + b45encode(decode_presentation_unverified(text).credential_cose))
    assert (old.state, old.revocation_reason) == (common_pb2.CODE_STATE_REVOKED,
                                                  common_pb2.REVOCATION_REASON_SUPERSEDED)


def test_the_page_gets_the_issuers_own_key_list_and_its_key_is_a_wallet_key(world):
    """``/wallet/keys.json`` is the issuer's key list (nothing copied into the wallet's directory), and the
    ``authorization`` the page sends (config.json, public) cannot issue or read a code's status."""
    site, _, _ = world
    assert not (site.wallet_dir / "keys.json").exists()
    context = ssl.create_default_context(cadata=site.env.ca_pem.decode())
    connection = http.client.HTTPSConnection("127.0.0.1", site.http_port, context=context, timeout=10)
    connection.request("GET", "/wallet/keys.json")
    listed = parse_key_list(connection.getresponse().read(), province="33")
    connection.close()
    assert [k.kid for k in listed.keys] == [site.key.kid] and listed.keys[0].public_key == site.key.public_key
    page_key = json.loads((site.wallet_dir / "config.json").read_text())["authorization"]
    with site.client() as client:
        for call, request in ((client.codes.IssueCode, health_codes_pb2.IssueCodeRequest(main_index_id="0" * 26)),
                              (client.codes.GetCodeStatus, health_codes_pb2.GetCodeStatusRequest(code_text="EHC1:X"))):
            with pytest.raises(grpc.RpcError) as err:
                call(request, metadata=(("authorization", page_key),), timeout=10)
            assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED and "wallet role" in err.value.details()


def test_a_credential_the_page_cannot_verify_is_not_kept_and_no_code_is_shown(world):
    """The page holds the key list it was given when it opened; the issuer then signs with another key
    (its signing key replaced while the page was open): the page refuses the credential."""
    site, _, phone = world
    phone.driver.get(site.url)
    phone.wait(phone.form_shown, "the enrolment form")  # the key list is loaded: the issuer's first key
    site.stop()
    other = ec.generate_private_key(ec.SECP256R1())
    write_file_atomically(site.env.directory / "signing.pem", other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    site.start()
    phone.driver.find_element(By.ID, "document-number").send_keys(resident_number(203))
    phone.driver.find_element(By.ID, "enrol-button").click()
    message = phone.wait(lambda: phone.text("error"), "the page's refusal")
    assert "凭证无法验证，不显示健康码" in message and "cannot be verified" in message and "unknown_key" in message
    assert phone.step() is None and phone.js("return document.getElementById('code').hidden") is True
    kept = phone.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const open = indexedDB.open('healthcode-wallet');
        open.onsuccess = () => {
          const get = open.result.transaction('state').objectStore('state').get('credential');
          get.onsuccess = () => done(get.result === undefined ? null : 'kept');
        };""")
    assert kept is None
    assert phone.form_shown()
