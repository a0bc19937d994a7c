"""The issuer's ``[national]`` settings (issue 14): read from TOML, checked, and the certificate's province."""

from __future__ import annotations

import datetime as dt
import pathlib

import pytest

from issuer.config import ConfigError, load_config
from issuer.national_client import certificate_province
from issuer.national_setup import national_settings
from issuer.tls import DevPki

BASE = """
province = "33"
database = "issuer.db"
[tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
[keys]
signing_key = "signing.pem"
vault_key = "vault.key"
"""


@pytest.fixture(scope="module")
def pki():
    return DevPki.create(now=dt.datetime.now(dt.timezone.utc))


def write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "issuer.toml"
    path.write_text(BASE + text)
    return path


def files(tmp_path: pathlib.Path, pki, cn: str = "province:33", mode: int = 0o600) -> None:
    pair = pki.client(cn)
    (tmp_path / "ca.pem").write_bytes(pki.ca_cert_pem)
    (tmp_path / "p.pem").write_bytes(pair.cert_pem)
    (tmp_path / "p.key").write_bytes(pair.key_pem)
    (tmp_path / "p.key").chmod(mode)


NATIONAL = '[national]\naddress = "127.0.0.1:50061"\nca = "ca.pem"\ncert = "p.pem"\nkey = "p.key"\n'


def test_without_a_national_section_the_issuer_is_province_only(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.national_address is None


def test_the_section_is_read_with_its_defaults_and_paths_relative_to_the_file(tmp_path):
    config = load_config(write(tmp_path, NATIONAL + "claim_timeout_ms = 500\nreconcile_interval_seconds = 5\n"))
    assert config.national_address == "127.0.0.1:50061"
    assert config.national_cert == tmp_path / "p.pem" and config.national_key == tmp_path / "p.key"
    assert (config.national_claim_timeout, config.national_transfer_timeout,
            config.national_reconcile_interval) == (0.5, 10.0, 5.0)


@pytest.mark.parametrize("text, message", [
    ('[national]\naddress = "nohost"\nca = "ca.pem"\ncert = "p.pem"\nkey = "p.key"\n', "host:port"),
    ('[national]\naddress = "127.0.0.1:50061"\n', "needs ca, cert and key"),
    ('[national]\ncert = "p.pem"\n', "need national.address"),
    (NATIONAL + "claim_timeout_ms = 0\n", "must be positive"),
    (NATIONAL + "port = 5\n", "unknown setting national.port"),
])
def test_bad_settings_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_the_national_service_needs_a_client_ca_to_call_in(tmp_path):
    path = tmp_path / "issuer.toml"
    path.write_text(BASE.replace('client_ca = "ca.pem"\n', '') + '[auth]\napi_keys = "k.toml"\n' + NATIONAL)
    with pytest.raises(ConfigError, match="client_ca"):
        load_config(path)


def test_the_certificate_must_name_this_province_and_the_key_be_owner_only(tmp_path, pki):
    files(tmp_path, pki)
    config = load_config(write(tmp_path, NATIONAL))
    settings = national_settings(config)
    assert settings.address == "127.0.0.1:50061" and settings.claim_timeout == 2.0
    assert "PRIVATE KEY" not in repr(settings)
    files(tmp_path, pki, cn="province:44")
    with pytest.raises(ConfigError, match="province:33"):
        national_settings(config)
    files(tmp_path, pki, mode=0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        national_settings(config)


def test_certificate_province_reads_the_cn(pki):
    assert certificate_province(pki.client("province:11").cert_pem) == "11"
    assert certificate_province(pki.client("national:ops").cert_pem) is None
    assert certificate_province(b"not a certificate") is None
