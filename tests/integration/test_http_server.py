"""The issuer's HTTP listener around the RPCs (issue 16): the web wallet's files, client certificates,
and ``healthcode-issuer serve --http-listen`` as a real process.

The RPCs themselves, case by case against gRPC, are ``test_http_api.py``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import brotli
import grpc
import pytest

from issuer import auth
from issuer.api import health_codes_pb2, resident_index_pb2
from issuer.http_server import HttpOptions
from issuer.server import IssuerServer, ServerOptions, TlsMaterial
from issuer.service import ServiceSettings
from issuer.tls import DevPki
from shellkit.files import write_file_atomically

from .connect_client import ConnectClient
from .issuer_server_support import (
    APP,
    APP_KEY,
    GOOD_MID,
    PROVINCE,
    ROOT,
    Domain,
    LoopThread,
    bearer,
    doc,
    listening_entry,
    resident_id,
)

rpb, hpb = resident_index_pb2, health_codes_pb2
REGISTER = "/healthcode.issuer.v1.ResidentIndex/RegisterResident"
ISSUE = "/healthcode.issuer.v1.HealthCodes/IssueCode"
WALLET_KEY = "wallet-key-" + "w" * 40
WALLET = bearer(WALLET_KEY)
APP_JS = b"// the wallet\n" + b"console.log('health code');\n" * 200


@pytest.fixture(scope="module")
def pki():
    return DevPki.create(now=dt.datetime.now(dt.timezone.utc))


@pytest.fixture(scope="module")
def served(tmp_path_factory, pki):
    """An issuer with mTLS (over HTTP, a request without a client certificate may take the wallet role only)
    and a built wallet directory."""
    base = tmp_path_factory.mktemp("http-server")
    dist = base / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>健康码</title>" + "<p>wallet</p>" * 100)
    (dist / "assets" / "app.3f9a1c2e.js").write_bytes(APP_JS)
    (dist / "sw.js").write_text("self.addEventListener('fetch', () => {});\n" * 20)
    (dist / "manifest.webmanifest").write_text('{"name": "health code"}')
    (dist / "icon.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 300)
    loop = LoopThread()
    cert = pki.server()
    domain = Domain(base / "issuer.db")
    options = ServerOptions(
        service=ServiceSettings(province=PROVINCE), listen="127.0.0.1:0",
        tls=TlsMaterial(cert.cert_pem, cert.key_pem, pki.ca_cert_pem),
        api_keys=(auth.ApiKey("app", bytes.fromhex(auth.hash_api_key(APP_KEY))),
                  auth.ApiKey("phone", bytes.fromhex(auth.hash_api_key(WALLET_KEY)), role=auth.Role.WALLET)),
        issuance_clients=frozenset({"ops"}), grace=1.0,
        http=HttpOptions(listen="127.0.0.1:0", static_dir=dist),
    )

    async def start():
        return await IssuerServer.start(options, index=domain.index, codes=domain.codes, on_close=domain.close)

    server = loop.run(start())
    keys = pki.write(base / "pki", clients=["ops", "nobody"])
    yield server, keys
    loop.run(server.shutdown(0))
    loop.close()


def _client(served, pki, cert: str | None = None) -> ConnectClient:
    server, keys = served
    client_cert = (str(keys[f"{cert}.pem"]), str(keys[f"{cert}.key"])) if cert else None
    return ConnectClient(server.http_port, pki.ca_cert_pem, "json", client_cert=client_cert)


# --------------------------------------------------------------------------- client certificates


@pytest.mark.parametrize("cert, metadata, path, code", [
    ("ops", (), REGISTER, grpc.StatusCode.OK),                       # an issuance client's certificate, no key
    (None, WALLET, REGISTER, grpc.StatusCode.OK),                    # a phone: no certificate, a wallet key
    ("ops", APP, REGISTER, grpc.StatusCode.OK),                      # both: the key decides (as over gRPC)
    ("nobody", APP, ISSUE, grpc.StatusCode.NOT_FOUND),               # a verified certificate and an issuance key
    (None, APP, REGISTER, grpc.StatusCode.PERMISSION_DENIED),        # an issuance key without a certificate...
    (None, APP, ISSUE, grpc.StatusCode.PERMISSION_DENIED),           # ... whatever it calls
    (None, WALLET, ISSUE, grpc.StatusCode.PERMISSION_DENIED),        # a wallet key outside the wallet's methods
    (None, (), REGISTER, grpc.StatusCode.UNAUTHENTICATED),           # neither
    ("nobody", (), REGISTER, grpc.StatusCode.PERMISSION_DENIED),     # a certificate with no role
])
def test_without_a_client_certificate_only_wallet_keys_are_admitted_over_http(served, pki, cert, metadata, path,
                                                                               code):
    """With a client CA, gRPC requires a certificate on every connection; HTTP lets a phone in without one, so
    there an API key without a verified certificate takes the wallet role only: turning on ``[http]`` must not
    drop the certificate factor of the issuance role."""
    if path == ISSUE:
        request, response_class = hpb.IssueCodeRequest(main_index_id=GOOD_MID), hpb.IssueCodeResponse
    else:
        request, response_class = rpb.RegisterResidentRequest(primary=doc(resident_id())), rpb.RegisterResidentResponse
    outcome = _client(served, pki, cert).call(path, request, response_class, metadata=metadata)
    assert outcome.code is code, outcome.message
    if code is grpc.StatusCode.PERMISSION_DENIED and metadata == APP:
        assert "client certificate is required for the issuance role over HTTP" in outcome.message


def test_a_certificate_from_another_ca_is_refused_in_the_handshake(served, pki, tmp_path):
    other = DevPki.create(now=dt.datetime.now(dt.timezone.utc)).write(tmp_path, clients=["ops"])
    server, _ = served
    client = ConnectClient(server.http_port, pki.ca_cert_pem, "json",
                           client_cert=(str(other["ops.pem"]), str(other["ops.key"])))
    with pytest.raises(OSError):  # ssl.SSLError or a reset: no request is served
        client.call(REGISTER, rpb.RegisterResidentRequest(primary=doc(resident_id())), rpb.RegisterResidentResponse,
                    metadata=APP)


# --------------------------------------------------------------------------- the wallet's files


def _get(served, pki, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    return _client(served, pki).request(method, path, None, headers or {})


def test_wallet_files_have_types_compression_and_cache_headers(served, pki):
    status, headers, body = _get(served, pki, "/wallet/", {"Accept-Encoding": "gzip, br"})
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-encoding"] == "br" and "健康码" in brotli.decompress(body).decode()
    assert headers["cache-control"] == "no-cache" and headers["vary"] == "Accept-Encoding"
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["strict-transport-security"] == "max-age=31536000"  # served over TLS

    status, headers, body = _get(served, pki, "/wallet/assets/app.3f9a1c2e.js", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert headers["content-encoding"] == "gzip" and gzip.decompress(body) == APP_JS
    assert headers["cache-control"] == "public, max-age=31536000, immutable"  # hashed name: cached for good

    status, headers, body = _get(served, pki, "/wallet/assets/app.3f9a1c2e.js")
    assert "content-encoding" not in headers and body == APP_JS  # no Accept-Encoding: as stored

    status, headers, _ = _get(served, pki, "/wallet/sw.js")
    assert headers["cache-control"] == "no-cache" and headers["service-worker-allowed"] == "/wallet/"
    status, headers, _ = _get(served, pki, "/wallet/manifest.webmanifest")
    assert headers["content-type"] == "application/manifest+json"
    status, headers, body = _get(served, pki, "/wallet/icon.png", {"Accept-Encoding": "gzip, br"})
    assert headers["content-type"] == "image/png" and "content-encoding" not in headers


def test_wallet_files_revalidate_with_etags(served, pki):
    _, headers, _ = _get(served, pki, "/wallet/index.html")
    status, again, body = _get(served, pki, "/wallet/index.html", {"If-None-Match": headers["etag"]})
    assert status == 304 and body == b"" and again["etag"] == headers["etag"]
    status, _, _ = _get(served, pki, "/wallet/index.html", {"If-None-Match": '"something-else"'})
    assert status == 200


@pytest.mark.parametrize("path, method, status", [
    ("/wallet", "GET", 308),
    ("/wallet/nope.js", "GET", 404),
    ("/wallet/../issuer.db", "GET", 404),
    ("/wallet/index.html", "POST", 405),
    ("/wallet/index.html", "HEAD", 200),
    ("/", "GET", 404),
])
def test_wallet_paths(served, pki, path, method, status):
    got, headers, body = _get(served, pki, path, method=method)
    assert got == status
    if status == 308:
        assert headers["location"] == "/wallet/"
    if method == "HEAD":
        assert body == b"" and int(headers["content-length"]) > 0


def test_hsts_only_over_tls(tmp_path):
    """``Strict-Transport-Security`` is sent over TLS only: over plaintext (development) a browser ignores it, and
    it must not pin a development host name to HTTPS."""
    import asyncio

    from issuer.http_static import StaticFiles

    (tmp_path / "index.html").write_text("<!doctype html><title>wallet</title>")
    static = StaticFiles(tmp_path, "/wallet/")

    def headers_of(scheme: str) -> dict[bytes, bytes]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "scheme": scheme, "method": "GET", "path": "/wallet/", "headers": []}
        asyncio.run(static(scope, None, send))
        assert sent[0]["status"] == 200
        return dict(sent[0]["headers"])

    assert headers_of("https")[b"strict-transport-security"] == b"max-age=31536000"
    assert b"strict-transport-security" not in headers_of("http")


# --------------------------------------------------------------------------- the CLI


def test_cli_serve_with_http_listen(tmp_path, pki):
    """``healthcode-issuer serve --http-listen 127.0.0.1:0`` in a real process: the listening line names the
    HTTP port, Connect JSON registers a resident, the RPC is logged once without identifiers, SIGTERM stops."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pki.write(tmp_path / "pki")
    key = ec.generate_private_key(ec.SECP256R1())
    write_file_atomically(tmp_path / "signing.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    write_file_atomically(tmp_path / "vault.key", os.urandom(32).hex().encode() + b"\n")
    write_file_atomically(
        tmp_path / "callers.toml", f'[[callers]]\nname = "app"\nkey_sha256 = "{auth.hash_api_key(APP_KEY)}"\n'.encode())
    (tmp_path / "issuer.toml").write_text(
        'province = "33"\ndatabase = "issuer.db"\nlisten = "127.0.0.1:0"\n'
        '[tls]\ncert = "pki/server.pem"\nkey = "pki/server.key"\n'
        '[auth]\napi_keys = "callers.toml"\n'
        '[keys]\nsigning_key = "signing.pem"\nvault_key = "vault.key"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "issuer", "serve", "--config", str(tmp_path / "issuer.toml"),
         "--http-listen", "127.0.0.1:0"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE, text=True)
    try:
        http_port = listening_entry(proc)["http_port"]
        assert http_port
        number = resident_id()
        outcome = ConnectClient(http_port, pki.ca_cert_pem, "json").call(
            REGISTER, rpb.RegisterResidentRequest(primary=doc(number)), rpb.RegisterResidentResponse, metadata=APP)
        assert outcome.code is grpc.StatusCode.OK
        mid = outcome.response.main_index_id
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        entries = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
        rpcs = [e for e in entries if e.get("event") == "rpc"]
        assert [(e["method"], e["caller"], e["code"]) for e in rpcs] == [
            ("healthcode.issuer.v1.ResidentIndex/RegisterResident", "app", "OK")]
        assert "stopped" in [e.get("event") for e in entries]
        assert number not in rest and mid not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- configuration


def _config(tmp_path, http: str):
    from issuer.config import load_config

    path = tmp_path / "conf" / "issuer.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text('province = "33"\ndatabase = "i.db"\n[tls]\ncert = "c.pem"\nkey = "k.pem"\n'
                    '[auth]\napi_keys = "callers.toml"\n[keys]\nsigning_key = "s.pem"\nvault_key = "v.key"\n' + http)
    return load_config(path)


