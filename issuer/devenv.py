"""A throwaway local issuer: development keys, configuration and a server process.

For the demo, tests and benchmarks only. It writes into one directory: a dev
PKI (``issuer/tls.py``), a province signing key, a vault secret, an API key
and its hash, and ``issuer.toml``; every secret (keys, vault secret, API key,
``callers.toml``) is created owner-only (0600), as ``serve`` requires. With
``mtls=True`` the server also requires client certificates, and the caller
gets one (``pki/<caller>.pem``/``.key``), listed in ``auth.issuance_clients``
so it has the issuance role. :class:`ServerProcess` runs
``python -m issuer serve`` on it as a real subprocess and waits for the
standard health service to say SERVING.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import healthcode as hc
from issuer.auth import generate_api_key, hash_api_key
from issuer.tls import DevPki
from shellkit.processes import terminate

if TYPE_CHECKING:
    import grpc

__all__ = ["DevEnvironment", "ServerProcess", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class DevEnvironment:
    """Files of a local issuer for one province, all under ``directory``."""

    directory: pathlib.Path
    province: str
    config_path: pathlib.Path
    database: pathlib.Path
    api_key: str
    ca_pem: bytes
    public_key: hc.VerificationKey
    created_at: dt.datetime
    client_cert: pathlib.Path | None = None  # with mtls: the caller's certificate (issuance role) ...
    client_key: pathlib.Path | None = None  # ... and its private key (0600)

    @classmethod
    def create(cls, directory: pathlib.Path, *, province: str = "33", now: dt.datetime,
               caller: str = "app", rate: float = 100_000, burst: float = 100_000,
               mtls: bool = False) -> "DevEnvironment":
        directory = pathlib.Path(directory)
        (directory / "pki").mkdir(parents=True, exist_ok=True)
        DevPki.create(now=now).write(directory / "pki", clients=[caller] if mtls else [])
        signing = ec.generate_private_key(ec.SECP256R1())
        _write_secret(directory / "signing.pem", signing.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        _write_secret(directory / "vault.key", os.urandom(32).hex().encode() + b"\n")
        api_key = generate_api_key()
        _write_secret(directory / "app.apikey", api_key.encode() + b"\n")
        _write_secret(directory / "callers.toml",
                      f'[[callers]]\nname = "{caller}"\nkey_sha256 = "{hash_api_key(api_key)}"\n'.encode())
        config = directory / "issuer.toml"
        client_ca = 'client_ca = "pki/ca.pem"\n' if mtls else ""
        issuance_clients = f'issuance_clients = ["{caller}"]\n' if mtls else ""
        config.write_text(
            f'province = "{province}"\ndatabase = "issuer.db"\nlisten = "127.0.0.1:0"\n\n'
            f'[tls]\ncert = "pki/server.pem"\nkey = "pki/server.key"\n{client_ca}\n'
            f'[auth]\napi_keys = "callers.toml"\n{issuance_clients}rate = {rate}\nburst = {burst}\n\n'
            '[keys]\nsigning_key = "signing.pem"\nvault_key = "vault.key"\n'
        )
        public = hc.load_public_key_der(signing.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
        return cls(directory, province, config, directory / "issuer.db", api_key,
                   (directory / "pki" / "ca.pem").read_bytes(), public, now,
                   directory / "pki" / f"{caller}.pem" if mtls else None,
                   directory / "pki" / f"{caller}.key" if mtls else None)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials for a client of this issuer (with the caller's certificate under mtls)."""
        import grpc  # noqa: F811 - the devenv is imported by tools that never open a channel

        if self.client_cert is None or self.client_key is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
        return grpc.ssl_channel_credentials(self.ca_pem, self.client_key.read_bytes(), self.client_cert.read_bytes())

    def keyring(self, *, use_days: int = 90, code_validity_days: int = 7) -> hc.Keyring:
        """A verifier's keyring holding this issuer's key (what trust sync will deliver)."""
        start = self.created_at - dt.timedelta(hours=1)
        end = start + dt.timedelta(days=use_days)
        return hc.Keyring([hc.TrustedKey(
            kid=self.public_key.key_id(), province=hc.ProvinceCode(self.province), public_key=self.public_key,
            use_from=start, use_until=end, verify_until=end + dt.timedelta(days=code_validity_days))])


def _write_secret(path: pathlib.Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class ServerProcess:
    """``python -m issuer serve`` on a :class:`DevEnvironment`, as a real subprocess."""

    def __init__(self, env: DevEnvironment, *, port: int | None = None, log_path: pathlib.Path | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path or env.directory / "server.log"
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None

    def start(self, *, timeout: float = 30.0) -> "ServerProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "issuer", "serve", "--config", str(self.env.config_path),
             "--listen", self.address, *self.extra_args],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        self.wait_serving(timeout=timeout)
        return self

    def wait_serving(self, *, timeout: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        credentials = self.env.channel_credentials()
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"issuer exited with {self.process.returncode}; see {self.log_path}")
            try:
                with grpc.secure_channel(self.address, credentials) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"issuer not serving after {timeout} s; see {self.log_path}")
            time.sleep(0.05)

    def stop(self, *, timeout: float = 30.0) -> int:
        """SIGTERM (graceful drain), then wait; returns the exit code."""
        if self.process is None:
            return 0
        return terminate(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL: the crash the durability guarantees are about."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "ServerProcess":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill() if exc[0] is not None else self.stop()
