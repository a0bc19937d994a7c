"""The publisher refuses what its writer cannot write, and one bad staged push blocks nothing else.

Regression tests of a review of ``publisher/``: pushed paths are checked with
the writer's own rule (``keys.trustrepo_files.province_target_path``), role
versions fit the staged file's name, a role must outlive its publication,
a staged push that cannot be written is quarantined, and the timestamp refresh
never spins. Reuses the :class:`World` of ``test_publisher_checks``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time

import pytest
from tuf.api.metadata import Metadata, TargetFile, Targets

import healthcode as hc
from healthcode.keylist import KeyList
from publisher.config import PublisherConfig
from publisher.errors import ConfigError, Reason
from publisher.service import PublicationLoop
from publisher.store import PublisherStore
from tests.unit.test_publisher_checks import DAY, T0, Province, World, refused

UTC = dt.timezone.utc


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


def resigned(p: Province, role_bytes: bytes, *, add: dict[str, bytes] | None = None,
             version: int | None = None, expires: dt.datetime | None = None) -> bytes:
    """``role_bytes`` changed as given and signed again by a threshold of ``p``'s keys."""
    md = Metadata[Targets].from_bytes(role_bytes)
    for path, data in (add or {}).items():
        md.signed.targets[path] = TargetFile.from_data(path, data, ["sha256"])
    if version is not None:
        md.signed.version = version
    if expires is not None:
        md.signed.expires = expires
    md.signatures.clear()
    for signer in p.tuf[:2]:
        md.sign(signer, append=True)
    return md.to_bytes()


