"""The issuer's configuration: one frozen dataclass, from a TOML file and/or CLI flags.

:func:`load_config` merges a TOML file with flag values (a flag given on the
command line overrides the file) and validates the result. Relative paths in
the file are relative to the file's directory; relative paths from flags are
relative to the working directory. Nothing here reads the environment: the
signing key's passphrase is read by the CLI from the variable
``signing_key_passphrase_env`` names.

Example file (every key optional in the file if given as a flag)::

    province = "33"
    database = "issuer-33.db"         # an SQLite file, or postgresql://user@host/db?schema=issuer_33
    listen = "0.0.0.0:50051"
    code_validity_hours = 168
    grace_period = 10.0

    [tls]
    cert = "pki/server.pem"
    key = "pki/server.key"
    client_ca = "pki/ca.pem"          # optional: turns on mTLS (every client then needs a certificate)

    [auth]
    api_keys = "callers.toml"         # see issuer/auth.py for its format; owner-only (chmod 600)
    issuance_clients = ["registration-desk"]   # client-certificate CNs that may issue (needs tls.client_ca);
                                      # admin:<province> and national:<name> certificates reach KeyAdmin only
    rate = 100.0                      # default per-caller token bucket: tokens a second ...
    burst = 200                       # ... and bucket size
    wallet_clients = ["wallet-gateway"]  # client-certificate CNs with the wallet role (enrolment and the
                                      # resident's own reads only; API keys get it with role = "wallet")
    wallet_rate = 20.0                # the wallet role's default bucket (stricter): tokens a second ...
    wallet_burst = 40                 # ... and bucket size

    [keys]
    signing_key = "keys/signing-33.pem"          # PKCS#8 PEM, P-256 (ES256) or Ed25519 (EdDSA)
    signing_key_passphrase_env = "HC_SIGNING_KEY_PASSPHRASE"   # if the PEM is encrypted
    vault_key = "keys/vault.key"                 # 32 bytes as 64 hex digits; owner-only (chmod 600)

Rotating keys instead of one fixed ``signing_key`` (see ``keys/lifecycle.py``)::

    [keys]
    key_set = "keys/key-set-33.json"  # the province's key set; re-read when it changes and on SIGHUP
    key_set_check_seconds = 5.0       # how often its file is checked
    keystore = "file"                 # "file" (encrypted PKCS#8 files) or "pkcs11" (an HSM)
    keystore_dir = "keys/store-33"    # file keystore directory
    # pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so"   # for keystore = "pkcs11"
    # pkcs11_token = "province-33"
    signing_key_passphrase_env = "HC_KEYSTORE_SECRET"   # the file keystore's passphrase, or the token's user PIN
    vault_key = "keys/vault.key"

    [key_admin]                       # the KeyAdmin gRPC service (needs keys.key_set and tls.client_ca)
    trust_repo = "/srv/trust-repo"    # the national trust repository directory
    tuf_keys = "province-33/tuf-33"   # the province's TUF role keys (healthcode-keys province add)
    tuf_passphrase_env = "HC_TUF_PASSPHRASE"
    # online_keys = "national-keys/online"          # optional: snapshot + timestamp at once on publish
    # online_passphrase_env = "HC_ONLINE_PASSPHRASE"

    [revocation]                      # publish revocations (issuer/revocation_job.py)
    directory = "revocation-33"       # snapshot and delta files, laid out as TUF targets
    push_mode = "repository"          # or "directory-only": another tool signs the files in
    interval_minutes = 60             # scheduled publication; also at start and after revocations
    min_interval_seconds = 60         # on-demand publications at most this often
    keep_deltas = 168                 # deltas kept per key (older verifiers fetch the snapshot)
    # "repository" signs with the [key_admin] trust_repo and tuf_keys (online_keys: publish at once)

A province whose national repository is on another machine signs into a working
copy (``key_admin.trust_repo``) and pushes to the national trust publisher
(``issuer/role_push.py``, ``healthcode-publisher serve``)::

    [revocation]
    push_mode = "network"
    publisher = "trust-publisher.example:50070"
    publisher_ca = "pki/national-ca.pem"          # the publisher's certificate chains to this
    publisher_cert = "pki/province-33.pem"        # client certificate, CN province:33
    publisher_key = "pki/province-33.key"         # owner-only
    push_poll_seconds = 1.0                       # how often KeyAdmin's role changes are looked for

    [metrics]
    port = 9464                       # 0: no metrics endpoint
    address = "127.0.0.1"

    [national]                        # the national index (issue 14); without it the issuer is province-only
    address = "national.example:50061"
    ca = "pki/national-ca.pem"        # verifies the national service's certificate
    cert = "pki/province-33.pem"      # this province's client certificate: subject CN "province:33"
    key = "pki/province-33.key"       # owner-only (chmod 600)
    # server_name = "national.example"  # the name checked in its certificate, if not the address's host
    claim_timeout_ms = 2000           # a registration waits this long for its claim, then goes on provisionally
    transfer_timeout_ms = 10000       # MoveResidentIn's TransferResident deadline
    reconcile_interval_seconds = 30   # the reconciler: provisional entries claimed, national events applied
    # The national service calls in (NationalLink) with a national:<name> certificate: tls.client_ca must
    # verify it.

    [wallets]                         # phone credentials (issue 13)
    device_key_algorithms = ["ES256", "SM2"]   # device keys bound into credentials: "ES256" (P-256, the
                                      # default alone) and "SM2" (SM2 with SM3; needs the sm2 extra)

    [http]                            # Connect (JSON, binary) and gRPC-Web beside gRPC (issuer/http_server.py)
    enabled = true                    # off by default
    address = "0.0.0.0:8443"          # host:port; TLS with [tls]'s certificate (client certificates optional)
    wallet_dir = "webwallet/dist"     # the web wallet's built files, served at /wallet/ (default: the
                                      # repository's webwallet/dist when it exists)

Plaintext gRPC is never configured in the file: only the
``--insecure-dev-plaintext`` flag turns TLS off, for one development run.

Secret files (``keys.vault_key``, ``auth.api_keys``, ``keys.signing_key``,
``tls.key``, ``national.key``) must be owner-only: ``healthcode-issuer serve`` refuses to start
when group or others have any permission on one, and says ``chmod 600 <path>``.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import tomllib
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from healthcode import PROVINCES, Algorithm
from issuer.errors import IssuerError

__all__ = ["IssuerConfig", "ConfigError", "load_config", "FILE_KEYS", "DEVICE_KEY_ALGORITHM_NAMES"]

#: ``[wallets] device_key_algorithms`` names: the device keys an issuer can bind.
DEVICE_KEY_ALGORITHM_NAMES = {"ES256": Algorithm.ES256, "SM2": Algorithm.SM2_SM3}


class ConfigError(IssuerError, ValueError):
    """The configuration is incomplete or inconsistent; the message says which setting.

    Under the issuer's root; still a :class:`ValueError` for callers that catch that.
    """

    reason = "config"


@dataclass(frozen=True, kw_only=True)
class IssuerConfig:
    """Everything ``healthcode-issuer serve`` needs. Validated on construction."""

    province: str
    database: pathlib.Path | str  # an SQLite file, or a postgresql:// URL (text: a Path would fold its "//")
    vault_key: pathlib.Path
    signing_key: pathlib.Path | None = None
    signing_key_passphrase_env: str | None = None
    key_set: pathlib.Path | None = None
    key_set_check_interval: float = 5.0
    keystore: str = "file"
    keystore_dir: pathlib.Path | None = None
    pkcs11_module: pathlib.Path | None = None
    pkcs11_token: str | None = None
    listen: str = "127.0.0.1:50051"
    tls_cert: pathlib.Path | None = None
    tls_key: pathlib.Path | None = None
    client_ca: pathlib.Path | None = None
    insecure_dev_plaintext: bool = False
    api_keys: pathlib.Path | None = None
    issuance_clients: tuple[str, ...] = ()
    wallet_clients: tuple[str, ...] = ()
    rate: float = 100.0
    burst: float = 200.0
    wallet_rate: float = 20.0
    wallet_burst: float = 40.0
    code_validity: dt.timedelta = dt.timedelta(days=7)
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    http_enabled: bool = False
    http_listen: str = "127.0.0.1:8443"
    http_wallet_dir: pathlib.Path | None = None
    grace_period: float = 10.0
    min_time_remaining: float = 0.010
    max_concurrent_rpcs: int | None = None
    log_level: str = "INFO"
    trust_repo: pathlib.Path | None = None
    tuf_keys: pathlib.Path | None = None
    tuf_keys_passphrase_env: str | None = None
    online_keys: pathlib.Path | None = None
    online_keys_passphrase_env: str | None = None
    revocation_directory: pathlib.Path | None = None
    revocation_push_mode: str = "repository"
    revocation_interval: float = 3600.0
    revocation_min_interval: float = 60.0
    revocation_keep_deltas: int = 168
    revocation_publisher: str | None = None
    revocation_publisher_ca: pathlib.Path | None = None
    revocation_publisher_cert: pathlib.Path | None = None
    revocation_publisher_key: pathlib.Path | None = None
    revocation_push_poll: float = 1.0
    national_address: str | None = None
    national_ca: pathlib.Path | None = None
    national_cert: pathlib.Path | None = None
    national_key: pathlib.Path | None = None
    national_server_name: str | None = None
    national_claim_timeout: float = 2.0
    national_transfer_timeout: float = 10.0
    national_reconcile_interval: float = 30.0
    device_key_algorithms: tuple[str, ...] = ("ES256",)

    def __post_init__(self) -> None:
        self._check_database()
        if self.province not in PROVINCES:
            raise ConfigError("province must be a two-digit GB/T 2260 code (for example 33)")
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError("listen must be host:port (for example 0.0.0.0:50051)")
        if self.insecure_dev_plaintext:
            if self.client_ca is not None:
                raise ConfigError("client_ca (mTLS) needs TLS: drop --insecure-dev-plaintext")
        elif self.tls_cert is None or self.tls_key is None:
            raise ConfigError(
                "TLS needs tls.cert and tls.key (plaintext only with --insecure-dev-plaintext, for development)"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls.cert and tls.key go together")
        if self.api_keys is None and self.client_ca is None:
            raise ConfigError("no way to authenticate callers: set auth.api_keys and/or tls.client_ca")
        self._check_issuance_clients()
        if not (self.rate > 0 and self.burst >= 1):
            raise ConfigError("auth.rate must be > 0 and auth.burst >= 1")
        if not (self.wallet_rate > 0 and self.wallet_burst >= 1):
            raise ConfigError("auth.wallet_rate must be > 0 and auth.wallet_burst >= 1")
        if self.code_validity <= dt.timedelta(0):
            raise ConfigError("code_validity_hours must be positive")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("metrics.port must be 0 (off) or a TCP port")
        host, sep, port = self.http_listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError("http.address must be host:port (for example 0.0.0.0:8443)")
        if self.grace_period < 0 or self.min_time_remaining < 0:
            raise ConfigError("grace_period and min_time_remaining_ms must be >= 0")
        if self.max_concurrent_rpcs is not None and self.max_concurrent_rpcs < 1:
            raise ConfigError("max_concurrent_rpcs must be >= 1")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log_level must be DEBUG, INFO, WARNING or ERROR")
        self._check_key_source()
        self._check_device_key_algorithms()
        self._check_key_admin()
        self._check_revocation()
        self._check_national()

    def _check_national(self) -> None:
        files = (self.national_ca, self.national_cert, self.national_key)
        if self.national_address is None:
            if any(f is not None for f in files) or self.national_server_name is not None:
                raise ConfigError("national.ca, cert, key and server_name need national.address")
            return
        host, sep, port = self.national_address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError("national.address must be host:port (for example national.example:50061)")
        if any(f is None for f in files):
            raise ConfigError("national needs ca, cert and key (this province's province:<code> certificate)")
        if self.client_ca is None:
            raise ConfigError("national: the national service calls in over mTLS: set tls.client_ca")
        if not (self.national_claim_timeout > 0 and self.national_transfer_timeout > 0
                and self.national_reconcile_interval > 0):
            raise ConfigError("national.claim_timeout_ms, transfer_timeout_ms and reconcile_interval_seconds "
                              "must be positive")

    def _check_database(self) -> None:
        if not isinstance(self.database, str):
            return
        from issuer.store import is_postgres_url

        if not is_postgres_url(self.database):
            object.__setattr__(self, "database", pathlib.Path(self.database))  # an SQLite file given as text
            return
        try:  # the postgres extra: missing, it is a configuration error, not a traceback at start
            from issuer.store.postgres import split_postgres_url
        except ImportError:
            raise ConfigError("database: a postgresql:// URL needs psycopg: install healthcode[postgres]") from None
        try:
            split_postgres_url(self.database)
        except ValueError as e:
            raise ConfigError(f"database: {e}") from None

    def _check_issuance_clients(self) -> None:
        from issuer.auth import check_client_names, check_issuance_client_name

        for setting, names in (("issuance_clients", self.issuance_clients), ("wallet_clients", self.wallet_clients)):
            if names and self.client_ca is None:
                raise ConfigError(f"auth.{setting} names client certificates: set tls.client_ca")
            for name in names:
                try:
                    check_issuance_client_name(name, "a wallet client" if setting == "wallet_clients" else
                                               "an issuance client")
                except ValueError as e:
                    raise ConfigError(f"auth.{setting}: {e}") from None
            object.__setattr__(self, setting, tuple(names))
        try:
            check_client_names(self.issuance_clients, self.wallet_clients)
        except ValueError as e:
            raise ConfigError(f"auth: {e}") from None

    def _check_revocation(self) -> None:
        if self.revocation_directory is None:
            return
        if self.revocation_push_mode not in ("repository", "directory-only", "network"):
            raise ConfigError('revocation.push_mode must be "repository", "network" or "directory-only"')
        mode = self.revocation_push_mode
        if mode in ("repository", "network") and (self.trust_repo is None or self.tuf_keys is None):
            raise ConfigError(f'revocation.push_mode = "{mode}" needs key_admin.trust_repo and key_admin.tuf_keys '
                              '(or push_mode = "directory-only")')
        network = (self.revocation_publisher, self.revocation_publisher_ca, self.revocation_publisher_cert,
                   self.revocation_publisher_key)
        if mode == "network" and None in network:
            raise ConfigError('revocation.push_mode = "network" needs revocation.publisher, publisher_ca, '
                              'publisher_cert and publisher_key')
        if mode == "network" and self.online_keys is not None:
            raise ConfigError('revocation.push_mode = "network": the national publisher signs the snapshot and '
                              'timestamp; remove key_admin.online_keys')
        if mode != "network" and any(v is not None for v in network):
            raise ConfigError('revocation.publisher* settings need push_mode = "network"')
        if not self.revocation_push_poll > 0:
            raise ConfigError("revocation.push_poll_seconds must be positive")
        if not (self.revocation_interval > 0 and self.revocation_min_interval >= 0):
            raise ConfigError("revocation.interval_minutes must be positive and min_interval_seconds at least 0")
        if self.revocation_keep_deltas < 1:
            raise ConfigError("revocation.keep_deltas must be at least 1")

    def _check_key_admin(self) -> None:
        if self.trust_repo is None:
            if self.tuf_keys is not None or self.online_keys is not None:
                raise ConfigError("key_admin.tuf_keys and key_admin.online_keys need key_admin.trust_repo")
            return
        if self.key_set is None:
            raise ConfigError("key_admin needs rotating keys: set keys.key_set")
        if self.client_ca is None:
            raise ConfigError("key_admin is served over mTLS only: set tls.client_ca")

    def _check_device_key_algorithms(self) -> None:
        names = self.device_key_algorithms
        if not names or len(set(names)) != len(names) or not set(names) <= set(DEVICE_KEY_ALGORITHM_NAMES):
            raise ConfigError('wallets.device_key_algorithms must list "ES256" and/or "SM2", each once')
        if "SM2" in names:
            try:
                import gmalglib.core  # noqa: F401  (the sm2 extra)
            except ImportError:
                raise ConfigError("wallets.device_key_algorithms has SM2: install the sm2 extra "
                                  "(pip install 'healthcode[sm2]')") from None

    @property
    def device_key_algorithm_list(self) -> tuple[Algorithm, ...]:
        """``device_key_algorithms`` as :class:`~healthcode.Algorithm` values, in the configured order."""
        return tuple(DEVICE_KEY_ALGORITHM_NAMES[name] for name in self.device_key_algorithms)

    def _check_key_source(self) -> None:
        if (self.signing_key is None) == (self.key_set is None):
            raise ConfigError("give keys.signing_key (one fixed key) or keys.key_set (rotating keys), not both")
        if self.key_set is None:
            return
        if not self.key_set_check_interval > 0:
            raise ConfigError("keys.key_set_check_seconds must be positive")
        if self.keystore == "file":
            if self.keystore_dir is None:
                raise ConfigError("keys.keystore = \"file\" needs keys.keystore_dir")
        elif self.keystore == "pkcs11":
            if self.pkcs11_module is None or not self.pkcs11_token:
                raise ConfigError("keys.keystore = \"pkcs11\" needs keys.pkcs11_module and keys.pkcs11_token")
        else:
            raise ConfigError("keys.keystore must be \"file\" or \"pkcs11\"")


def _path(value: Any) -> pathlib.Path:
    if not isinstance(value, (str, pathlib.Path)) or not str(value):
        raise TypeError
    return pathlib.Path(value)


def _database(value: Any) -> pathlib.Path | str:
    from issuer.store import is_postgres_url

    return value if is_postgres_url(value) else _path(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    return float(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError
    return value


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError
    return tuple(value)


def _hours(value: Any) -> dt.timedelta:
    return dt.timedelta(hours=_number(value))


def _minutes(value: Any) -> float:
    return _number(value) * 60.0


def _millis(value: Any) -> float:
    return _number(value) / 1000.0


# (file section, file key) -> (IssuerConfig field, converter). Flags use the field names.
FILE_KEYS: Mapping[tuple[str, str], tuple[str, Callable[[Any], Any]]] = {
    ("", "province"): ("province", _str),
    ("", "database"): ("database", _database),
    ("", "listen"): ("listen", _str),
    ("", "code_validity_hours"): ("code_validity", _hours),
    ("", "grace_period"): ("grace_period", _number),
    ("", "min_time_remaining_ms"): ("min_time_remaining", _millis),
    ("", "max_concurrent_rpcs"): ("max_concurrent_rpcs", _int),
    ("", "log_level"): ("log_level", _str),
    ("tls", "cert"): ("tls_cert", _path),
    ("tls", "key"): ("tls_key", _path),
    ("tls", "client_ca"): ("client_ca", _path),
    ("auth", "api_keys"): ("api_keys", _path),
    ("auth", "issuance_clients"): ("issuance_clients", _names),
    ("auth", "wallet_clients"): ("wallet_clients", _names),
    ("auth", "rate"): ("rate", _number),
    ("auth", "burst"): ("burst", _number),
    ("auth", "wallet_rate"): ("wallet_rate", _number),
    ("auth", "wallet_burst"): ("wallet_burst", _number),
    ("keys", "signing_key"): ("signing_key", _path),
    ("keys", "signing_key_passphrase_env"): ("signing_key_passphrase_env", _str),
    ("keys", "vault_key"): ("vault_key", _path),
    ("keys", "key_set"): ("key_set", _path),
    ("keys", "key_set_check_seconds"): ("key_set_check_interval", _number),
    ("keys", "keystore"): ("keystore", _str),
    ("keys", "keystore_dir"): ("keystore_dir", _path),
    ("keys", "pkcs11_module"): ("pkcs11_module", _path),
    ("keys", "pkcs11_token"): ("pkcs11_token", _str),
    ("key_admin", "trust_repo"): ("trust_repo", _path),
    ("key_admin", "tuf_keys"): ("tuf_keys", _path),
    ("key_admin", "tuf_passphrase_env"): ("tuf_keys_passphrase_env", _str),
    ("key_admin", "online_keys"): ("online_keys", _path),
    ("key_admin", "online_passphrase_env"): ("online_keys_passphrase_env", _str),
    ("revocation", "directory"): ("revocation_directory", _path),
    ("revocation", "push_mode"): ("revocation_push_mode", _str),
    ("revocation", "interval_minutes"): ("revocation_interval", _minutes),
    ("revocation", "min_interval_seconds"): ("revocation_min_interval", _number),
    ("revocation", "keep_deltas"): ("revocation_keep_deltas", _int),
    ("revocation", "publisher"): ("revocation_publisher", _str),
    ("revocation", "publisher_ca"): ("revocation_publisher_ca", _path),
    ("revocation", "publisher_cert"): ("revocation_publisher_cert", _path),
    ("revocation", "publisher_key"): ("revocation_publisher_key", _path),
    ("revocation", "push_poll_seconds"): ("revocation_push_poll", _number),
    ("metrics", "port"): ("metrics_port", _int),
    ("metrics", "address"): ("metrics_address", _str),
    ("http", "enabled"): ("http_enabled", _bool),
    ("http", "address"): ("http_listen", _str),
    ("http", "wallet_dir"): ("http_wallet_dir", _path),
    ("national", "address"): ("national_address", _str),
    ("national", "ca"): ("national_ca", _path),
    ("national", "cert"): ("national_cert", _path),
    ("national", "key"): ("national_key", _path),
    ("national", "server_name"): ("national_server_name", _str),
    ("national", "claim_timeout_ms"): ("national_claim_timeout", _millis),
    ("national", "transfer_timeout_ms"): ("national_transfer_timeout", _millis),
    ("national", "reconcile_interval_seconds"): ("national_reconcile_interval", _number),
    ("wallets", "device_key_algorithms"): ("device_key_algorithms", _names),
}
_PATH_FIELDS = {"database", "tls_cert", "tls_key", "client_ca", "api_keys", "signing_key", "vault_key", "key_set",
                "keystore_dir", "pkcs11_module", "trust_repo", "tuf_keys", "online_keys", "revocation_directory",
                "http_wallet_dir", "national_ca", "national_cert", "national_key"}
_PATH_FIELDS |= {"revocation_publisher_ca", "revocation_publisher_cert", "revocation_publisher_key"}
_SECTIONS = {section for section, _ in FILE_KEYS if section}


def _from_file(path: pathlib.Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    values: dict[str, Any] = {}

    def take(section: str, table: Mapping[str, Any]) -> None:
        for key, value in table.items():
            if section == "" and key in _SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"config file: [{key}] must be a table")
                take(key, value)
                continue
            spec = FILE_KEYS.get((section, key))
            name = f"{section}.{key}" if section else key
            if spec is None:
                raise ConfigError(f"config file: unknown setting {name}")
            field, convert = spec
            try:
                converted = convert(value)
            except (TypeError, ValueError):
                raise ConfigError(f"config file: {name} has the wrong type") from None
            if field in _PATH_FIELDS and isinstance(converted, pathlib.Path) and not converted.is_absolute():
                converted = path.parent / converted
            values[field] = converted

    take("", data)
    return values


def load_config(file: pathlib.Path | None, flags: Mapping[str, Any] | None = None) -> IssuerConfig:
    """Build the configuration from ``file`` (TOML, optional) and ``flags``.

    ``flags`` maps :class:`IssuerConfig` field names to values; ``None`` means
    "not given" and leaves the file's value (or the default) in place.
    """
    values = _from_file(pathlib.Path(file)) if file is not None else {}
    known = {f.name for f in fields(IssuerConfig)}
    for name, value in (flags or {}).items():
        if name not in known:
            raise ConfigError(f"unknown setting {name}")
        if value is not None:
            values[name] = value
    missing = [n for n in ("province", "database", "signing_key", "vault_key") if n not in values]
    if "key_set" in values and "signing_key" in missing:
        missing.remove("signing_key")  # rotating keys instead of one fixed key
    missing = ["signing_key (or key_set)" if n == "signing_key" else n for n in missing]
    if missing:
        raise ConfigError("missing settings: " + ", ".join(missing) + " (flags or config file)")
    try:
        return IssuerConfig(**values)
    except TypeError as e:
        raise ConfigError(str(e)) from None
