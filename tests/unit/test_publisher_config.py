"""The publisher's settings (publisher/config.py) and the issuer's network push settings (issuer/config.py)."""

from __future__ import annotations

import pathlib

import pytest

from issuer.config import ConfigError as IssuerConfigError
from issuer.config import IssuerConfig
from publisher.config import load_config
from publisher.errors import ConfigError


def test_a_file_with_flags_over_it(tmp_path):
    path = tmp_path / "publisher.toml"
    path.write_text('repository = "repo"\nstate_dir = "state"\nonline_keys = "online"\nlisten = "0.0.0.0:50070"\n'
                    'batch_window_seconds = 1\ntimestamp_refresh_minutes = 30\n'
                    '[tls]\ncert = "s.pem"\nkey = "s.key"\nclient_ca = "ca.pem"\n[metrics]\nport = 9465\n')
    config = load_config(path, {"batch_window": 0.25, "listen": None})
    assert (config.repository, config.state_dir, config.tls_key) == (tmp_path / "repo", tmp_path / "state",
                                                                   tmp_path / "s.key")
    assert (config.batch_window, config.timestamp_refresh, config.metrics_port, config.listen) == (
        0.25, 1800.0, 9465, "0.0.0.0:50070")


@pytest.mark.parametrize("text, message", [
    ('state_dir = "s"\n', "missing settings: client_ca, online_keys, repository, tls_cert, tls_key"),
    ('nonsense = 1\n', "unknown setting nonsense"),
    ('batch_window_seconds = "fast"\n', "expected a number"),
])
def test_bad_files_are_config_errors(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, {})


def test_the_state_directory_must_be_outside_the_repository(tmp_path):
    flags = dict(repository=tmp_path / "repo", state_dir=tmp_path / "repo" / ".state", online_keys=tmp_path / "o",
                 tls_cert=tmp_path / "c", tls_key=tmp_path / "k", client_ca=tmp_path / "ca")
    with pytest.raises(ConfigError, match="outside the repository"):
        load_config(None, flags)


def _issuer(tmp: pathlib.Path, **kw) -> IssuerConfig:
    values = dict(province="33", database=tmp / "i.db", vault_key=tmp / "v", listen="127.0.0.1:0",
                  tls_cert=tmp / "c", tls_key=tmp / "k", client_ca=tmp / "ca", key_set=tmp / "ks.json",
                  keystore_dir=tmp / "s", trust_repo=tmp / "work", tuf_keys=tmp / "tuf",
                  revocation_directory=tmp / "rev", revocation_push_mode="network")
    values.update(kw)
    return IssuerConfig(**values)


def test_network_push_needs_the_publisher_and_a_certificate(tmp_path):
    full = dict(revocation_publisher="pub:50070", revocation_publisher_ca=tmp_path / "ca.pem",
                revocation_publisher_cert=tmp_path / "p.pem", revocation_publisher_key=tmp_path / "p.key")
    assert _issuer(tmp_path, **full).revocation_push_poll == 1.0
    with pytest.raises(IssuerConfigError, match="needs revocation.publisher, publisher_ca"):
        _issuer(tmp_path, **{**full, "revocation_publisher_key": None})
    with pytest.raises(IssuerConfigError, match='need push_mode = "network"'):
        _issuer(tmp_path, **full, revocation_push_mode="repository")
    with pytest.raises(IssuerConfigError, match="remove key_admin.online_keys"):
        _issuer(tmp_path, **full, online_keys=tmp_path / "online")
    with pytest.raises(IssuerConfigError, match="push_poll_seconds must be positive"):
        _issuer(tmp_path, **full, revocation_push_poll=0)
