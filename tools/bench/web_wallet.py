"""Benchmark of the phone web wallet (issue 16): ``python -m tools.bench web-wallet``.

The real issuer (``healthcode-issuer serve``, its HTTP listener serving Connect and the wallet's
built files at ``/wallet/``) and Debian's headless Chromium driven by Selenium, on this machine:

* **First load, bytes**: what a phone downloads the first time it opens the page: every file the
  page and its service worker fetch (``index.html``, ``app.js``, ``manifest.webmanifest``,
  ``sw.js``, ``keys.json``, ``config.json``), each as the issuer serves it with
  ``Accept-Encoding: br, gzip`` (the compressed body), and uncompressed for comparison; and the
  browser's own count (Resource Timing ``transferSize`` of the page's requests, headers
  included; the service worker's requests are not in it). Target <= 300 kB compressed.
* **Time to code, offline**: per round, the page opened again with the network off (DevTools
  emulation, the issuer stopped) from its service worker, and the time from navigation start
  to the QR drawn (the page's ``healthcode:code-shown`` mark). The baseline, from the same load:
  first contentful paint (the page's heading, drawn before any script ran). Target <= 1 s.
* **Enrolment online**, once per round with a new resident: from the click to the code shown
  (FindResident, RegisterResident, CreateChallenge, the proof, IssueCredential over Connect
  JSON, the credential checked, the first presentation drawn).

:class:`WalletSite` and :class:`Browser` are also the browser test's
(``tests/integration/test_web_wallet.py``).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import pathlib
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import healthcode as hc
from issuer.auth import generate_api_key, hash_api_key
from issuer.devenv import DevEnvironment, ServerProcess, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIST = ROOT / "webwallet" / "dist"
CHROMIUM, CHROMEDRIVER = pathlib.Path("/usr/bin/chromium"), pathlib.Path("/usr/bin/chromedriver")
UTC = dt.timezone.utc
#: What the page and its service worker fetch on a first visit (docs/web-wallet.md).
FIRST_LOAD = ("index.html", "app.js", "manifest.webmanifest", "sw.js", "keys.json", "config.json")
TARGET_BYTES = 300 * 1000
TARGET_MS = 1000.0


def require_browser() -> None:
    """Fail with the fix when the browser, its driver or the wallet's build is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: ./dev setup installs chromium and chromium-driver")
    if not (DIST / "index.html").is_file():
        raise RuntimeError("webwallet/dist is not built: ./dev setup runs npm ci and the build")


class WalletSite:
    """A local issuer (gRPC and HTTP listeners) serving a copy of webwallet/dist.

    ``/wallet/keys.json`` is the issuer's own key list (``issuer/key_list.py``: nothing is copied
    into the wallet's directory). ``config.json`` carries an API key with the issuer's **wallet role**
    (``wallet_key``: enrolment and the resident's own reads only, docs/web-wallet.md); the issuance
    key (``env.api_key``) stays with the test, as with an app's back end. ``key`` is the issuer's key
    as a terminal's trust data holds it. ``validity_hours`` sets the issuer's code validity;
    ``revocation`` publishes revocations to ``<issuer>/revocation-33`` (directory-only) at once.
    """

    def __init__(self, base: pathlib.Path, *, validity_hours: float | None = None, revocation: bool = False) -> None:
        self.now = dt.datetime.now(UTC).replace(microsecond=0)
        self.env = DevEnvironment.create(base / "issuer", now=self.now)
        public = self.env.public_key
        self.key = hc.TrustedKey(kid=public.key_id(), province=hc.ProvinceCode("33"), public_key=public,
                                 use_from=self.now - dt.timedelta(hours=1), use_until=self.now + dt.timedelta(days=90),
                                 verify_until=self.now + dt.timedelta(days=97))
        self.wallet_dir = base / "wallet"
        shutil.copytree(DIST, self.wallet_dir)
        self.wallet_key = generate_api_key()
        with open(self.env.directory / "callers.toml", "a") as callers:  # 0600, as DevEnvironment made it
            callers.write(f'\n[[callers]]\nname = "web-wallet"\nkey_sha256 = "{hash_api_key(self.wallet_key)}"\n'
                          'role = "wallet"\n')
        (self.wallet_dir / "config.json").write_text(json.dumps({"authorization": f"Bearer {self.wallet_key}"}))
        self.http_port = free_port()
        config = self.env.config_path.read_text()
        head = f"code_validity_hours = {validity_hours}\n" if validity_hours is not None else ""
        config += (f'\n[http]\nenabled = true\naddress = "127.0.0.1:{self.http_port}"\n'
                   f'wallet_dir = "{self.wallet_dir}"\n')
        if revocation:
            config += ('\n[revocation]\ndirectory = "revocation-33"\npush_mode = "directory-only"\n'
                       'min_interval_seconds = 0\n')
        self.env.config_path.write_text(head + config)
        self.url = f"https://127.0.0.1:{self.http_port}/wallet/"
        self.server = ServerProcess(self.env)

    def start(self) -> None:
        """Start (or restart) the issuer process on the same ports."""
        self.server.process = None
        self.server.start()

    def stop(self) -> None:
        if self.server.process is not None and self.server.process.poll() is None:
            self.server.stop()

    def served_sizes(self, name: str) -> tuple[int, int]:
        """(compressed, uncompressed) body bytes of ``/wallet/<name>`` as the issuer serves it."""
        context = ssl.create_default_context(cadata=self.env.ca_pem.decode())
        sizes = []
        for encoding in ("br, gzip", "identity"):
            connection = http.client.HTTPSConnection("127.0.0.1", self.http_port, context=context, timeout=10)
            try:
                connection.request("GET", f"/wallet/{name}", headers={"Accept-Encoding": encoding})
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"/wallet/{name}: HTTP {response.status}")
                sizes.append(len(body))
            finally:
                connection.close()
        return sizes[0], sizes[1]


