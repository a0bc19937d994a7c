"""The running trust chain, as real processes: national repository, publisher, mirror, provincial issuer.

:class:`Chain` writes the files (all under one directory, one passphrase for
every key holder, :data:`PASSPHRASE`):

* ``repo/``: the national trust repository (``keys.ceremony.init_root``: 3
  officials, threshold 2, online keys in ``national-keys/online``), with the
  provinces delegated; the issuing province (33) has a signing key and its key
  list published;
* ``province-<code>/``: each province's home (key set, file keystore, TUF keys);
  ``work-<code>/``: its working copy of the repository (what a provincial
  issuer signs into before pushing);
* ``pki/``: a throwaway CA, the publisher's and issuer's server certificate,
  client certificates ``province:<code>``, ``national:ops`` and ``app``;
* ``publisher-state/``: the publisher's staged pushes and ledger;
* :meth:`Chain.write_issuer_config`: ``issuer-33/issuer.toml`` for an issuer
  with rotating keys, KeyAdmin and ``push_mode = "network"``.

:class:`Child` runs one of them (``python -m publisher serve``, ``python -m
http.server`` over ``repo/`` as the mirror, ``python -m issuer serve``) with
its log in a file and waits until it answers; :meth:`Child.kill` is SIGKILL.

Used by ``tests/integration/test_trust_publication_chain.py``,
``tests/integration/test_publisher_server.py`` and the benchmark
:mod:`tools.bench.publisher`.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence

from issuer.auth import generate_api_key, hash_api_key
from issuer.tls import DevPki
from keys import ceremony, province_keys
from keys.keystore import FileKeystore
from shellkit.files import write_file_atomically
from shellkit.processes import terminate

__all__ = ["PASSPHRASE", "KEYSTORE_SECRET", "Chain", "Child", "free_port"]

PASSPHRASE = b"trust chain passphrase"
KEYSTORE_SECRET = b"trust chain keystore 33"
ISSUING = "33"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _passphrase(holder: object, *, new: bool = False) -> bytes:
    return PASSPHRASE


class Chain:
    """The chain's files under ``base`` (module docstring). ``provinces`` are delegated; the first
    one issues codes (it gets a signing key and a published key list)."""

    def __init__(self, base: pathlib.Path, provinces: Sequence[str] = (ISSUING,)) -> None:
        self.base = pathlib.Path(base)
        self.provinces = tuple(provinces)
        self.repo_dir = self.base / "repo"
        self.national = ceremony.NationalKeys(self.base / "national-keys")
        self.state_dir = self.base / "publisher-state"
        self.pki_dir = self.base / "pki"

    def home(self, code: str) -> ceremony.ProvinceHome:
        return ceremony.ProvinceHome(code, self.base / f"province-{code}")

    def work_dir(self, code: str) -> pathlib.Path:
        return self.base / f"work-{code}"

    @classmethod
    def create(cls, base: pathlib.Path, *, now: dt.datetime, provinces: Sequence[str] = (ISSUING,)) -> "Chain":
        chain = cls(base, provinces)
        chain.base.mkdir(parents=True, exist_ok=True)
        ceremony.init_root(chain.repo_dir, chain.national, officials=3, threshold=2, passphrase=_passphrase, now=now)
        officials = ceremony.load_officials(chain.national, "targets", _passphrase)
        for code in chain.provinces:
            ceremony.add_province(ceremony.open_repository(chain.repo_dir), chain.home(code), passphrase=_passphrase,
                                  now=now, tuf_keys=1, tuf_threshold=1, targets_signers=officials)
        online = ceremony.load_online(chain.national, _passphrase)
        repo = ceremony.open_repository(chain.repo_dir, online=online)
        first = chain.home(chain.provinces[0])
        keystore = FileKeystore(first.keystore_dir, KEYSTORE_SECRET)
        try:
            admin = province_keys.ProvinceKeyAdmin(
                province=first.code, key_set_path=first.key_set_path, keystore=keystore, repo=repo,
                tuf_signers=ceremony.province_signers(first, _passphrase), publish_snapshot=True)
            admin.add_key(now - dt.timedelta(hours=1))
            admin.publish(now=now)
        finally:
            keystore.close()
        repo.publish(now=now)
        for code in chain.provinces:
            shutil.copytree(chain.repo_dir, chain.work_dir(code), ignore=shutil.ignore_patterns(".lock"))
        chain.state_dir.mkdir()
        clients = [f"province:{code}" for code in chain.provinces] + ["national:ops", "app"]
        DevPki.create(now=now).write(chain.pki_dir, clients=clients)
        return chain

    # -- the publisher

    def publisher_argv(self, port: int, *, batch_window: float = 0.2, timestamp_refresh: float = 3600.0,
                       metrics_port: int = 0) -> list[str]:
        return [sys.executable, "-m", "publisher", "serve", "--repository", str(self.repo_dir),
                "--state-dir", str(self.state_dir), "--online-keys", str(self.national.online),
                "--listen", f"127.0.0.1:{port}", "--tls-cert", str(self.pki_dir / "server.pem"),
                "--tls-key", str(self.pki_dir / "server.key"), "--client-ca", str(self.pki_dir / "ca.pem"),
                "--batch-window", str(batch_window), "--timestamp-refresh", str(timestamp_refresh),
                "--metrics-port", str(metrics_port)]

    def publisher_env(self) -> dict[str, str]:
        return {**os.environ, "HEALTHCODE_PASSPHRASE_ONLINE": PASSPHRASE.decode()}

    def client(self, cn: str, port: int):  # -> publisher.client.PublisherClient
        from publisher.client import PublisherClient

        return PublisherClient(f"127.0.0.1:{port}", ca_pem=(self.pki_dir / "ca.pem").read_bytes(),
                               cert_pem=(self.pki_dir / f"{cn}.pem").read_bytes(),
                               key_pem=(self.pki_dir / f"{cn}.key").read_bytes())

    # -- the issuer

    def write_issuer_config(self, publisher_port: int, *, interval_minutes: float = 60,
                            min_interval_seconds: float = 0.5, push_poll_seconds: float = 0.5) -> pathlib.Path:
        """``issuer-33/issuer.toml``: rotating keys, KeyAdmin over the working copy, network push. Returns it."""
        code = self.provinces[0]
        home = self.home(code)
        directory = self.base / f"issuer-{code}"
        directory.mkdir(exist_ok=True)
        write_file_atomically(directory / "vault.key", os.urandom(32).hex().encode() + b"\n")
        api_key = generate_api_key()
        write_file_atomically(directory / "app.apikey", api_key.encode() + b"\n")
        write_file_atomically(directory / "callers.toml",
                              f'[[callers]]\nname = "app"\nkey_sha256 = "{hash_api_key(api_key)}"\n'.encode())
        pki = self.pki_dir
        config = directory / "issuer.toml"
        config.write_text(
            f'province = "{code}"\ndatabase = "issuer.db"\nlisten = "127.0.0.1:0"\n\n'
            f'[tls]\ncert = "{pki}/server.pem"\nkey = "{pki}/server.key"\nclient_ca = "{pki}/ca.pem"\n\n'
            '[auth]\napi_keys = "callers.toml"\nissuance_clients = ["app"]\nrate = 100000\nburst = 100000\n\n'
            f'[keys]\nkey_set = "{home.key_set_path}"\nkeystore = "file"\nkeystore_dir = "{home.keystore_dir}"\n'
            'signing_key_passphrase_env = "HC_KEYSTORE_SECRET"\nvault_key = "vault.key"\nkey_set_check_seconds = 1\n\n'
            f'[key_admin]\ntrust_repo = "{self.work_dir(code)}"\ntuf_keys = "{home.tuf_dir}"\n'
            'tuf_passphrase_env = "HC_TUF_PASSPHRASE"\n\n'
            f'[revocation]\ndirectory = "revocation"\npush_mode = "network"\ninterval_minutes = {interval_minutes}\n'
            f'min_interval_seconds = {min_interval_seconds}\npublisher = "127.0.0.1:{publisher_port}"\n'
            f'publisher_ca = "{pki}/ca.pem"\npublisher_cert = "{pki}/province:{code}.pem"\n'
            f'publisher_key = "{pki}/province:{code}.key"\npush_poll_seconds = {push_poll_seconds}\n')
        return config

    def issuer_argv(self, config: pathlib.Path, port: int) -> list[str]:
        return [sys.executable, "-m", "issuer", "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"]

    def issuer_env(self) -> dict[str, str]:
        return {**os.environ, "HC_KEYSTORE_SECRET": KEYSTORE_SECRET.decode(),
                "HC_TUF_PASSPHRASE": PASSPHRASE.decode()}

    def grpc_credentials(self, cn: str):  # -> grpc.ChannelCredentials
        import grpc

        return grpc.ssl_channel_credentials((self.pki_dir / "ca.pem").read_bytes(),
                                            (self.pki_dir / f"{cn}.key").read_bytes(),
                                            (self.pki_dir / f"{cn}.pem").read_bytes())

    # -- the mirror

    @staticmethod
    def mirror_argv(directory: pathlib.Path, port: int) -> list[str]:
        return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory), str(port)]


class Child:
    """One child process: ``argv`` with ``env``, its output in ``log``; ready when ``ready()`` is true."""

    def __init__(self, name: str, argv: Sequence[str], *, log: pathlib.Path, ready: Callable[[], bool],
                 env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log, self._ready, self.env = name, list(argv), log, ready, env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 60.0) -> "Child":
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=self.env)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"{self.name} not ready after {timeout} s; see {self.log}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash the durability guarantees are about."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout``); the exit code."""
        if self.process is None:
            return 0
        return terminate(self.process, timeout)


def grpc_ready(address: str, credentials) -> Callable[[], bool]:  # noqa: ANN001 - grpc.ChannelCredentials
    """True once the standard health service at ``address`` says SERVING."""
    def ready() -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            with grpc.secure_channel(address, credentials) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False
    return ready


def http_ready(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False
    return ready
