"""Three provincial issuers and the national index as real processes on 127.0.0.1: files, control, clients.

For the end-to-end test (``tests/integration/test_national_cluster.py``) and the
national benchmarks (:mod:`tools.bench.national`). Nothing here is meant for a
real deployment: one throwaway CA signs every certificate.

``Cluster(directory, now=...)`` writes, under ``directory``:

* ``pki/``: the CA (``ca.pem``), one server certificate for 127.0.0.1 shared by
  every process, and client certificates (``<CN>.pem``/``.key``, keys 0600) for
  ``province:<p>`` (a province's issuer calling the national service),
  ``national-index:ops`` (the national index service calling the provinces), each
  hospital ``hospital:<p>:<organisation>``, each province's registration desk
  ``desk-<p>`` (the ordinary issuance client) and ``nobody`` (a certificate
  from the right CA that names no role);
* ``province-<p>/``: that issuer's P-256 signing key, vault secret, API keys
  (``app.apikey`` issuance, ``wallet.apikey`` the residents' app with the
  wallet role), its SQLite file and ``issuer.toml``
  with the ``[national]`` section pointing at the national service;
* ``national/``: the national blind-index key in a file keystore (its
  passphrase only in the process's environment, :data:`NATIONAL_KEY_ENV`), an
  unsigned development trust bundle with every province's key
  (``trust/bundle.json``, also a verifier's ``--dev-trust`` source), its
  SQLite file and ``national.toml`` (national/config.py's format: the
  provinces' NationalLink endpoints, a rate-limited hospital
  :data:`LIMITED_HOSPITAL`).

Provinces reconcile every :data:`RECONCILE_INTERVAL` seconds (30 in the example
configuration), so tests and benchmarks need not wait long.

Every port is chosen before any process starts (each config names the others'
addresses) and kept across restarts. :class:`Node` runs one process (JSON log
on stderr to ``<name>.log``), with :meth:`Node.start`, :meth:`Node.stop`
(SIGTERM), :meth:`Node.kill` (SIGKILL) and :meth:`Node.restart`; it is up once
the standard health check says SERVING.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Iterable, Iterator, Mapping, Sequence

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

import healthcode as hc
from issuer.auth import generate_api_key, hash_api_key
from issuer.devenv import free_port
from issuer.tls import DevPki
from shellkit.files import write_file_atomically

__all__ = ["PROVINCES", "HOSPITALS", "NATIONAL_CN", "NOBODY_CN", "Node", "NodeFailed", "Province", "Cluster",
           "desk_cn", "province_cn", "hospital_cn"]

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROVINCES: tuple[str, ...] = ("33", "44", "11")
#: (province, organisation) of each hospital with a certificate.
HOSPITALS: tuple[tuple[str, str], ...] = (("44", "gz-zhongshan-1"), ("33", "hz-zheyi-1"))
NATIONAL_CN = "national-index:ops"
#: The provinces' reconciler period here (30 s in the example config): tests and benches wait for it.
RECONCILE_INTERVAL = 1.0
NOBODY_CN = "nobody"


def province_cn(province: str) -> str:
    return f"province:{province}"


def desk_cn(province: str) -> str:
    return f"desk-{province}"


def hospital_cn(province: str, organisation: str) -> str:
    return f"hospital:{province}:{organisation}"


class NodeFailed(RuntimeError):
    """A process did not come up (the message ends with its last log lines)."""


# --------------------------------------------------------------------------- one process


class Node:
    """One server process: ``argv`` on a fixed 127.0.0.1 port, stderr to ``log_path``.

    ``credentials`` are what the health check connects with (every server
    here requires a client certificate).
    """

    def __init__(self, name: str, argv: Sequence[str], *, port: int, log_path: pathlib.Path,
                 credentials: grpc.ChannelCredentials, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.env = dict(env or {})
        self.argv = list(argv)
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.log_path = log_path
        self._credentials = credentials
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *, timeout: float = 60.0) -> "Node":
        """Start the process and wait until it answers SERVING (:class:`NodeFailed` otherwise)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(self.log_path, "ab") as log:
            self._offset = log.tell()
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True)
        try:
            self._wait_serving(time.monotonic() + timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_serving(self, deadline: float) -> None:
        with grpc.secure_channel(self.address, self._credentials) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise NodeFailed(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NodeFailed(f"{self.name} not SERVING in time:\n{self.log_tail()}")
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=min(2.0, remaining))
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(getattr(self, "_offset", 0))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain) and wait; SIGKILL after ``timeout``. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL, and wait for it to be gone."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def restart(self, *, timeout: float = 60.0) -> "Node":
        """Stop (if running) and start again on the same port and files."""
        self.stop()
        return self.start(timeout=timeout)


# --------------------------------------------------------------------------- the files


