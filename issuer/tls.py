"""Throwaway development PKI: a CA, a server certificate for 127.0.0.1/localhost, client certificates.

For tests, the demo and a first local run only. Production certificates come
from the operator's PKI; nothing here is meant to be trusted beyond a laptop.

All keys are P-256 and every certificate is signed by the one throwaway CA, so
the same CA file serves as the client's server trust root and as the
server's client CA (mTLS). Certificates are valid from one hour before ``now``
for ``days`` days; ``now`` is a parameter, so the output depends only on it
and on fresh random keys.

    pki = DevPki.create(now=datetime.now(timezone.utc))
    pki.write(pathlib.Path("dev/pki"), clients=["ops"])   # ca.pem, server.pem, server.key, ops.pem, ops.key
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pathlib
from dataclasses import dataclass
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertifiedKey", "DevPki"]

_DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class CertifiedKey:
    """A PEM certificate and its unencrypted PKCS#8 PEM private key."""

    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "healthcode development (untrusted)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


@dataclass(frozen=True)
class DevPki:
    """A throwaway CA (its key kept in memory) that signs server and client certificates."""

    ca_cert_pem: bytes
    _ca_key: ec.EllipticCurvePrivateKey
    _ca_cert: x509.Certificate
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def create(cls, *, now: dt.datetime, days: int = 30, name: str = "healthcode dev CA") -> "DevPki":
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        not_before = now - dt.timedelta(hours=1)
        not_after = now + dt.timedelta(days=days)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), key, cert, not_before, not_after)

    def _issue(self, cn: str, *, server_hosts: Iterable[str] = (), client: bool = False) -> CertifiedKey:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()), critical=False
            )
        )
        hosts = list(server_hosts)
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if hosts else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        return CertifiedKey(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def server(self, hosts: Iterable[str] = _DEFAULT_HOSTS) -> CertifiedKey:
        """A server certificate whose SANs are ``hosts`` (IP addresses or DNS names)."""
        hosts = list(hosts)
        if not hosts:
            raise ValueError("a server certificate needs at least one host")
        return self._issue(hosts[0], server_hosts=hosts)

    def client(self, common_name: str) -> CertifiedKey:
        """A client certificate; the issuer takes its subject CN as the caller's name."""
        if not common_name:
            raise ValueError("a client certificate needs a common name")
        return self._issue(common_name, client=True)

    def write(self, directory: pathlib.Path, *, clients: Iterable[str] = ()) -> dict[str, pathlib.Path]:
        """Write ``ca.pem``, ``server.pem``/``server.key`` and ``<client>.pem``/``<client>.key``.

        Private keys are created with mode 0600. Returns the paths by name.
        """
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths: dict[str, pathlib.Path] = {}

        def put(name: str, data: bytes, *, secret: bool = False) -> None:
            path = directory / name
            if secret:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            else:
                path.write_bytes(data)
            paths[name] = path

        put("ca.pem", self.ca_cert_pem)
        server = self.server()
        put("server.pem", server.cert_pem)
        put("server.key", server.key_pem, secret=True)
        for cn in clients:
            pair = self.client(cn)
            put(f"{cn}.pem", pair.cert_pem)
            put(f"{cn}.key", pair.key_pem, secret=True)
        return paths