class Browser:
    """Headless Debian Chromium (Selenium) with a phone-sized window and its own profile.

    ``ca_pem``: a CA the browser trusts besides the system's (the issuer's development CA), put
    in an NSS database under a home directory of the browser's own (``certutil``, Debian's
    libnss3-tools), so that TLS to the issuer is verified as a phone's browser would verify it.
    """

    def __init__(self, profile: pathlib.Path, *, ca_pem: bytes | None = None) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        home = profile.parent / f"{profile.name}-home"
        home.mkdir(parents=True, exist_ok=True)
        if ca_pem is not None:
            _trust_ca(home, ca_pem)
        options = Options()
        options.binary_location = str(CHROMIUM)
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=412,915",
                         f"--user-data-dir={profile}", "--disable-gpu"):
            options.add_argument(argument)
        service = Service(str(CHROMEDRIVER), env={**os.environ, "HOME": str(home)})
        self.driver = webdriver.Chrome(service=service, options=options)

    def close(self) -> None:
        self.driver.quit()

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; the page says: {self.text('error')!r}")

    def text(self, element_id: str) -> str:
        return str(self.js("const e = document.getElementById(arguments[0]); "
                           "return e && !e.hidden ? e.textContent : ''", element_id))

    def step(self) -> int | None:
        value = self.js("return document.getElementById('qr').dataset.step || null")
        return int(value) if value else None

    def serial(self) -> str | None:
        value = self.js("return document.getElementById('qr').dataset.serial || null")
        return str(value) if value else None

    def form_shown(self) -> bool:
        return bool(self.js("return !document.getElementById('enrol').hidden"))

    def offline_ready(self) -> str:
        """The page's "works offline" line: shown once its service worker controls it."""
        return self.text("offline-ready")

    def enrol(self, number: str) -> None:
        """Type the resident ID number into the page's form, submit, and wait for the live code."""
        from selenium.webdriver.common.by import By

        self.wait(self.form_shown, "the enrolment form")
        self.driver.find_element(By.ID, "document-number").send_keys(number)
        self.driver.find_element(By.ID, "enrol-button").click()
        self.wait(self.step, "the live code after enrolment")

    def offline(self, off: bool) -> None:
        """DevTools network emulation: ``off`` cuts the page's network."""
        self.driver.set_network_conditions(offline=off, latency=0, download_throughput=-1, upload_throughput=-1)

    def code_shown_ms(self) -> float:
        """Milliseconds from navigation start to the first QR drawn (the page's mark)."""
        return float(self.js("return performance.getEntriesByName('healthcode:code-shown')[0].startTime"))


def _trust_ca(home: pathlib.Path, ca_pem: bytes) -> None:
    """Chromium on Linux reads the user's NSS database, ``$HOME/.pki/nssdb``: add ``ca_pem`` to it as a TLS CA."""
    if shutil.which("certutil") is None:
        raise RuntimeError("certutil is missing: ./dev setup installs libnss3-tools")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True, exist_ok=True)
    ca = home / "issuer-ca.pem"
    ca.write_bytes(ca_pem)
    for command in (["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"],
                    ["certutil", "-A", "-d", f"sql:{nssdb}", "-n", "healthcode-dev-ca", "-t", "C,,", "-i", str(ca)]):
        subprocess.run(command, check=True, capture_output=True, timeout=30)