@dataclasses.dataclass(frozen=True)
class Province:
    """One provincial issuer's files, under ``directory``."""

    code: str
    directory: pathlib.Path
    port: int
    config_path: pathlib.Path
    database: pathlib.Path
    api_key: str
    signing_pem: bytes
    wallet_key: str  # the residents' app (API key role "wallet": enrolment, renewal and the live codes)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def signing_key(self) -> hc.SigningKey:
        """The province's signing key as the core takes it (tests forge and pre-date codes with it)."""
        private = serialization.load_pem_private_key(self.signing_pem, password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return hc.signing_key_from_private_bytes(hc.Algorithm.ES256,
                                                 private.private_numbers().private_value.to_bytes(32, "big"))

    @property
    def public_key(self) -> hc.VerificationKey:
        return self.signing_key.public_key()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    @property
    def wallet_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.wallet_key}"),)


def _secret(path: pathlib.Path, data: bytes) -> pathlib.Path:
    write_file_atomically(path, data)  # owner-only, as serve requires of secrets
    os.chmod(path, 0o600)
    return path


def _province_files(directory: pathlib.Path, code: str, port: int, national_address: str | None) -> Province:
    directory.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _secret(directory / "signing.pem", pem)
    _secret(directory / "vault.key", (os.urandom(32).hex() + "\n").encode())
    api_key, wallet_key = generate_api_key(), generate_api_key()
    _secret(directory / "app.apikey", (api_key + "\n").encode())
    _secret(directory / "wallet.apikey", (wallet_key + "\n").encode())
    _secret(directory / "callers.toml",
            f'[[callers]]\nname = "app-{code}"\nkey_sha256 = "{hash_api_key(api_key)}"\n\n'
            f'[[callers]]\nname = "wallet-app-{code}"\nkey_sha256 = "{hash_api_key(wallet_key)}"\nrole = "wallet"\n'
            .encode())
    pki = directory.parent / "pki"
    config = directory / "issuer.toml"
    config.write_text(
        f'province = "{code}"\ndatabase = "issuer.db"\nlisten = "127.0.0.1:{port}"\ngrace_period = 1.0\n\n'
        f'[tls]\ncert = "{pki}/server.pem"\nkey = "{pki}/server.key"\nclient_ca = "{pki}/ca.pem"\n\n'
        f'[auth]\napi_keys = "callers.toml"\nissuance_clients = ["{desk_cn(code)}"]\n'
        'rate = 1000000.0\nburst = 1000000\n\n'
        '[keys]\nsigning_key = "signing.pem"\nvault_key = "vault.key"\n\n'
        + (national_section(pki, code, national_address) if national_address and issuer_has_national() else "")
    )
    return Province(code, directory, port, config, directory / "issuer.db", api_key, pem, wallet_key)


def issuer_has_national() -> bool:
    """Whether this checkout's issuer takes a ``[national]`` config section."""
    from issuer.config import FILE_KEYS

    return any(section == "national" for section, _ in FILE_KEYS)


def national_section(pki: pathlib.Path, code: str, national_address: str) -> str:
    """The issuer's ``[national]`` section: where the national service is, and the province's certificate."""
    return (f'[national]\naddress = "{national_address}"\nca = "{pki}/ca.pem"\n'
            f'cert = "{pki}/{province_cn(code)}.pem"\nkey = "{pki}/{province_cn(code)}.key"\n'
            f'claim_timeout_ms = 2000\nreconcile_interval_seconds = {RECONCILE_INTERVAL}\n')


NATIONAL_KEY_ENV = "HC_NATIONAL_KEY_PASSPHRASE"
#: A hospital with a tight rate limit (2 resolutions, then 1 every 2 s), for the rate-limit test.
LIMITED_HOSPITAL = ("44", "slow-clinic")


