"""The phone web wallet in a real browser: enrol, go offline, scan the screen at the terminal.

Debian's headless Chromium (``/usr/bin/chromium``, driven by ``/usr/bin/chromedriver`` through
Selenium) opens the web wallet served by the REAL issuer (``healthcode-issuer serve`` as a
subprocess, its HTTP listener serving Connect and ``/wallet/``), enrols with a resident ID
through the page (FindResident / RegisterResident, CreateChallenge, IssueCredential over Connect
JSON, the proof signed by a non-extractable WebCrypto key), and shows the live code. Then the
network goes off (DevTools network emulation, and the issuer is stopped), the page is opened
again from its service worker, a screenshot is taken and the QR is read back from it with the
terminal's image decoder; ``healthcode-verifier`` (a real process, offline, trust data synced
from a development bundle holding the issuer's key and the revocations the issuer published)
judges it. One step later the page shows a new presentation and the old one is stale at the
terminal; a revoked credential is refused after the terminal's next sync; a renewal that cannot
reach the issuer says so on the page, and succeeds once the browser is back online.

The issuer issues credentials valid for 0.03 h (108 s), so that the page's own renewal (from half
the validity on) happens within the test.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

import healthcode as hc
from healthcode.base45 import b45encode
from healthcode.keylist import KeyList
from healthcode.presentation import STEP_SECONDS, decode_presentation_unverified
from healthcode.revocation import RevocationState
from healthcode.revocation_format import snapshot_target
from issuer.api import common_pb2, health_codes_pb2
from issuer.client import IssuerClient
from issuer.devenv import DevEnvironment, ServerProcess, free_port
from issuer.documents import make_resident_id
from tests.integration.test_verifier_cli import OFFLINE
from verifier.images import decode_image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from verifier.trust_sources import dev_bundle_bytes

UTC = dt.timezone.utc
ROOT = pathlib.Path(__file__).resolve().parents[2]
DIST = ROOT / "webwallet" / "dist"
CHROMIUM, CHROMEDRIVER = pathlib.Path("/usr/bin/chromium"), pathlib.Path("/usr/bin/chromedriver")
VALIDITY_HOURS = 0.03  # 108 s: renewal is due 54 s after issuance
TIMEOUT = 60


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    assert not missing, f"missing {', '.join(missing)}: ./dev setup installs chromium and chromium-driver"
    assert (DIST / "index.html").is_file(), "webwallet/dist is not built: ./dev setup runs npm ci and the build"


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Site:
    """The issuer (gRPC and HTTP listeners) serving a copy of webwallet/dist with its key list."""

    def __init__(self, base: pathlib.Path) -> None:
        self.now = dt.datetime.now(UTC).replace(microsecond=0)
        self.env = DevEnvironment.create(base / "issuer", now=self.now)
        public = self.env.public_key
        self.key = hc.TrustedKey(kid=public.key_id(), province="33", public_key=public,
                                 use_from=self.now - dt.timedelta(hours=1), use_until=self.now + dt.timedelta(days=90),
                                 verify_until=self.now + dt.timedelta(days=97))
        self.wallet_dir = base / "wallet"
        shutil.copytree(DIST, self.wallet_dir)
        # the trust data served with the page: the province's key list, as the trust repository has it
        (self.wallet_dir / "keys.json").write_bytes(KeyList(province="33", serial=1, keys=(self.key,)).to_bytes())
        # development only: the page sends the app's issuance key itself (docs/web-wallet.md: in
        # production the app's back end adds it and the page carries no credential)
        (self.wallet_dir / "config.json").write_text(json.dumps({"authorization": f"Bearer {self.env.api_key}"}))
        self.http_port = free_port()
        config = self.env.config_path.read_text()
        self.env.config_path.write_text(
            f"code_validity_hours = {VALIDITY_HOURS}\n" + config +
            f'\n[http]\nenabled = true\naddress = "127.0.0.1:{self.http_port}"\nwallet_dir = "{self.wallet_dir}"\n'
            '\n[revocation]\ndirectory = "revocation-33"\npush_mode = "directory-only"\nmin_interval_seconds = 0\n')
        self.url = f"https://127.0.0.1:{self.http_port}/wallet/"
        self.server = ServerProcess(self.env)

    def start(self) -> None:
        self.server.process = None
        self.server.start()

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


class Phone:
    """Headless Chromium with a phone-sized window and its own profile (IndexedDB, service worker)."""

    def __init__(self, base: pathlib.Path) -> None:
        options = Options()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=412,915",
                         f"--user-data-dir={base / 'chromium-profile'}", "--disable-gpu",
                         # the issuer's development CA is not in the browser's store
                         "--ignore-certificate-errors"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.shots = base / "screenshots"
        self.shots.mkdir()

    def close(self) -> None:
        self.driver.quit()

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, predicate, what: str, timeout: float = TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; the page says: {self.text('error')!r}")

    def text(self, element_id: str) -> str:
        return self.js("const e = document.getElementById(arguments[0]); return e && !e.hidden ? e.textContent : ''",
                       element_id)

    def step(self) -> int | None:
        value = self.js("return document.getElementById('qr').dataset.step || null")
        return int(value) if value else None

    def serial(self) -> str | None:
        return self.js("return document.getElementById('qr').dataset.serial || null")

    def enrol(self, number: str) -> None:
        self.wait(lambda: self.js("return !document.getElementById('enrol').hidden"), "the enrolment form")
        self.driver.find_element(By.ID, "document-number").send_keys(number)
        self.driver.find_element(By.ID, "enrol-button").click()
        self.wait(self.step, "the live code after enrolment")

    def offline(self, off: bool) -> None:
        self.driver.set_network_conditions(offline=off, latency=0, download_throughput=-1, upload_throughput=-1)

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
    _require_browser()
    site = Site(tmp_path)
    site.start()
    phone = Phone(tmp_path)
    try:
        yield site, Terminal(tmp_path, site), phone
    finally:
        phone.close()
        if site.server.process is not None and site.server.process.poll() is None:
            site.server.stop()


def resident_number(seq: int) -> str:
    return make_resident_id("330106", dt.date(1986, 3, 14), seq)


def test_enrol_in_the_browser_then_the_terminal_verifies_the_screen_offline(world):
    site, terminal, phone = world
    number = resident_number(201)
    terminal.sync([])  # the terminal's trust data, synced while it was online
    phone.driver.get(site.url)
    phone.enrol(number)
    phone.wait(lambda: phone.text("offline-ready"), "the service worker to take over")

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
    phone.wait(lambda: phone.text("offline-ready"), "the service worker to take over")
    first_serial = phone.serial()
    assert "自动续期" in phone.text("renewal") and "北京时间" in phone.text("renewal")

    phone.offline(True)
    site.server.stop()
    # from half the validity on, the page tries to renew; offline, it says so and keeps the code
    message = phone.wait(lambda: phone.js("return document.getElementById('renewal').dataset.reason") == "offline"
                         and phone.text("renewal"), "the page to report the failed renewal", timeout=90)
    assert "无法连接签发机构" in message and "Cannot reach the issuer" in message and "北京时间" in message
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
