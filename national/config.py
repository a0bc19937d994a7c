"""The national service's configuration: one frozen dataclass from a TOML file.

Relative paths are relative to the file's directory. Nothing here reads the
environment: the CLI reads the national key's passphrase (or the token's PIN)
from the variable ``key.passphrase_env`` names. Example::

    listen = "0.0.0.0:50070"
    database = "national.db"          # an SQLite file, or postgresql://user@host/db?schema=national
    partitions = 16                   # PostgreSQL: HASH partitions of identities and documents (at creation)
    log_level = "INFO"
    grace_period = 10.0
    max_provisional_age_hours = 72    # how far back a province's provisional registration time may reach

    [tls]                             # mTLS is required: every caller presents a certificate
    cert = "pki/national-server.pem"
    key = "pki/national-server.key"   # owner-only
    client_ca = "pki/ca.pem"          # provinces' (province:<code>) and hospitals' (hospital:<p>:<org>) CA

    [key]                             # the national blind-index key (healthcode-national key generate)
    keystore = "file"                 # or "pkcs11"
    directory = "keys/national"       # file keystore
    # pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"
    # pkcs11_token = "national"
    label = "national-blind-index"
    passphrase_env = "HC_NATIONAL_KEY_PASSPHRASE"   # the file's passphrase, or the token's user PIN

    [provinces]                       # calling the provinces' NationalLink (transfers, resolutions)
    ca = "pki/ca.pem"                 # the provinces' server CA
    cert = "pki/national-index.pem"   # the national index's client certificate, CN national-index:<name>
    key = "pki/national-index.key"    # owner-only
    timeout_seconds = 5.0
    endpoints = { "33" = "issuer-33.internal:50051", "44" = "issuer-44.internal:50051" }

    [trust]                           # the provinces' public keys, to verify scanned codes
    key_lists = ["trust/provinces/33/keys.json", "trust/provinces/44/keys.json"]  # healthcode-key-list files
    # dev_bundle = "trust/bundle.json"  # or the verifier's unsigned development bundle (tests, demos)

    [rate]                            # token buckets per caller
    hospital_rate = 20.0              # resolutions a second, per hospital ...
    hospital_burst = 40               # ... and bucket size
    province_rate = 2000.0
    province_burst = 4000
    hospitals = { "hospital:44:gz-first" = { rate = 50.0, burst = 100 } }

    [metrics]
    port = 9465                       # 0: off
    address = "127.0.0.1"
"""

from __future__ import annotations

import pathlib
import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping

from healthcode import PROVINCES

from .admission import HOSPITAL_CN
from .blind_index import DEFAULT_LABEL
from .errors import ConfigError
from .store import is_postgres_url

__all__ = ["NationalConfig", "load_config", "parse_config"]


@dataclass(frozen=True, kw_only=True)
class NationalConfig:
    """Everything ``healthcode-national serve`` needs. Validated on construction."""

    database: pathlib.Path | str
    tls_cert: pathlib.Path
    tls_key: pathlib.Path
    client_ca: pathlib.Path
    keystore: str = "file"
    key_directory: pathlib.Path | None = None
    pkcs11_module: pathlib.Path | None = None
    pkcs11_token: str | None = None
    key_label: str = DEFAULT_LABEL
    key_passphrase_env: str = "HC_NATIONAL_KEY_PASSPHRASE"
    listen: str = "127.0.0.1:50070"
    partitions: int = 16
    log_level: str = "INFO"
    grace_period: float = 10.0
    provinces_ca: pathlib.Path | None = None
    provinces_cert: pathlib.Path | None = None
    provinces_key: pathlib.Path | None = None
    provinces_timeout: float = 5.0
    provinces_server_name: str | None = None
    endpoints: Mapping[str, str] = field(default_factory=dict)
    trust_key_lists: tuple[pathlib.Path, ...] = ()
    trust_dev_bundle: pathlib.Path | None = None
    hospital_rate: float = 20.0
    hospital_burst: float = 40.0
    province_rate: float = 2000.0
    province_burst: float = 4000.0
    hospital_limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    max_provisional_age_hours: float = 72.0

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError("listen must be host:port (for example 0.0.0.0:50070)")
        if isinstance(self.database, str) and not is_postgres_url(self.database):
            object.__setattr__(self, "database", pathlib.Path(self.database))
        if not 1 <= self.partitions <= 1024:
            raise ConfigError("partitions must be 1 to 1024")
        if self.keystore == "file":
            if self.key_directory is None:
                raise ConfigError('key.keystore = "file" needs key.directory')
        elif self.keystore == "pkcs11":
            if self.pkcs11_module is None or not self.pkcs11_token:
                raise ConfigError('key.keystore = "pkcs11" needs key.pkcs11_module and key.pkcs11_token')
        else:
            raise ConfigError('key.keystore must be "file" or "pkcs11"')
        if self.endpoints and (self.provinces_ca is None or self.provinces_cert is None or self.provinces_key is None):
            raise ConfigError("provinces.endpoints need provinces.ca, provinces.cert and provinces.key (mTLS)")
        for code, target in self.endpoints.items():
            if code not in PROVINCES:
                raise ConfigError(f"provinces.endpoints: {code!r} is not a GB/T 2260 province code")
            if not isinstance(target, str) or ":" not in target:
                raise ConfigError(f"provinces.endpoints.{code} must be host:port")
        if not self.provinces_timeout > 0:
            raise ConfigError("provinces.timeout_seconds must be positive")
        if self.trust_key_lists and self.trust_dev_bundle is not None:
            raise ConfigError("give trust.key_lists or trust.dev_bundle, not both")
        for rate, burst, name in ((self.hospital_rate, self.hospital_burst, "hospital"),
                                  (self.province_rate, self.province_burst, "province")):
            if not (rate > 0 and burst >= 1):
                raise ConfigError(f"rate.{name}_rate must be > 0 and rate.{name}_burst >= 1")
        for cn, (rate, burst) in self.hospital_limits.items():
            if not HOSPITAL_CN.fullmatch(cn) or not (rate > 0 and burst >= 1):
                raise ConfigError(f"rate.hospitals: {cn!r} needs a hospital:<province>:<organisation> name, "
                                  "rate > 0 and burst >= 1")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("metrics.port must be 0 (off) or a TCP port")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log_level must be DEBUG, INFO, WARNING or ERROR")
        if self.grace_period < 0:
            raise ConfigError("grace_period must be >= 0")
        hours = self.max_provisional_age_hours
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 < hours <= 24 * 90:
            raise ConfigError("max_provisional_age_hours must be more than 0 and at most 2160 (90 days)")