def test_http_config_section(tmp_path):
    from issuer.app import _http_options
    from issuer.config import ConfigError

    off = _config(tmp_path, "")
    assert not off.http_enabled and _http_options(off) is None  # off unless asked for
    (tmp_path / "conf" / "dist").mkdir()
    on = _config(tmp_path, '[http]\nenabled = true\naddress = "0.0.0.0:8443"\nwallet_dir = "dist"\n')
    options = _http_options(on)
    assert options.listen == "0.0.0.0:8443" and options.static_dir == tmp_path / "conf" / "dist"  # file-relative
    with pytest.raises(ConfigError, match="http.address"):
        _config(tmp_path, '[http]\naddress = "8443"\n')
    with pytest.raises(ConfigError, match="wrong type"):
        _config(tmp_path, '[http]\nenabled = "yes"\n')
    with pytest.raises(ConfigError, match="unknown setting http.port"):
        _config(tmp_path, '[http]\nport = 8443\n')
    missing = _config(tmp_path, '[http]\nenabled = true\nwallet_dir = "no-such-dir"\n')
    with pytest.raises(ConfigError, match="not a directory"):
        _http_options(missing)


def test_a_busy_http_port_fails_the_start(tmp_path, pki):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    loop = LoopThread()
    domain = Domain(tmp_path / "issuer.db")
    cert = pki.server()
    options = ServerOptions(
        service=ServiceSettings(province=PROVINCE), listen="127.0.0.1:0",
        tls=TlsMaterial(cert.cert_pem, cert.key_pem, None),
        api_keys=(auth.ApiKey("app", bytes.fromhex(auth.hash_api_key(APP_KEY))),), grace=0.5,
        http=HttpOptions(listen=f"127.0.0.1:{busy.getsockname()[1]}"))

    async def start():
        return await IssuerServer.start(options, index=domain.index, codes=domain.codes)

    try:
        with pytest.raises(OSError):
            loop.run(start())
    finally:
        busy.close()
        domain.close()
        loop.close()


