"""The issuer's gRPC server as operated: metrics, JSON logs, ``healthcode-issuer serve``, configuration, secrets."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from issuer import auth
from issuer.logs import JsonFormatter
from shellkit.files import write_file_atomically
from .issuer_server_support import APP, APP_KEY, Client, ROOT, bearer, doc, hpb, listening_entry, resident_id, rpb
from .issuer_server_support import harness, loop, pki, served  # noqa: F401 - fixtures


# --------------------------------------------------------------------------- metrics and logs


def test_metrics_endpoint_exposes_counters(served):  # noqa: F811 - the imported fixture
    server, _, client = served
    mid = client.register()
    client.issue(mid)
    with pytest.raises(grpc.RpcError):
        client.codes.IssueCode(hpb.IssueCodeRequest(), metadata=APP)
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    issued = re.search(r'^healthcode_issuer_codes_issued_total\{province="33"\} (\S+)$', text, re.M)
    assert issued and float(issued.group(1)) >= 1
    assert re.search(r'^healthcode_issuer_rpcs_total\{code="OK",method="healthcode.issuer.v1.HealthCodes/IssueCode"\} ',
                     text, re.M)
    assert re.search(r'^healthcode_issuer_rpcs_total\{code="INVALID_ARGUMENT",'
                     r'method="healthcode.issuer.v1.HealthCodes/IssueCode"\} ', text, re.M)
    assert re.search(r'^healthcode_issuer_rpc_latency_seconds_bucket\{le="0.05",'
                     r'method="healthcode.issuer.v1.HealthCodes/IssueCode"\} ', text, re.M)
    assert "grpc.health.v1" not in text  # health checks are neither counted nor logged


def test_logs_are_json_lines_without_identifiers(served, caplog):  # noqa: F811 - the imported fixture
    _, _, client = served
    primary = doc(resident_id())
    with caplog.at_level(logging.INFO):
        mid = client.register(primary)
        code = client.issue(mid, key="log-test-0001")
        client.index.FindResident(rpb.FindResidentRequest(document=primary), metadata=APP)
        with pytest.raises(grpc.RpcError):
            client.index.RegisterResident(rpb.RegisterResidentRequest(primary=doc(primary.number[:-1] + "0"
                                                                                  if primary.number[-1] != "0"
                                                                                  else primary.number[:-1] + "1")),
                                          metadata=APP)
        with pytest.raises(grpc.RpcError):
            client.index.FindResident(rpb.FindResidentRequest(document=primary), metadata=bearer("bad"))
        time.sleep(0.1)  # the server logs after sending the response
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    rpc_lines = [json.loads(line) for line in lines if '"event":"rpc"' in line]
    assert {(line["method"], line["caller"], line["code"]) for line in rpc_lines} >= {
        ("healthcode.issuer.v1.ResidentIndex/RegisterResident", "app", "OK"),
        ("healthcode.issuer.v1.HealthCodes/IssueCode", "app", "OK"),
        ("healthcode.issuer.v1.ResidentIndex/RegisterResident", "app", "INVALID_ARGUMENT"),
        ("healthcode.issuer.v1.ResidentIndex/FindResident", None, "UNAUTHENTICATED"),
    }
    assert all(isinstance(line["latency_ms"], float) for line in rpc_lines)
    secrets = [primary.number, primary.number[:-1], mid, code.code_text, code.code_text[5:40], APP_KEY]
    for line in lines:
        for secret in secrets:
            assert secret not in line


# --------------------------------------------------------------------------- the CLI


def test_cli_serve_from_config_file_and_sigterm(tmp_path, pki):  # noqa: F811 - the imported fixture
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = pki.write(tmp_path / "pki")
    key = ec.generate_private_key(ec.SECP256R1())
    write_file_atomically(tmp_path / "signing.pem", key.private_bytes(  # secrets are owner-only (0600)
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse"),
    ))
    write_file_atomically(tmp_path / "vault.key", os.urandom(32).hex().encode() + b"\n")
    write_file_atomically(
        tmp_path / "callers.toml", f'[[callers]]\nname = "app"\nkey_sha256 = "{auth.hash_api_key(APP_KEY)}"\n'.encode()
    )
    (tmp_path / "issuer.toml").write_text(
        'province = "33"\ndatabase = "issuer.db"\nlisten = "127.0.0.1:1"\n'
        '[tls]\ncert = "pki/server.pem"\nkey = "pki/server.key"\n'
        '[auth]\napi_keys = "callers.toml"\n'
        '[keys]\nsigning_key = "signing.pem"\nsigning_key_passphrase_env = "TEST_HC_PASSPHRASE"\n'
        'vault_key = "vault.key"\n'
    )
    env = dict(os.environ, TEST_HC_PASSPHRASE="correct horse", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "issuer", "serve", "--config", str(tmp_path / "issuer.toml"),
         "--listen", "127.0.0.1:0"],  # the flag overrides the file
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = listening_entry(proc)["port"]
        client = Client(port, pki)
        try:
            mid = client.register()
            code = client.issue(mid, key="cli-test-0001")
            assert code.code_text.startswith("EHC1:")
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        events = [json.loads(line).get("event") for line in rest.splitlines() if line.startswith("{")]
        assert "stopped" in events
        assert mid not in rest and "cli-test-0001" not in rest
        assert paths["server.key"].stat().st_mode & 0o777 == 0o600
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- configuration


def _write_config(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "conf" / "issuer.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


BASE_CONFIG = (
    'province = "33"\ndatabase = "db/issuer.db"\n'
    '[tls]\ncert = "server.pem"\nkey = "/abs/server.key"\n'
    '[auth]\napi_keys = "callers.toml"\nrate = 5\n'
    '[keys]\nsigning_key = "k.pem"\nvault_key = "v.key"\n'
    '[metrics]\nport = 9464\n'
)


def test_config_file_and_flags(tmp_path):
    from issuer.config import load_config

    path = _write_config(tmp_path, BASE_CONFIG)
    config = load_config(path, {"listen": "0.0.0.0:6000", "rate": None, "burst": 9.0})
    assert config.database == path.parent / "db/issuer.db"  # relative to the file
    assert config.tls_key == pathlib.Path("/abs/server.key")
    assert (config.listen, config.rate, config.burst, config.metrics_port) == ("0.0.0.0:6000", 5.0, 9.0, 9464)
    assert config.code_validity == dt.timedelta(days=7)
    assert load_config(None, {"province": "11", "database": pathlib.Path("x.db"), "signing_key": pathlib.Path("k"),
                              "vault_key": pathlib.Path("v"), "insecure_dev_plaintext": True,
                              "api_keys": pathlib.Path("c.toml")}).insecure_dev_plaintext


@pytest.mark.parametrize("text, flags, message", [
    ("insecure_dev_plaintext = true\n" + BASE_CONFIG, {}, "unknown setting insecure_dev_plaintext"),
    (BASE_CONFIG.replace('cert = "server.pem"\n', ""), {}, "tls.cert and tls.key"),
    (BASE_CONFIG.replace('api_keys = "callers.toml"\n', ""), {}, "no way to authenticate"),
    (BASE_CONFIG.replace('province = "33"', 'province = "99"'), {}, "province"),
    (BASE_CONFIG.replace("rate = 5", "rate = 'fast'"), {}, "auth.rate has the wrong type"),
    (BASE_CONFIG, {"listen": "nohost"}, "listen must be host:port"),
    (BASE_CONFIG.replace('[keys]\nsigning_key = "k.pem"\n', "[keys]\n"), {}, "missing settings: signing_key"),
    ("[tls\n", {}, "not valid TOML"),
], ids=["plaintext-in-file", "no-cert", "no-auth", "province", "type", "listen", "missing", "toml"])
def test_config_errors(tmp_path, text, flags, message):
    from issuer.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config(_write_config(tmp_path, text), flags)


def test_api_keys_file():
    parsed = auth.parse_api_keys({"callers": [
        {"name": "app", "key_sha256": auth.hash_api_key("k1")},
        {"name": "batch", "key_sha256": auth.hash_api_key("k2").upper(), "rate": 2.5, "burst": 10},
    ]})
    assert [(k.caller, k.rate_limit) for k in parsed] == [("app", None), ("batch", auth.RateLimit(2.5, 10.0))]
    assert "k1" not in repr(parsed) and auth.hash_api_key("k1") not in repr(parsed)
    with pytest.raises(ValueError, match="share one key"):
        auth.parse_api_keys({"callers": [{"name": "a", "key_sha256": auth.hash_api_key("k")},
                                         {"name": "b", "key_sha256": auth.hash_api_key("k")}]})
    with pytest.raises(ValueError, match="unknown fields"):
        auth.parse_api_keys({"callers": [{"name": "a", "key": "plaintext"}]})


# --------------------------------------------------------------------------- secrets are owner-only (issue 11, item 1)


def _serve_once(env, timeout: float = 30) -> subprocess.CompletedProcess:
    """``healthcode-issuer serve`` on a DevEnvironment, expected to refuse at start."""
    return subprocess.run(
        [sys.executable, "-m", "issuer", "serve", "--config", str(env.config_path), "--listen", "127.0.0.1:0"],
        cwd=env.directory, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=timeout)


@pytest.mark.parametrize("name, what, mode", [
    ("vault.key", "vault key", 0o644),
    ("callers.toml", "API keys file", 0o644),
    ("signing.pem", "signing key", 0o640),
    ("pki/server.key", "TLS key", 0o604),
], ids=["vault-key-0644", "api-keys-0644", "signing-key-0640", "tls-key-0604"])
def test_serve_refuses_a_secret_others_can_read_and_says_how_to_fix_it(tmp_path, name, what, mode):
    from issuer.devenv import DevEnvironment

    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(dt.timezone.utc))
    path = env.directory / name
    os.chmod(path, mode)
    result = _serve_once(env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"Error: {what} {path} is readable by other users (mode {mode:04o}); make it owner-only: chmod 600 {path}"]
    assert not (env.directory / "issuer.db").exists()  # refused before the store opened


def test_serve_starts_with_owner_only_secrets(tmp_path):
    from issuer.devenv import DevEnvironment, ServerProcess

    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(dt.timezone.utc))
    secrets = ["vault.key", "callers.toml", "signing.pem", "pki/server.key", "app.apikey"]
    assert {name: (env.directory / name).stat().st_mode & 0o777 for name in secrets} == dict.fromkeys(secrets, 0o600)
    with ServerProcess(env) as server:
        assert server.stop() == 0


# --------------------------------------------------------------------------- every log line is JSON (item 8)


def test_every_server_log_line_is_json_native_grpc_lines_included(tmp_path):
    """gRPC's C core logs a failed TLS handshake through absl, straight to file descriptor 2
    (``I1207 04:22:23.065807 14440 ssl_transport_security.cc:2563] Handshake failed ...``);
    the server turns such lines into JSON records of logger ``grpc.core``. With metrics off,
    the listening line says so (not ``metrics port None``)."""
    from issuer.devenv import DevEnvironment, ServerProcess

    env = DevEnvironment.create(tmp_path / "issuer", now=dt.datetime.now(dt.timezone.utc), mtls=True)
    with ServerProcess(env) as server:
        for credentials in (grpc.ssl_channel_credentials(env.ca_pem), None):  # no client certificate; no TLS
            with (grpc.secure_channel(server.address, credentials) if credentials
                  else grpc.insecure_channel(server.address)) as channel:
                with pytest.raises(grpc.RpcError):
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert server.stop() == 0
    lines = server.log_path.read_text().splitlines()
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    native = [e for e in entries if e["logger"] == "grpc.core"]
    assert any("Handshake failed" in e["msg"] and e["source"].startswith("ssl_transport_security.cc:")
               for e in native), native
    listening = next(e for e in entries if e.get("event") == "listening")
    assert "(metrics off, province 33, TLS)" in listening["msg"] and listening["metrics_port"] is None
    assert "None" not in listening["msg"]


@pytest.mark.parametrize("line, level, source, msg", [
    ("I1207 04:22:23.065807   14440 ssl_transport_security.cc:2563] Handshake failed", logging.INFO,
     "ssl_transport_security.cc:2563", "Handshake failed"),
    ("E0000 00:00:1733545343.123456  99 chttp2_server.cc:1051] accept failed", logging.ERROR, "chttp2_server.cc:1051",
     "accept failed"),
    ("W1207 04:22:23.0 7 a.cc:1] careful", logging.WARNING, "a.cc:1", "careful"),
    ("F1207 04:22:23.0 7 a.cc:1] fatal", logging.CRITICAL, "a.cc:1", "fatal"),
    ("some other native text", logging.WARNING, None, "some other native text"),
], ids=["info", "error", "warning", "fatal", "unrecognised"])
def test_native_stderr_lines_become_records(caplog, line, level, source, msg):
    from issuer.logs import NativeStderr

    caplog.set_level(logging.DEBUG, logger="grpc.core")
    NativeStderr.record(line)
    (record,) = [r for r in caplog.records if r.name == "grpc.core"]
    assert (record.levelno, getattr(record, "source", None), record.getMessage()) == (level, source, msg)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["logger"] == "grpc.core" and entry["msg"] == msg
