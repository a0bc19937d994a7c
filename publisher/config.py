"""The publisher's configuration: one frozen dataclass, from a TOML file (flags override it).

Example file (relative paths are relative to the file's directory)::

    repository = "/srv/trust-repo"          # the national trust repository (mirrors serve this directory)
    state_dir = "/srv/publisher-state"      # staged pushes and the ledger; NOT served by mirrors
    online_keys = "national-keys/online"    # the snapshot and timestamp keys (healthcode-keys root init)
    online_passphrase_env = "HEALTHCODE_PASSPHRASE_ONLINE"
    listen = "0.0.0.0:50070"
    batch_window_seconds = 0.5              # pushes arriving together share one snapshot and timestamp
    timestamp_refresh_minutes = 60          # a new timestamp this often (it expires after 1 day)
    retention_hours = 24                    # old snapshots, role versions and files pruned after this (0: never)
    log_level = "INFO"

    [tls]                                   # mTLS is required: provinces are their certificates
    cert = "pki/publisher.pem"
    key = "pki/publisher.key"
    client_ca = "pki/ca.pem"                # province:<code> and national:<name> certificates

    [metrics]
    port = 9465                             # 0: no metrics endpoint
    address = "127.0.0.1"

Nothing here reads the environment: the CLI reads the online keys' passphrase
from the variable ``online_passphrase_env`` names.
"""

from __future__ import annotations

import pathlib
import tomllib
from dataclasses import MISSING, dataclass, fields
from typing import Any, Mapping

from keys.trustrepo_files import RepoConfig

from .errors import ConfigError

__all__ = ["PublisherConfig", "load_config"]


@dataclass(frozen=True, kw_only=True)
class PublisherConfig:
    """Everything ``healthcode-publisher serve`` needs. Validated on construction."""

    repository: pathlib.Path
    state_dir: pathlib.Path
    online_keys: pathlib.Path
    online_passphrase_env: str = "HEALTHCODE_PASSPHRASE_ONLINE"
    listen: str = "127.0.0.1:50070"
    tls_cert: pathlib.Path
    tls_key: pathlib.Path
    client_ca: pathlib.Path
    batch_window: float = 0.5
    timestamp_refresh: float = 3600.0
    retention: float = 86400.0  # seconds; 0: never prune
    rate: float = 20.0  # pushes and status reads a second per caller (token bucket) ...
    burst: float = 40.0  # ... and bucket size
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    grace_period: float = 5.0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError("listen must be host:port (for example 0.0.0.0:50070)")
        if self.retention < 0:
            raise ConfigError("retention_hours must be >= 0 (0: never prune)")
        if self.batch_window < 0 or not self.timestamp_refresh > 0:
            raise ConfigError("batch_window_seconds must be >= 0 and timestamp_refresh_minutes positive")
        expiry = RepoConfig().timestamp_expiry.total_seconds()  # the repository the publisher opens signs with it
        if self.timestamp_refresh >= expiry / 2:
            raise ConfigError(f"timestamp_refresh_minutes must be below {expiry / 120:g}, half the timestamp's "
                              f"{expiry / 3600:g} h expiry")
        if not (self.rate > 0 and self.burst >= 1):
            raise ConfigError("rate must be > 0 and burst >= 1")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("metrics.port must be 0 (off) or a TCP port")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log_level must be DEBUG, INFO, WARNING or ERROR")
        if self.state_dir.resolve().is_relative_to(self.repository.resolve()):
            raise ConfigError("state_dir must be outside the repository (mirrors serve the repository)")


_FILE_KEYS: Mapping[tuple[str, str], tuple[str, str]] = {
    ("", "repository"): ("repository", "path"),
    ("", "state_dir"): ("state_dir", "path"),
    ("", "online_keys"): ("online_keys", "path"),
    ("", "online_passphrase_env"): ("online_passphrase_env", "str"),
    ("", "listen"): ("listen", "str"),
    ("", "batch_window_seconds"): ("batch_window", "number"),
    ("", "timestamp_refresh_minutes"): ("timestamp_refresh", "minutes"),
    ("", "retention_hours"): ("retention", "hours"),
    ("", "rate"): ("rate", "number"),
    ("", "burst"): ("burst", "number"),
    ("", "grace_period"): ("grace_period", "number"),
    ("", "log_level"): ("log_level", "str"),
    ("tls", "cert"): ("tls_cert", "path"),
    ("tls", "key"): ("tls_key", "path"),
    ("tls", "client_ca"): ("client_ca", "path"),
    ("metrics", "port"): ("metrics_port", "int"),
    ("metrics", "address"): ("metrics_address", "str"),
}


def _convert(kind: str, value: Any, base: pathlib.Path, where: str) -> Any:
    if kind == "path" and isinstance(value, str):
        return base / value
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "int" and type(value) is int:
        return value
    if kind in ("number", "minutes", "hours") and type(value) in (int, float):
        return float(value) * {"minutes": 60, "hours": 3600}.get(kind, 1)
    raise ConfigError(f"{where}: expected a {kind}")


def load_config(path: pathlib.Path | None, flags: Mapping[str, Any]) -> PublisherConfig:
    """The file's settings (if any) overridden by ``flags`` (field names; None means not given)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        base = path.parent
        for key, value in data.items():
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for sub, item in items:
                section, name = (key, sub) if sub is not None else ("", key)
                if (section, name) not in _FILE_KEYS:
                    raise ConfigError(f"unknown setting {section + '.' if section else ''}{name} in {path}")
                field, kind = _FILE_KEYS[(section, name)]
                values[field] = _convert(kind, item, base, f"{path}: {name}")
    values.update({k: v for k, v in flags.items() if v is not None})
    missing = [f.name for f in fields(PublisherConfig) if f.name not in values and f.default is MISSING]
    if missing:
        raise ConfigError(f"missing settings: {', '.join(sorted(missing))}")
    try:
        return PublisherConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