# --------------------------------------------------------------------------- the wallet's key list


def _trusted_now(key_set, now):
    from healthcode.keylist import KeyList

    return KeyList(province="33", serial=key_set.revision, keys=key_set.trusted_keys(now))


def test_the_served_key_list_of_a_fixed_key_and_of_a_changing_key_set():
    """:class:`issuer.key_list.ServedKeyList`: one fixed key (serial 1, the issuer's own 2000-2999 window), and a
    key set (serial = revision, the keys ``healthcode-keys province publish`` would sign), made again when the
    key set changes or a key's status at ``now`` does, and only then."""
    import healthcode as hc
    from healthcode.keylist import parse_key_list
    from issuer.key_list import FIXED_KEY_FROM, FIXED_KEY_UNTIL, ServedKeyList
    from keys.lifecycle import ProvinceKeySet
    from keys.managed_key import RotationPolicy

    fixed = hc.SoftwareSigner(hc.generate_signing_key(hc.Algorithm.ES256))
    served = parse_key_list(ServedKeyList(fixed, province="33", clock=lambda: dt.datetime.now(dt.timezone.utc))
                            .current(), province="33")
    (key,) = served.keys
    assert served.serial == 1 and (key.kid, key.use_from, key.verify_until) == (fixed.kid, FIXED_KEY_FROM,
                                                                                FIXED_KEY_UNTIL)

    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    day = dt.timedelta(days=1)
    first = hc.generate_signing_key(hc.Algorithm.ES256).public_key()
    second = hc.generate_signing_key(hc.Algorithm.ES256).public_key()
    key_set = ProvinceKeySet("33", RotationPolicy()).add_prepublished(first, use_from=t0, now=t0)

    class Signer:  # what ServedKeyList reads of a RotatingSigner: its current key set
        pass

    signer, now = Signer(), [t0 + day]
    signer.key_set = key_set
    source = ServedKeyList(signer, province="33", clock=lambda: now[0])
    one = source.current()
    assert one == _trusted_now(key_set, now[0]).to_bytes() and source.current() is one  # cached
    signer.key_set = key_set.add_prepublished(second, use_from=t0 + 20 * day, now=t0 + day)  # a rotation
    two = source.current()
    listed = parse_key_list(two, province="33")
    assert listed.serial == key_set.revision + 1 and [k.kid for k in listed.keys] == [first.key_id(),
                                                                                       second.key_id()]
    now[0] = t0 + 400 * day  # the first key is past its use (retired), later past its verify_until
    three = source.current()
    assert three != two and three == _trusted_now(signer.key_set, now[0]).to_bytes()


