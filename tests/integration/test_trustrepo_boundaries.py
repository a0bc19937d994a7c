"""The national trust repository and a verifier's trust sync: delegation boundaries, corruption, cache, transport.

A province signs inside its own delegation only; files corrupted on the mirror
are refused; the offline cache refuses tampering; one test serves the
repository over a real local HTTP server.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import http.server
import json
import os
import shutil
import threading

import pytest
from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets

import healthcode as hc
from healthcode import Reason
from healthcode.keylist import KeyList
from keys.errors import TrustRepoError
from keys.trustrepo import TrustRepository
from keys.trustrepo_files import RepoConfig
from verifier.trustsync import (
    DirectoryFetcher,
    MirrorUnavailable,
    NotSynced,
    SyncError,
    TrustDataError,
    TrustSync,
)
from .trustrepo_support import DAY, HOUR, SMALL, T0, code_for, entry, gen, reason, snapshot_of
from .trustrepo_support import nation, small_template, synced  # noqa: F401 - fixtures


# ------------------------------------------------------------------ delegation


def _sign_role(nation, role: str, version: int, targets: dict, signers) -> None:  # noqa: F811 - the imported fixture
    md = Metadata(Targets(version=version, expires=T0 + 30 * DAY, targets=targets))
    for signer in signers:
        md.sign(signer, append=True)
    (nation.directory / "metadata" / f"{version}.{role}.json").write_bytes(md.to_bytes())


def _rogue_key_list(code):
    rogue = hc.generate_signing_key()
    return rogue, KeyList(province=code, serial=9, keys=(entry(code, rogue),)).to_bytes()


def test_unlisted_files_are_served_by_name_inside_the_delegation_only(synced):  # noqa: F811 - the imported fixture
    """Revocation deltas are served unlisted (nothing signs them; the verifier checks where they lead)."""
    nation, _client = synced  # noqa: F811 - the imported fixture
    repo = nation.repo
    name = "revocation/0011223344556677/delta-0000000001.hcrd"
    assert repo.put_unlisted("33", {name: b"delta"}) == (f"targets/provinces/33/{name}",)
    assert (nation.directory / "targets" / "provinces" / "33" / name).read_bytes() == b"delta"
    assert repo.unlisted("33", "revocation") == {name: b"delta"}
    assert "provinces/33/" + name not in repo.province_targets("33").targets  # not listed
    before = repo.province_targets("33").version
    repo.put_unlisted("33", {name: b"again"})  # replaced in place, no new role version
    assert repo.unlisted("33", "revocation") == {name: b"again"} and repo.province_targets("33").version == before
    for bad in ("../44/keys.json", "revocation/a/b/c", f"revocation/k/{'0' * 64}.delta.hcrd"):
        with pytest.raises(TrustRepoError):
            repo.put_unlisted("33", {bad: b"x"})
    repo.put_unlisted("33", {}, remove=[name])
    assert repo.unlisted("33", "revocation") == {}
    with pytest.raises(TrustRepoError, match="not among the files"):  # custom fields name a file being signed
        repo.publish_province_targets("33", {}, nation.provinces["33"].tuf[:2], now=T0 + HOUR,
                                      custom={"revocation/k/snapshot.hcrs": {"seq": 1}})


def test_a_province_cannot_sign_outside_its_delegation(synced):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    p33 = nation.provinces["33"]
    rogue, data = _rogue_key_list("44")
    with pytest.raises(TrustRepoError, match="bad target name"):
        nation.repo.publish_province_targets("33", {"../44/keys.json": data}, p33.tuf[:2], now=T0)
    # crafted on the mirror: province-33 lists provinces/44/keys.json, signed by 33's keys
    info = TargetFile.from_data("provinces/44/keys.json", data)
    path = nation.directory / "targets" / "provinces" / "44" / f"{info.hashes['sha256']}.keys.json"
    path.write_bytes(data)
    current = nation.repo.province_targets("33")
    _sign_role(nation, "province-33", current.version + 1,
               {**current.targets, "provinces/44/keys.json": info}, p33.tuf[:2])
    # and province 33's keys sign a province-44 role too
    _sign_role(nation, "province-44", nation.repo.province_targets("44").version + 1,
               {"provinces/44/keys.json": info}, p33.tuf[:2])
    change = nation.publish(T0 + 2 * HOUR)
    assert any("province-44" in w and "does not verify" in w for w in change.warnings)
    result = client.refresh(T0 + 3 * HOUR)
    assert set(result.failed) == {"33", "44"} and "province-44" in str(result.failed["44"])
    assert "province-33 signs provinces/44/keys.json, outside its delegation" in str(result.failed["33"])
    assert result.serials == {"11": 1, "33": 1, "44": 1}  # last good lists, each signed by its own keys
    now = T0 + 4 * HOUR
    assert reason(code_for("44", rogue, now), result.keyring, now) is Reason.UNKNOWN_KEY
    assert reason(code_for("44", nation.provinces["44"].keys[0], now), result.keyring, now) == "valid"
    assert reason(code_for("33", p33.keys[0], now), result.keyring, now) == "valid"


def _latest(nation, role: str) -> bytes:  # noqa: F811 - the imported fixture
    """The newest version of ``role`` the national repository wrote (``<version>.<role>.json``)."""
    files = (nation.directory / "metadata").glob(f"*.{role}.json")
    return max(files, key=lambda p: int(p.name.split(".", 1)[0])).read_bytes()


def test_the_revocation_files_role_check_is_the_key_lists_one(synced):  # noqa: F811 - the imported fixture
    """Both uses of a province role go through one check (``verify_province_role``): a role that
    signs a file outside its delegation is refused for its revocation files too, not only for
    its key list."""
    from verifier import revocation_sync

    nation, client = synced  # noqa: F811 - the imported fixture
    p33 = nation.provinces["33"]
    current = nation.repo.province_targets("33")
    national = Metadata[Targets].from_bytes(_latest(nation, "targets")).signed
    _, data = _rogue_key_list("44")
    rogue_version = current.version + 1
    _sign_role(nation, "province-33", rogue_version,
               {**current.targets, "provinces/44/keys.json": TargetFile.from_data("provinces/44/keys.json", data)},
               p33.tuf[:2])
    snapshot = Snapshot(version=1, expires=T0 + 30 * DAY,
                        meta={"targets.json": MetaFile(1), "province-33.json": MetaFile(rogue_version)})
    crafted = (nation.directory / "metadata" / f"{rogue_version}.province-33.json").read_bytes()
    with pytest.raises(TrustDataError, match="province-33 signs provinces/44/keys.json, outside its delegation"):
        revocation_sync.verify_province_role(national, snapshot, "33", crafted)
    honest = (nation.directory / "metadata" / f"{current.version}.province-33.json").read_bytes()
    assert revocation_sync.verify_province_role(national, snapshot, "33", honest).version == current.version
    with pytest.raises(TrustDataError, match="province-44 was signed by 0/2 keys"):  # 33's role is not 44's
        revocation_sync.verify_province_role(national, snapshot, "44", honest)


PROVINCE_REFUSALS = [
    ("name-escapes", {"../44/keys.json": b"x"}, 2, "bad target name"),
    ("name-hidden", {".keys.json": b"x"}, 2, "bad target name"),
    ("name-too-deep", {"a/b/c/d": b"x"}, 2, "bad target name"),
    ("key-list-of-other-province", {"keys.json": KeyList(province="44", serial=5, keys=()).to_bytes()}, 2,
     "came from province 33"),
    ("key-list-garbage", {"keys.json": b"{}"}, 2, "exactly the fields"),
    ("below-threshold", {"revocation/full-1.bin": b"x"}, 1, "signed by 1/2 keys"),
]


@pytest.mark.parametrize("name,files,signers,message", PROVINCE_REFUSALS, ids=[r[0] for r in PROVINCE_REFUSALS])
def test_repository_refuses_what_verifiers_would_refuse(nation, name, files, signers, message):  # noqa: F811 - the imported fixture
    before = sorted(os.listdir(nation.directory / "metadata"))
    with pytest.raises(TrustRepoError, match=message):
        nation.repo.publish_province_targets("33", files, nation.provinces["33"].tuf[:signers], now=T0)
    assert sorted(os.listdir(nation.directory / "metadata")) == before


def test_other_repository_refusals(nation):  # noqa: F811 - the imported fixture
    p33 = nation.provinces["33"]
    with pytest.raises(TrustRepoError, match="not one of the role's keys"):
        nation.repo.publish_province_targets("33", {}, nation.provinces["44"].tuf[:2], now=T0)
    with pytest.raises(TrustRepoError, match="province-22 is not delegated"):
        nation.repo.publish_province_targets("22", {}, p33.tuf[:2], now=T0)
    with pytest.raises(TrustRepoError, match="already delegated"):
        nation.repo.add_province("33", p33.tuf, 2, targets_signers=nation.targets_signers[:3], now=T0)
    with pytest.raises(TrustRepoError, match="signed by 2/3"):
        nation.repo.add_province("22", gen(3), 2, targets_signers=nation.targets_signers[:2], now=T0)
    with pytest.raises(TrustRepoError, match="threshold 4"):
        nation.repo.add_province("22", gen(3), 4, targets_signers=nation.targets_signers[:3], now=T0)
    with pytest.raises(TrustRepoError, match="timezone-aware"):
        nation.repo.publish(now=dt.datetime(2030, 1, 1))
    with pytest.raises(TrustRepoError, match="already exists"):
        TrustRepository.init(nation.directory, root_signers=gen(1), root_threshold=1, targets_signers=gen(1),
                             targets_threshold=1, snapshot_signers=gen(1), timestamp_signers=gen(1), now=T0)


def test_revocation_files_publish_beside_the_key_list(synced, tmp_path):  # noqa: F811 - the imported fixture
    """The API the revocation issue builds on: files under the province's own prefix,
    published beside the key list and read back through the same verification."""
    nation, client = synced  # noqa: F811 - the imported fixture
    p33 = nation.provinces["33"]
    change = nation.repo.publish_province_targets(
        "33", {"revocation/full-000001.bin": b"\x00" * 100, "revocation/delta-000002.bin": b"\x01"},
        p33.tuf[:2], now=T0 + HOUR)
    assert "provinces/33/revocation/full-000001.bin (100 bytes)" in change.summary
    change = nation.repo.publish_province_targets(
        "33", {"revocation/delta-000003.bin": b"\x02"}, p33.tuf[:2], now=T0 + HOUR,
        remove=["revocation/delta-000002.bin"])
    listed = nation.repo.province_targets("33").targets
    assert sorted(listed) == ["provinces/33/keys.json", "provinces/33/revocation/delta-000003.bin",
                              "provinces/33/revocation/full-000001.bin"]
    assert nation.repo.target_bytes("provinces/33/revocation/full-000001.bin") == b"\x00" * 100
    nation.publish(T0 + HOUR)
    with pytest.raises(NotSynced):
        nation.client(tmp_path / "not-refreshed").fetch_target("provinces/33/keys.json")
    result = client.refresh(T0 + 2 * HOUR)
    assert result.complete and result.changed == () and result.serials["33"] == 1
    # the verifier side of the revocation issue reads them through the same verification
    listed = client.province_targets("33")
    assert listed["provinces/33/revocation/full-000001.bin"] == 100 and len(listed) == 3
    assert client.fetch_target("provinces/33/revocation/full-000001.bin") == b"\x00" * 100
    with pytest.raises(TrustDataError, match="not a target"):
        client.fetch_target("provinces/33/revocation/delta-000002.bin")
    info = nation.repo.province_targets("33").targets["provinces/33/revocation/delta-000003.bin"]
    revocation_dir = nation.directory / "targets" / "provinces" / "33" / "revocation"
    path = revocation_dir / f"{info.hashes['sha256']}.delta-000003.bin"
    path.write_bytes(b"\x03")
    with pytest.raises(TrustDataError, match="hash"):
        client.fetch_target("provinces/33/revocation/delta-000003.bin")


# ------------------------------------------------------------------ corruption on the mirror


def _corrupt_key_list(nation, code):  # noqa: F811 - the imported fixture
    info = nation.repo.province_targets(code).targets[f"provinces/{code}/keys.json"]
    path = nation.directory / "targets" / "provinces" / code / f"{info.hashes['sha256']}.keys.json"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))


def _truncate_key_list(nation, code):  # noqa: F811 - the imported fixture
    info = nation.repo.province_targets(code).targets[f"provinces/{code}/keys.json"]
    path = nation.directory / "targets" / "provinces" / code / f"{info.hashes['sha256']}.keys.json"
    path.write_bytes(path.read_bytes()[:-10])


def _grow_key_list(nation, code):  # noqa: F811 - the imported fixture
    info = nation.repo.province_targets(code).targets[f"provinces/{code}/keys.json"]
    path = nation.directory / "targets" / "provinces" / code / f"{info.hashes['sha256']}.keys.json"
    path.write_bytes(path.read_bytes() + b" " * 10)


def _corrupt_role(nation, code):  # noqa: F811 - the imported fixture
    version = nation.repo.province_targets(code).version
    path = nation.directory / "metadata" / f"{version}.province-{code}.json"
    path.write_bytes(path.read_bytes().replace(b'"version":', b'"version": ', 1))


def _delete_key_list(nation, code):  # noqa: F811 - the imported fixture
    info = nation.repo.province_targets(code).targets[f"provinces/{code}/keys.json"]
    (nation.directory / "targets" / "provinces" / code / f"{info.hashes['sha256']}.keys.json").unlink()


CORRUPTIONS = [
    ("bit-flip", _corrupt_key_list, TrustDataError, "hash"),
    ("truncated", _truncate_key_list, TrustDataError, "Length"),
    ("grown", _grow_key_list, TrustDataError, "larger than"),
    ("role-metadata-edited", _corrupt_role, TrustDataError, "province 33"),
    ("missing-on-mirror", _delete_key_list, MirrorUnavailable, "HTTP 404"),
]


@pytest.mark.parametrize("corrupt,error,message", [r[1:] for r in CORRUPTIONS], ids=[r[0] for r in CORRUPTIONS])
def test_corrupted_files_on_the_mirror_are_refused(synced, corrupt, error, message):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    nation.publish_keys("33", T0 + HOUR)
    nation.publish(T0 + HOUR)
    corrupt(nation, "33")
    result = client.refresh(T0 + 2 * HOUR)
    assert set(result.failed) == {"33"} and type(result.failed["33"]) is error
    assert message.lower() in str(result.failed["33"]).lower()
    assert result.serials["33"] == 1 and result.changed == ()  # the last good list stays
    ring, last = client.load_cached(T0 + 2 * HOUR)
    assert last == T0 + HOUR and len(ring) == 3


# ------------------------------------------------------------------ offline


def test_load_cached_works_offline_and_refuses_a_tampered_cache(synced, tmp_path):  # noqa: F811 - the imported fixture
    nation, client = synced  # noqa: F811 - the imported fixture
    with pytest.raises(NotSynced):
        nation.client(tmp_path / "never-synced").load_cached(T0)
    expected = snapshot_of(client, T0 + 2 * HOUR)
    bootstrap = nation.repo.root_bytes(1)
    shutil.rmtree(nation.directory)  # the USB stick is gone
    with pytest.raises(MirrorUnavailable, match="not available"):
        client.refresh(T0 + 2 * HOUR)
    restarted = TrustSync(tmp_path / "client" / "metadata", tmp_path / "client" / "targets",
                          tmp_path / "nowhere", bootstrap)
    assert snapshot_of(restarted, T0 + 2 * HOUR) == expected
    # what is cached is re-verified, never trusted for being on disk
    objects = tmp_path / "client" / "targets" / "objects"
    victim = max(objects.iterdir(), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-1] + b"x")
    with pytest.raises(TrustDataError, match="corrupt"):
        restarted.load_cached(T0 + 2 * HOUR)


def test_load_cached_refuses_a_cache_forged_consistently(synced, tmp_path):  # noqa: F811 - the imported fixture
    """Rewriting an object *and* its name still fails: signatures are checked again."""
    nation, client = synced  # noqa: F811 - the imported fixture
    state = tmp_path / "client" / "targets" / "state.json"
    objects = tmp_path / "client" / "targets" / "objects"
    rogue, data = _rogue_key_list("33")
    doc = json.loads(state.read_text())
    old = doc["provinces"]["33"]["keys"]
    new = hashlib.sha256(data).hexdigest()
    (objects / new).write_bytes(data)
    doc["provinces"]["33"]["keys"] = new
    state.write_text(json.dumps(doc))
    with pytest.raises(TrustDataError, match="province-33"):
        client.load_cached(T0 + 2 * HOUR)
    assert old != new


# ------------------------------------------------------------------ transport


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def test_sync_over_a_real_local_http_server(synced, tmp_path, monkeypatch):  # noqa: F811 - the imported fixture
    nation, _ = synced  # noqa: F811 - the imported fixture
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):  # talk to 127.0.0.1 directly
        monkeypatch.delenv(proxy, raising=False)
    handler = functools.partial(_QuietHandler, directory=str(nation.directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        client = nation.client(tmp_path / "http-client", source=url)
        result = client.refresh(T0 + HOUR)
        assert result.complete and result.changed == SMALL and result.files_transferred == 9
        nation.publish_keys("33", T0 + 2 * HOUR)
        nation.publish(T0 + 2 * HOUR)
        result = client.refresh(T0 + 3 * HOUR)
        assert result.changed == ("33",) and result.bytes_transferred <= 10_000
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    with pytest.raises(MirrorUnavailable):
        client.refresh(T0 + 4 * HOUR)
    assert client.load_cached(T0 + 4 * HOUR)[1] == T0 + 3 * HOUR


def test_directory_fetcher_stays_inside_its_directory_and_caps_sizes(tmp_path):
    (tmp_path / "mirror").mkdir()
    (tmp_path / "secret").write_bytes(b"s")
    (tmp_path / "mirror" / "big").write_bytes(b"x" * 100)
    os.symlink(tmp_path / "secret", tmp_path / "mirror" / "link")
    fetcher = DirectoryFetcher(tmp_path / "mirror", max_file_bytes=50)
    from tuf.api import exceptions as tuf_errors

    for url, error in [
        ("mirror://directory/../secret", tuf_errors.DownloadError),
        ("mirror://directory/link", tuf_errors.DownloadError),
        ("mirror://directory/a//b", tuf_errors.DownloadError),
        ("http://elsewhere/x", tuf_errors.DownloadError),
        ("mirror://directory/big", tuf_errors.DownloadLengthMismatchError),
    ]:
        with pytest.raises(error):
            fetcher.download_bytes(url, 1000)
    with pytest.raises(tuf_errors.DownloadHTTPError) as info:
        fetcher.download_bytes("mirror://directory/missing", 1000)
    assert info.value.status_code == 404


def test_bootstrap_must_be_a_self_signed_root(tmp_path, small_template):  # noqa: F811 - the imported fixture
    with pytest.raises(TrustDataError, match="bootstrap root"):
        TrustSync(tmp_path / "m", tmp_path / "t", small_template.directory, b"{}")
    with pytest.raises(SyncError):
        TrustSync(tmp_path / "m", tmp_path / "t", small_template.directory,
                  small_template.repo.root_bytes(1).replace(b'"version":1', b'"version":7'))


def test_expiry_defaults_follow_the_issue(nation):  # noqa: F811 - the imported fixture
    config = RepoConfig()
    assert (config.timestamp_expiry, config.snapshot_expiry, config.province_expiry,
            config.targets_expiry, config.root_expiry) == (DAY, 7 * DAY, 30 * DAY, 180 * DAY, 365 * DAY)
    assert nation.repo.root().expires == T0 + 365 * DAY
    assert nation.repo.root().roles["root"].threshold == 3 and len(nation.repo.root().roles["root"].keyids) == 5
    assert nation.repo.targets().delegations.roles["province-33"].terminating
    assert nation.repo.targets().delegations.roles["province-33"].paths[0] == "provinces/33/*"
    names = sorted(os.listdir(nation.directory / "metadata"))
    assert "timestamp.json" in names and all(n == "timestamp.json" or n[0].isdigit() for n in names)
