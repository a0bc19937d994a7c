"""The national service's small parts: admission names, configuration, the file keystore's key, the merge rule."""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import stat

import pytest

from issuer.documents import make_resident_id, parse_document
from national.admission import principal_of
from national.blind_index import (
    FileNationalKey,
    NationalBlindIndex,
    SoftwareHmacKey,
    generate_national_key,
    open_national_key,
)
from national.config import load_config, parse_config
from national.errors import ConfigError, NationalError, NationalKeyError
from national.index import survivor_of
from national.store import ACTIVE, IdentityRow

TODAY = dt.date(2026, 12, 7)


@pytest.mark.parametrize("cn, want", [
    ("province:33", ("province", "33", "")),
    ("province:44", ("province", "44", "")),
    ("province:99", None),
    ("province:3", None),
    ("province:330", None),
    ("hospital:44:gz-first", ("hospital", "44", "gz-first")),
    ("hospital:33:HZ.No_1-x", ("hospital", "33", "HZ.No_1-x")),
    ("hospital:99:x", None),
    ("hospital:44:", None),
    ("hospital:44:-lead", None),
    ("hospital:44:a:b", None),
    ("hospital:44:" + "a" * 53, None),
    ("national:ops", None),
    ("admin:33", None),
    ("", None),
    ("PROVINCE:33", None),
])
def test_principal_of(cn, want):
    principal = principal_of(cn)
    assert (None if principal is None else (principal.kind, principal.province, principal.organisation)) == want


BASE = """
database = "n.db"
[tls]
cert = "s.pem"
key = "s.key"
client_ca = "ca.pem"
[key]
directory = "keys"
"""


def test_config_paths_are_relative_to_the_file(tmp_path):
    path = tmp_path / "national.toml"
    path.write_text(BASE + '[provinces]\nca = "ca.pem"\ncert = "n.pem"\nkey = "n.key"\n'
                    'endpoints = { "33" = "127.0.0.1:50051" }\n'
                    '[rate]\nhospitals = { "hospital:44:gz" = { rate = 5 } }\n')
    config = load_config(path)
    assert config.database == tmp_path / "n.db" and config.key_directory == tmp_path / "keys"
    assert config.endpoints == {"33": "127.0.0.1:50051"} and config.hospital_limits == {"hospital:44:gz": (5.0, 5.0)}
    pg = parse_config({**_toml(BASE), "database": "postgresql://u@h/db?schema=national"}, tmp_path)
    assert pg.database == "postgresql://u@h/db?schema=national"
    assert config.max_provisional_age_hours == 72
    assert parse_config({**_toml(BASE), "max_provisional_age_hours": 12}, tmp_path).max_provisional_age_hours == 12


def _toml(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["tls"].pop("client_ca"), "mTLS"),
    (lambda d: d.pop("database"), "database"),
    (lambda d: d.update(listen="nowhere"), "listen"),
    (lambda d: d["key"].update(keystore="vault"), "keystore"),
    (lambda d: d["key"].update(keystore="pkcs11"), "pkcs11_module"),
    (lambda d: d.update(provinces={"endpoints": {"33": "h:1"}}), "provinces.ca"),
    (lambda d: d.update(provinces={"ca": "a", "cert": "b", "key": "c", "endpoints": {"99": "h:1"}}), "99"),
    (lambda d: d.update(rate={"hospitals": {"someone": {"rate": 1}}}), "rate.hospitals"),
    (lambda d: d.update(rate={"hospital_rate": 0}), "hospital_rate"),
    (lambda d: d.update(surprise=1), "unknown setting surprise"),
    (lambda d: d["tls"].update(extra="x"), "unknown setting tls.extra"),
    (lambda d: d.update(partitions=0), "partitions"),
    (lambda d: d.update(max_provisional_age_hours=0), "max_provisional_age_hours"),
    (lambda d: d.update(max_provisional_age_hours=24 * 91), "max_provisional_age_hours"),
    (lambda d: d.update(max_provisional_age_hours=True), "max_provisional_age_hours"),
])
def test_bad_configs(tmp_path, change, message):
    data = _toml(BASE)
    change(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path)
    assert message in str(info.value)
    assert isinstance(info.value, NationalError)


def _doc():
    return parse_document("resident_id", make_resident_id("330102", dt.date(1990, 1, 1), 7), today=TODAY)


def test_file_key_round_trip_owner_only_and_never_overwritten(tmp_path):
    fast = {"n": 2**10, "r": 8, "p": 1}
    path = FileNationalKey.generate(tmp_path / "keys", "national-blind-index", b"pass", scrypt=fast)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = open_national_key("file", secret=b"pass", directory=tmp_path / "keys")
    index = NationalBlindIndex(key)
    assert index.blind_index(_doc()) == index.blind_index(_doc()) and len(index.blind_index(_doc())) == 32
    raw = path.read_bytes()
    assert _doc().number.encode() not in raw
    with pytest.raises(NationalKeyError):
        generate_national_key("file", secret=b"pass", directory=tmp_path / "keys")
    assert path.read_bytes() == raw
    with pytest.raises(NationalKeyError, match="wrong passphrase"):
        open_national_key("file", secret=b"wrong", directory=tmp_path / "keys")
    os.chmod(path, 0o644)
    with pytest.raises(NationalKeyError, match="chmod 600"):
        open_national_key("file", secret=b"pass", directory=tmp_path / "keys")


def test_blind_index_is_keyed():
    a, b = NationalBlindIndex(SoftwareHmacKey(b"a" * 32)), NationalBlindIndex(SoftwareHmacKey(b"b" * 32))
    assert a.blind_index(_doc()) != b.blind_index(_doc())
    import hashlib

    assert a.blind_index(_doc()) != hashlib.sha256(b"resident_id:" + _doc().number.encode()).digest()
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(a)


def _row(mid: str, at: int) -> IdentityRow:
    return IdentityRow(mid, "33", ACTIVE, None, at, at)  # type: ignore[arg-type]


def test_merge_rule_registered_first_then_smaller_id():
    early, late = _row("B" * 25 + "A", 100), _row("A" * 26, 200)
    assert survivor_of(early, late) is early and survivor_of(late, early) is early
    tie_a, tie_b = _row("A" * 26, 100), _row("B" * 25 + "A", 100)
    assert survivor_of(tie_a, tie_b) is tie_a and survivor_of(tie_b, tie_a) is tie_a


def test_module_sizes_stay_small():
    root = pathlib.Path(__file__).resolve().parents[2] / "national"
    for path in root.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 600, path.name