def test_serve_serves_its_own_key_list_at_wallet_keys_json_and_follows_a_rotation(tmp_path, pki):
    """``healthcode-issuer serve`` with a rotating key set and ``[http]``: ``/wallet/keys.json`` is the issuer's
    key list (a stale ``keys.json`` in the wallet directory is not served), and after a rotation and SIGHUP the
    page gets the new key, under a higher serial and a new ETag."""
    import healthcode as hc
    from healthcode.keylist import parse_key_list
    from keys.key_set_file import load_key_set, save_key_set
    from keys.keystore import FileKeystore, ScryptParams
    from keys.lifecycle import ProvinceKeySet
    from keys.managed_key import RotationPolicy
    from keys.province_keys import ProvinceKeyAdmin

    passphrase = b"keys-json passphrase"
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    store = FileKeystore(tmp_path / "keys", passphrase, scrypt=ScryptParams(n=2**10, r=8, p=1))
    first = store.generate(hc.Algorithm.ES256, label="33-first")
    key_set = ProvinceKeySet("33", RotationPolicy()).add_prepublished(
        store.public_key(first), handle=first, use_from=now - dt.timedelta(days=1), now=now - dt.timedelta(days=1))
    save_key_set(tmp_path / "key-set-33.json", key_set)
    pki.write(tmp_path / "pki")
    write_file_atomically(tmp_path / "vault.key", os.urandom(32).hex().encode() + b"\n")
    write_file_atomically(
        tmp_path / "callers.toml", f'[[callers]]\nname = "app"\nkey_sha256 = "{auth.hash_api_key(APP_KEY)}"\n'.encode())
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "index.html").write_text("<!doctype html><title>wallet</title>")
    (tmp_path / "dist" / "keys.json").write_text('{"stale": "a copied file"}')
    (tmp_path / "issuer.toml").write_text(
        'province = "33"\ndatabase = "issuer.db"\nlisten = "127.0.0.1:0"\n'
        '[tls]\ncert = "pki/server.pem"\nkey = "pki/server.key"\n'
        '[auth]\napi_keys = "callers.toml"\n'
        '[keys]\nkey_set = "key-set-33.json"\nkey_set_check_seconds = 3600\nkeystore_dir = "keys"\n'
        'signing_key_passphrase_env = "HC_TEST_KEYSTORE"\nvault_key = "vault.key"\n'
        '[http]\nenabled = true\naddress = "127.0.0.1:0"\nwallet_dir = "dist"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "issuer", "serve", "--config", str(tmp_path / "issuer.toml")],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT), HC_TEST_KEYSTORE=passphrase.decode()),
        stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        http_port = listening_entry(proc, seen=lines)["http_port"]
        assert http_port
        client = ConnectClient(http_port, pki.ca_cert_pem, "json")

        status, headers, body = client.request("GET", "/wallet/keys.json", None, {})
        assert status == 200 and headers["content-type"] == "application/json"
        assert headers["cache-control"] == "no-cache"  # the page and its service worker revalidate it
        served = parse_key_list(body, province="33")
        assert body == _trusted_now(key_set, now).to_bytes()  # what publish would sign, serial = revision
        assert [k.kid for k in served.keys] == [first.kid] and served.serial == key_set.revision
        assert client.request("GET", "/wallet/keys.json", None, {"If-None-Match": headers["etag"]})[0] == 304

        # a rotation (as `healthcode-keys province key generate 33 --rotate` does it), then SIGHUP
        outcome = ProvinceKeyAdmin(province="33", key_set_path=tmp_path / "key-set-33.json",
                                   keystore=store).add_key(now, rotate=True)
        rotated = load_key_set(tmp_path / "key-set-33.json")
        assert rotated.revision == key_set.revision + 1
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        status = 304  # unchanged until the issuer has re-read its key set
        while status == 304 and time.monotonic() < deadline:
            time.sleep(0.05)
            status, again, body = client.request("GET", "/wallet/keys.json", None,
                                                 {"If-None-Match": headers["etag"], "Accept-Encoding": "identity"})
        assert status == 200 and again["etag"] != headers["etag"]
        listed = parse_key_list(body, province="33")
        assert listed.serial == rotated.revision > served.serial
        assert [k.kid for k in listed.keys] == [first.kid, outcome.key.kid]
        client.close()
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "static_file_shadowed" in "".join(lines) + rest  # the copied file was named, not served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