def _table(data: Mapping[str, Any], name: str, keys: set[str]) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    unknown = set(table) - keys
    if unknown:
        raise ConfigError(f"unknown setting {name}.{sorted(unknown)[0]}")
    return table


def parse_config(data: Mapping[str, Any], base: pathlib.Path) -> NationalConfig:
    """The configuration a parsed TOML document describes (relative paths against ``base``)."""
    top = {"listen", "database", "partitions", "log_level", "grace_period", "max_provisional_age_hours", "tls", "key",
           "provinces", "trust", "rate", "metrics"}
    unknown = set(data) - top
    if unknown:
        raise ConfigError(f"unknown setting {sorted(unknown)[0]}")

    def path(value: Any, name: str) -> pathlib.Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a path")
        p = pathlib.Path(value)
        return p if p.is_absolute() else base / p

    tls = _table(data, "tls", {"cert", "key", "client_ca"})
    key = _table(data, "key", {"keystore", "directory", "pkcs11_module", "pkcs11_token", "label", "passphrase_env"})
    prov = _table(data, "provinces", {"ca", "cert", "key", "timeout_seconds", "server_name_override", "endpoints"})
    trust = _table(data, "trust", {"key_lists", "dev_bundle"})
    rate = _table(data, "rate", {"hospital_rate", "hospital_burst", "province_rate", "province_burst", "hospitals"})
    metrics = _table(data, "metrics", {"port", "address"})
    values: dict[str, Any] = {}
    try:
        database = data["database"]
        for name in ("cert", "key", "client_ca"):
            if name not in tls:
                raise ConfigError(f"tls.{name} is required: the national service is served over mTLS only")
    except KeyError:
        raise ConfigError("database is required") from None
    values["database"] = database if is_postgres_url(database) else path(database, "database")
    values["tls_cert"], values["tls_key"] = path(tls["cert"], "tls.cert"), path(tls["key"], "tls.key")
    values["client_ca"] = path(tls["client_ca"], "tls.client_ca")
    for name in ("listen", "log_level"):
        if name in data:
            values[name] = data[name]
    for name in ("partitions", "grace_period", "max_provisional_age_hours"):
        if name in data:
            values[name] = data[name]
    if "keystore" in key:
        values["keystore"] = key["keystore"]
    if "directory" in key:
        values["key_directory"] = path(key["directory"], "key.directory")
    if "pkcs11_module" in key:
        values["pkcs11_module"] = pathlib.Path(key["pkcs11_module"])
    for src, dst in (("pkcs11_token", "pkcs11_token"), ("label", "key_label"),
                     ("passphrase_env", "key_passphrase_env")):
        if src in key:
            values[dst] = key[src]
    for src, dst in (("ca", "provinces_ca"), ("cert", "provinces_cert"), ("key", "provinces_key")):
        if src in prov:
            values[dst] = path(prov[src], f"provinces.{src}")
    if "timeout_seconds" in prov:
        values["provinces_timeout"] = float(prov["timeout_seconds"])
    if "server_name_override" in prov:
        values["provinces_server_name"] = prov["server_name_override"] or None
    if "endpoints" in prov:
        if not isinstance(prov["endpoints"], dict):
            raise ConfigError("provinces.endpoints must be a table of province = host:port")
        values["endpoints"] = dict(prov["endpoints"])
    if "key_lists" in trust:
        if not isinstance(trust["key_lists"], list):
            raise ConfigError("trust.key_lists must be a list of paths")
        values["trust_key_lists"] = tuple(path(p, "trust.key_lists") for p in trust["key_lists"])
    if "dev_bundle" in trust:
        values["trust_dev_bundle"] = path(trust["dev_bundle"], "trust.dev_bundle")
    for name in ("hospital_rate", "hospital_burst", "province_rate", "province_burst"):
        if name in rate:
            values[name] = float(rate[name])
    if "hospitals" in rate:
        limits = {}
        for cn, entry in dict(rate["hospitals"]).items():
            if not isinstance(entry, dict) or "rate" not in entry:
                raise ConfigError(f"rate.hospitals.{cn} must be {{ rate = ..., burst = ... }}")
            limits[cn] = (float(entry["rate"]), float(entry.get("burst", max(1.0, float(entry["rate"])))))
        values["hospital_limits"] = limits
    if "port" in metrics:
        values["metrics_port"] = metrics["port"]
    if "address" in metrics:
        values["metrics_address"] = metrics["address"]
    try:
        return NationalConfig(**values)
    except TypeError as e:
        raise ConfigError(str(e)) from None


def load_config(file: pathlib.Path | str) -> NationalConfig:
    """Read and validate the TOML file ``file``."""
    file = pathlib.Path(file)
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {file}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {file} is not valid TOML: {e}") from None
    return parse_config(data, file.parent)