def _first_contentful_paint(browser: Browser) -> float:
    return float(browser.wait(lambda: browser.js(
        "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null"),
        "first contentful paint"))


def _transferred(browser: Browser) -> int:
    return int(browser.js("""
        const nav = performance.getEntriesByType('navigation')[0];
        return performance.getEntriesByType('resource').reduce((n, e) => n + e.transferSize, nav.transferSize);"""))


def _resident(seq: int) -> str:
    from issuer.documents import make_resident_id

    return make_resident_id("330106", dt.date(1990, 1, 1) + dt.timedelta(days=seq), seq % 1000)


def run(*, rounds: int = 7, out=sys.stdout, **_ignored: object) -> dict[str, Any]:
    """Start the issuer and the browser, measure, print the Markdown report; return the figures."""
    require_browser()
    with tempfile.TemporaryDirectory(prefix="healthcode-bench-web-wallet-") as tmp:
        base = pathlib.Path(tmp)
        site = WalletSite(base)
        site.start()
        sizes = {name: site.served_sizes(name) for name in FIRST_LOAD}
        figures: dict[str, Any] = {"sizes": sizes, "enrol_ms": [], "code_ms": [], "fcp_ms": [], "transferred": []}
        try:
            for round_ in range(rounds):
                # a new phone: empty cache, no service worker
                browser = Browser(base / f"profile-{round_}", ca_pem=site.env.ca_pem)
                try:
                    _one_round(site, browser, round_, figures)
                finally:
                    browser.close()
        finally:
            site.stop()
    _report(figures, rounds, out)
    return figures


def _one_round(site: WalletSite, browser: Browser, seq: int, figures: dict[str, Any]) -> None:
    """Open the page online, enrol, go offline, open it again: one round's figures."""
    if site.server.process is None or site.server.process.poll() is not None:
        site.start()
    browser.driver.get(site.url)
    browser.wait(browser.form_shown, "the enrolment form")
    figures["transferred"].append(_transferred(browser))
    started = time.perf_counter()
    browser.enrol(_resident(seq))
    figures["enrol_ms"].append((time.perf_counter() - started) * 1000)
    browser.wait(browser.offline_ready, "the service worker")
    browser.offline(True)
    site.stop()
    browser.driver.get(site.url)
    browser.wait(browser.step, "the live code offline")
    figures["code_ms"].append(browser.code_shown_ms())
    figures["fcp_ms"].append(_first_contentful_paint(browser))


def _report(figures: dict[str, Any], rounds: int, out: Any) -> None:
    sizes = figures["sizes"]
    compressed = sum(c for c, _ in sizes.values())
    plain = sum(u for _, u in sizes.values())
    print(f"# Web wallet benchmark  ({platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, headless Chromium, {rounds} rounds, each a new browser profile)\n", file=out)
    print("## First load (bytes the page and its service worker fetch once)\n", file=out)
    print("| file | served compressed (br/gzip) | uncompressed |", file=out)
    print("|---|---:|---:|", file=out)
    for name, (c, u) in sizes.items():
        print(f"| {name} | {c:,} | {u:,} |", file=out)
    print(f"| **total** | **{compressed:,}** | {plain:,} |", file=out)
    transferred = statistics.median(figures["transferred"])
    print(f"\nThe browser's count of the page's own requests (Resource Timing transferSize, headers included, "
          f"median): {transferred:,.0f} bytes.\n", file=out)
    print(f"Target <= 300 kB compressed: **{'met' if compressed <= TARGET_BYTES else 'NOT met'}** "
          f"({compressed / 1000:.1f} kB).\n", file=out)
    print("## Time to code, offline (navigation start to the QR drawn; opened from the service worker)\n",
          file=out)
    print("| measure | median ms | min-max ms |", file=out)
    print("|---|---:|---|", file=out)
    for label, key in (("first contentful paint (baseline: the page's heading)", "fcp_ms"),
                       ("the live code drawn", "code_ms"),
                       ("enrolment online: click to code (4 RPCs over Connect JSON)", "enrol_ms")):
        series = figures[key]
        print(f"| {label} | {statistics.median(series):.0f} | {min(series):.0f}-{max(series):.0f} |", file=out)
    ratios = [c / f for c, f in zip(figures["code_ms"], figures["fcp_ms"])]
    worst = max(figures["code_ms"])
    print(f"\nCode drawn / first paint, median over the rounds: {statistics.median(ratios):.2f}x. "
          f"Target <= 1 s: **{'met' if worst <= TARGET_MS else 'NOT met'}** (slowest {worst:.0f} ms).", file=out)