BAD_NAMES = {
    "space": "revocation/ab/delta 1",
    "nul": "revocation/ab/delta\x001",
    "too_long": "revocation/ab/" + "d" * 300,
    "dot_dot": "revocation/../revocation/ab/x",
    "dot": "revocation/./ab",
    "empty_segment": "revocation//ab",
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_an_unlisted_name_the_writer_refuses_is_refused(world, name):
    role = world.provinces["33"].sign_keys()
    error = refused(world, Reason.OUTSIDE_DELEGATION,
                    lambda: world.push("33", role, unlisted=[(f"provinces/33/{name}", b"x")]))
    assert error.field == "unlisted"


LISTED_BAD = {
    "other_province_via_dot_dot": "provinces/33/../44/keys.json",
    "dot_dot_deeper": "provinces/33/revocation/../../44/keys.json",
    "space": "provinces/33/revocation/a b",
    "nul": "provinces/33/a\x00b",
    "too_long": "provinces/33/" + "a" * 300,
    "dot": "provinces/33/./keys2.json",
    "hidden": "provinces/33/.keys.json",
}


@pytest.mark.parametrize("path", LISTED_BAD.values(), ids=LISTED_BAD.keys())
def test_a_listed_path_the_writer_refuses_is_refused(world, path):
    p = world.provinces["33"]
    role = p.sign_keys()
    bad = resigned(p, role, add={path: b"payload"})
    refused(world, Reason.OUTSIDE_DELEGATION,
            lambda: world.push("33", bad, targets=p.files(role) + [(path, b"payload")]))


def test_a_province_cannot_plant_a_key_list_in_another_provinces_folder(world, tmp_path):
    p33, p44 = world.provinces["33"], world.provinces["44"]
    role = p33.sign_keys()
    key = hc.generate_signing_key(hc.Algorithm.ES256).public_key()
    entry = hc.TrustedKey(kid=key.key_id(), province="44", public_key=key, use_from=T0 - DAY,
                          use_until=T0 + 90 * DAY, verify_until=T0 + 120 * DAY)
    fake = KeyList(province="44", serial=10**9, keys=(entry,)).to_bytes()
    path = "provinces/33/../44/keys.json"
    bad = resigned(p33, role, add={path: fake})
    refused(world, Reason.OUTSIDE_DELEGATION, lambda: world.push("33", bad, targets=p33.files(role) + [(path, fake)]))
    assert PublisherStore(world.repo, tmp_path / "state")._serials.get("44") is None
    world.push("44", p44.sign_keys())  # 44's honest rotation is accepted


def test_a_version_too_large_for_the_staged_name_is_refused(world):
    p = world.provinces["33"]
    role = p.sign_keys()
    big = resigned(p, role, version=10**12)
    error = refused(world, Reason.MALFORMED, lambda: world.push("33", big, targets=p.files(role)))
    assert "version" in error.message
    ok = resigned(p, role, version=10**12 - 1)
    assert world.push("33", ok, targets=p.files(role))[0].version == 10**12 - 1
    world.store.publish_staged(now=T0)
    assert world.repo._published_snapshot().signed.meta["province-33.json"].version == 10**12 - 1


def test_a_role_expiring_within_the_margin_is_refused(world, tmp_path):
    p = world.provinces["33"]
    role = p.sign_keys()
    soon = resigned(p, role, expires=T0 + dt.timedelta(minutes=30))
    # the default margin (one hour and the batch window): expires too soon
    error = refused(world, Reason.EXPIRED, lambda: world.push("33", soon, targets=p.files(role)))
    assert "expires" in error.message
    # a store told of a shorter refresh period accepts it
    short = PublisherStore(world.repo, tmp_path / "short-state", min_validity=dt.timedelta(minutes=10))
    short.accept(caller_province="33", province="33", role_bytes=soon, targets=p.files(role), unlisted=[], now=T0)


def _stage_raw(world: World, code: str, role_bytes: bytes, targets: dict[str, bytes],
               unlisted: dict[str, bytes]) -> None:
    """A staged push written as an older publisher (without the path checks) would have staged it."""
    version = Metadata[Targets].from_bytes(role_bytes).signed.version
    header = {"province": code, "version": version, "accepted_at": "2030-03-01T08:00:00Z", "role": len(role_bytes),
              "targets": [[k, len(v)] for k, v in targets.items()],
              "unlisted": [[k, len(v)] for k, v in unlisted.items()]}
    body = b"".join([b"HCPUSH1\n", json.dumps(header).encode(), b"\n", role_bytes, *targets.values(),
                     *unlisted.values()])
    (world.store.state_dir / "staged" / f"{code}-{version:012d}.push").write_bytes(body)


def test_a_staged_push_that_cannot_be_written_is_quarantined_and_the_rest_published(world, tmp_path, caplog):
    p33, p44 = world.provinces["33"], world.provinces["44"]
    role33 = p33.sign_keys()
    _stage_raw(world, "33", role33, dict(p33.files(role33)), {"provinces/33/revocation/ab/delta 1": b"x"})
    store = PublisherStore(world.repo, tmp_path / "state")  # a restart loads it
    world.store = store
    world.push("44", p44.sign_keys())
    with caplog.at_level(logging.ERROR, logger="publisher.store"):
        publication = store.publish_staged(now=T0 + dt.timedelta(seconds=1))
    assert publication is not None and publication.provinces == ("44",)
    meta = world.repo._published_snapshot().signed.meta
    assert meta["province-44.json"].version == 2 and meta["province-33.json"].version == 1
    assert not store.staged()
    assert [f.name for f in (tmp_path / "state" / "quarantine").iterdir()] == ["33-000000000002.push"]
    records = [r for r in caplog.records if getattr(r, "event", None) == "push_quarantined"]
    assert records and records[0].province == "33" and "delta 1" in records[0].getMessage()
    # the province may push again (the quarantined version is not "accepted"), and the refresh works
    assert store.provinces()[0].accepted_version == 1
    world.push("33", role33)
    assert store.publish_staged(now=T0 + dt.timedelta(hours=1), force=True).provinces == ("33",)
    assert store.publish_staged(now=T0 + dt.timedelta(hours=2), force=True) is not None


def test_a_corrupt_staged_file_does_not_stop_the_timestamp_refresh(world, tmp_path):
    role = world.provinces["33"].sign_keys()
    world.push("33", role)
    staged = world.store.staged()[0]
    staged.write_bytes(staged.read_bytes()[:-5])  # truncated on disk
    before = world.store.timestamp().version
    world.store.publish_staged(now=T0 + dt.timedelta(hours=1), force=True)
    assert world.store.timestamp().version == before + 1
    assert (tmp_path / "state" / "quarantine" / staged.name).exists()


def test_the_loop_does_not_spin_when_the_refresh_is_half_the_expiry(world):
    loop = PublicationLoop(world.store, timestamp_refresh=12 * 3600, retry=5.0, clock=lambda: T0)
    loop.start()
    time.sleep(0.5)
    loop.stop(5)
    assert loop.publications <= 1


def test_a_refresh_period_of_half_the_timestamp_expiry_or_more_is_refused(tmp_path):
    base = dict(repository=tmp_path / "repo", state_dir=tmp_path / "state", online_keys=tmp_path / "k",
                tls_cert=tmp_path / "c", tls_key=tmp_path / "k.pem", client_ca=tmp_path / "ca")
    for minutes in (720, 1440):
        with pytest.raises(ConfigError, match="timestamp_refresh_minutes"):
            PublisherConfig(**base, timestamp_refresh=minutes * 60.0)
    assert PublisherConfig(**base, timestamp_refresh=719 * 60.0).timestamp_refresh == 719 * 60
