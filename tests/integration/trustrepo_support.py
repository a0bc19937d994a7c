"""Shared harness of the trust repository tests (test_trustrepo*.py, test_mirror_http.py).

A national repository with its keys, built through the public API, and the
fixtures that sync a verifier from it. Everything runs on real directories:
the repository directory *is* the mirror (a USB stick).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import shutil
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

import healthcode as hc
from healthcode import Algorithm, TrustedKey
from healthcode.keylist import KeyList
from keys.trustrepo import TrustRepository
from keys.trustrepo_files import Change
from verifier.trustsync import (
    TrustSync,
)


UTC = dt.timezone.utc
# Far from the wall clock on purpose: expiry must be judged at the `now` we pass.
T0 = dt.datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
SUBJECT = hc.main_index_id_from_bytes(hashlib.sha256(b"trust sync resident").digest()[:16])
SMALL = ("11", "33", "44")


def gen(n: int) -> list[CryptoSigner]:
    return [CryptoSigner.generate_ed25519() for _ in range(n)]


@dataclasses.dataclass
class Province:
    code: str
    tuf: list[CryptoSigner]  # 3 keys, threshold 2
    keys: list  # healthcode signing keys, oldest first
    entries: list[TrustedKey]
    serial: int = 1

    def key_list(self) -> KeyList:
        return KeyList(province=self.code, serial=self.serial, keys=tuple(self.entries))


class Nation:
    """A repository with its keys, built through the public API."""

    def __init__(self, directory: Path, codes, *, now=T0, algs=(Algorithm.ES256,)):
        self.root_signers, self.targets_signers = gen(5), gen(5)
        self.snapshot_signers, self.timestamp_signers = gen(1), gen(1)
        self.repo, self.init_change = TrustRepository.init(
            directory,
            root_signers=self.root_signers, root_threshold=3,
            targets_signers=self.targets_signers, targets_threshold=3,
            snapshot_signers=self.snapshot_signers, timestamp_signers=self.timestamp_signers,
            now=now,
        )
        self.provinces: dict[str, Province] = {}
        for index, code in enumerate(codes):
            key = hc.generate_signing_key(algs[index % len(algs)])
            province = Province(code, gen(3), [key], [entry(code, key)])
            self.repo.add_province(code, province.tuf, 2, targets_signers=self.targets_signers[:3], now=now)
            self.repo.publish_key_list(province.key_list(), province.tuf[:2], now=now)
            self.provinces[code] = province
        self.publish(now)

    @property
    def directory(self) -> Path:
        return self.repo.directory

    def copy(self, directory: Path) -> "Nation":
        shutil.copytree(self.directory, directory)
        clone = object.__new__(Nation)
        clone.__dict__.update(self.__dict__)
        clone.repo = TrustRepository(directory, snapshot_signers=self.snapshot_signers,
                                     timestamp_signers=self.timestamp_signers)
        clone.provinces = {
            code: dataclasses.replace(p, keys=list(p.keys), entries=list(p.entries))
            for code, p in self.provinces.items()
        }
        return clone

    def publish(self, now) -> Change:
        return self.repo.publish(now=now)

    def publish_keys(self, code: str, now, entries=None) -> Change:
        province = self.provinces[code]
        if entries is not None:
            province.entries = entries
        province.serial += 1
        return self.repo.publish_key_list(province.key_list(), province.tuf[:2], now=now)

    def client(self, path: Path, source=None) -> TrustSync:
        return TrustSync(path / "metadata", path / "targets", source or self.directory, self.repo.root_bytes(1))


def entry(code, key, **kw) -> TrustedKey:
    fields = dict(kid=key.public_key().key_id(), province=code, public_key=key.public_key(),
                  use_from=T0 - DAY, use_until=T0 + 90 * DAY, verify_until=T0 + 120 * DAY)
    fields.update(kw)
    return TrustedKey(**fields)


def code_for(province: str, key, iat, serial=1) -> str:
    claims = hc.CodeClaims(province=province, subject=SUBJECT, serial=serial,
                           issued_at=iat, expires_at=iat + 7 * DAY)
    return hc.sign_code(claims, hc.SoftwareSigner(key))


def reason(code: str, keyring, now):
    result = hc.check(code, keyring, now=now)
    return "valid" if result.valid else result.reason


def snapshot_of(client: TrustSync, now):
    """What a verifier's cache holds: its keys (comparable) and its last verified refresh."""
    ring, last = client.load_cached(now)
    return sorted((k.province, k.kid, k.status) for k in ring), last


@pytest.fixture(scope="module")
def small_template(tmp_path_factory):
    return Nation(tmp_path_factory.mktemp("small") / "repo", SMALL)


@pytest.fixture
def nation(small_template, tmp_path):
    return small_template.copy(tmp_path / "repo")


@pytest.fixture
def synced(nation, tmp_path):
    client = nation.client(tmp_path / "client")
    result = client.refresh(T0 + HOUR)
    assert result.complete and result.changed == SMALL
    return nation, client