def _national_files(directory: pathlib.Path, port: int, provinces: Sequence[Province], keyring: hc.Keyring,
                    passphrase: str) -> pathlib.Path:
    """The national service's files (national/config.py's format); returns its config file."""
    from national.blind_index import DEFAULT_LABEL, FileNationalKey
    from verifier.trust_sources import dev_bundle_bytes

    directory.mkdir(parents=True, exist_ok=True)
    pki = directory.parent / "pki"
    FileNationalKey.generate(directory / "keys", DEFAULT_LABEL, passphrase.encode())
    (directory / "trust").mkdir(exist_ok=True)
    (directory / "trust" / "bundle.json").write_bytes(dev_bundle_bytes(list(keyring), version=1))
    endpoints = ", ".join(f'"{p.code}" = "{p.address}"' for p in provinces)
    config = directory / "national.toml"
    config.write_text(
        f'database = "national.db"\nlisten = "127.0.0.1:{port}"\ngrace_period = 1.0\nlog_level = "INFO"\n\n'
        f'[tls]\ncert = "{pki}/server.pem"\nkey = "{pki}/server.key"\nclient_ca = "{pki}/ca.pem"\n\n'
        f'[key]\nkeystore = "file"\ndirectory = "keys"\nlabel = "{DEFAULT_LABEL}"\n'
        f'passphrase_env = "{NATIONAL_KEY_ENV}"\n\n'
        f'[provinces]\nca = "{pki}/ca.pem"\ncert = "{pki}/{NATIONAL_CN}.pem"\nkey = "{pki}/{NATIONAL_CN}.key"\n'
        f'timeout_seconds = 10.0\nendpoints = {{ {endpoints} }}\n\n'
        '[trust]\ndev_bundle = "trust/bundle.json"\n\n'
        '[rate]\nhospital_rate = 1000.0\nhospital_burst = 1000\nprovince_rate = 1000000.0\nprovince_burst = 1000000\n'
        f'hospitals = {{ "{hospital_cn(*LIMITED_HOSPITAL)}" = {{ rate = 0.5, burst = 2 }} }}\n'
    )
    return config


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """The PKI, the three provinces' and the national service's files and processes.

    :meth:`start` starts the national service, then the provinces; :meth:`close`
    kills whatever still runs (use ``with``). Clients: :meth:`channel` opens a
    synchronous TLS channel with the named certificate.
    """

    def __init__(self, directory: pathlib.Path, *, now: dt.datetime, provinces: Sequence[str] = PROVINCES,
                 hospitals: Sequence[tuple[str, str]] = HOSPITALS, standalone: Sequence[str] = ()) -> None:
        """``standalone`` provinces get no ``[national]`` section: province-only issuers (a baseline)."""
        self.directory = pathlib.Path(directory)
        self.now = now
        pki_dir = self.directory / "pki"
        cns = [NATIONAL_CN, NOBODY_CN, *(province_cn(p) for p in provinces), *(desk_cn(p) for p in provinces),
               *(hospital_cn(p, org) for p, org in (*hospitals, LIMITED_HOSPITAL))]
        DevPki.create(now=now).write(pki_dir, clients=cns)
        self.pki = pki_dir
        self.ca_pem = (pki_dir / "ca.pem").read_bytes()
        self.hospitals = tuple(hospitals)
        national_port = free_port()
        ports = {p: free_port() for p in provinces}
        self.provinces: dict[str, Province] = {
            p: _province_files(self.directory / f"province-{p}", p, ports[p],
                               None if p in standalone else f"127.0.0.1:{national_port}")
            for p in provinces}
        self._passphrase = os.urandom(16).hex()
        self.national_config = _national_files(self.directory / "national", national_port,
                                                list(self.provinces.values()), self.keyring(), self._passphrase)
        self.national_database = self.directory / "national" / "national.db"
        self.national = Node("national", [sys.executable, "-m", "national", "serve", "--config",
                                          str(self.national_config)],
                             port=national_port, log_path=self.directory / "national.log",
                             credentials=self.credentials(NATIONAL_CN), env={NATIONAL_KEY_ENV: self._passphrase})
        self.issuers: dict[str, Node] = {
            p: Node(f"province-{p}", [sys.executable, "-m", "issuer", "serve", "--config", str(f.config_path),
                                      "--log-level", "INFO"],
                    port=f.port, log_path=self.directory / f"province-{p}.log",
                    credentials=self.credentials(desk_cn(p)))
            for p, f in self.provinces.items()}

    # -- processes

    @property
    def nodes(self) -> list[Node]:
        return [self.national, *self.issuers.values()]

    def start(self) -> "Cluster":
        for node in self.nodes:
            node.start()
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- clients

    def credentials(self, cn: str) -> grpc.ChannelCredentials:
        """TLS credentials presenting the client certificate named ``cn``."""
        return grpc.ssl_channel_credentials(self.ca_pem, (self.pki / f"{cn}.key").read_bytes(),
                                            (self.pki / f"{cn}.pem").read_bytes())

    def channel(self, node: Node | str, cn: str) -> grpc.Channel:
        """A synchronous channel to ``node`` (or a province code: its issuer) as ``cn``."""
        target = self.issuers[node] if isinstance(node, str) else node
        return grpc.secure_channel(target.address, self.credentials(cn))

    def keyring(self) -> hc.Keyring:
        """Every province's key, as a verifier's trust data would hold them."""
        start = self.now - dt.timedelta(hours=1)
        return hc.Keyring([hc.TrustedKey(
            kid=p.public_key.key_id(), province=hc.ProvinceCode(p.code), public_key=p.public_key,
            use_from=start, use_until=start + dt.timedelta(days=30), verify_until=start + dt.timedelta(days=40))
            for p in self.provinces.values()])

    def log_files(self) -> list[pathlib.Path]:
        return [node.log_path for node in self.nodes if node.log_path.exists()]

    def data_files(self) -> Iterator[pathlib.Path]:
        """Every file a process wrote under the cluster (databases, WAL, logs), for byte scans."""
        for path in sorted(self.directory.rglob("*")):
            if path.is_file() and (path.suffix in (".log", ".db") or path.name.endswith(("-wal", "-shm", "-journal"))):
                yield path


def scan_for(paths: Iterable[pathlib.Path], needles: Iterable[str]) -> list[tuple[str, str]]:
    """(file, needle) for every needle found in a file, in plain text, UTF-16 and UTF-32."""
    patterns = []
    for needle in needles:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le"):
            patterns.append((needle, needle.encode(encoding)))
    found = []
    for path in paths:
        data = path.read_bytes()
        for needle, pattern in patterns:
            if pattern in data:
                found.append((str(path), needle))
    return sorted(set(found))
