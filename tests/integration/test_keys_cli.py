"""``healthcode-keys``: the ceremonies of docs/operations.md, run for real.

Real directories, real encrypted key files, the real trust repository, and a
verifier's :class:`verifier.trustsync.TrustSync` reading the repository
directory as its mirror (a USB stick). Commands run through click's
``CliRunner`` (one through a real subprocess, and the HSM one too, so the
PKCS#11 library is loaded in its own process). Time is ``--now``, far from the
wall clock on purpose: nothing may read the clock behind our back.

The main scenario follows the operations guide: root init (3 of 5) ->
provinces add -> key generate -> publish -> a verifier syncs and verifies ->
rotate -> publish -> sync -> both keys verify -> compromise -> publish -> one
refresh -> later codes rejected ``key_compromised``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from securesystemslib.exceptions import UnverifiedSignatureError

import healthcode as hc
from healthcode import Algorithm, Reason
from keys.__main__ import cli
from keys.keystore import FileKeystore
from keys.key_set_file import load_key_set
from keys.managed_key import KeyState
from verifier.trustsync import TrustSync

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
ROOT = pathlib.Path(__file__).resolve().parents[2]
SUBJECT = hc.main_index_id_from_bytes(hashlib.sha256(b"keys cli resident").digest()[:16])
KEYSTORE_SECRET = "keystore-secret-33"
ENV = {
    "HEALTHCODE_PASSPHRASE": "rehearsal passphrase",  # every holder without its own variable
    "HEALTHCODE_PASSPHRASE_OFFICIAL_2": "official two's own passphrase",
    "HEALTHCODE_KEYSTORE_SECRET": KEYSTORE_SECRET,
}
POLICY = ["--usage-days", "20", "--lead-days", "3"]  # short periods: the scenario stays inside role expiries


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Site:
    """The directories of one rehearsal: national keys, the repository, province homes."""

    def __init__(self, base: pathlib.Path) -> None:
        self.base = base
        self.repo = base / "repo"
        self.national = base / "national-keys"

    def home(self, code: str) -> pathlib.Path:
        return self.base / f"province-{code}"

    def run(self, now: dt.datetime, *args: str, env=None, code: int = 0) -> str:
        result = CliRunner().invoke(
            cli, ["--repo", str(self.repo), "--national-keys", str(self.national), "--now", iso(now), *args],
            env=ENV if env is None else env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.stdout if code == 0 else result.output  # errors go to stderr

    def key_set(self, code: str):
        return load_key_set(self.home(code) / "key-set.json")

    def signer(self, code: str, kid: bytes):
        handle = self.key_set(code).find(kid).handle
        return FileKeystore(self.home(code) / "keystore", KEYSTORE_SECRET).load_signer(handle)

    def client(self, name: str = "client", bootstrap: int = 1) -> TrustSync:
        root = (self.repo / "metadata" / f"{bootstrap}.root.json").read_bytes()
        return TrustSync(self.base / name / "metadata", self.base / name / "targets", self.repo, root)


def code_for(province: str, signer, iat: dt.datetime, serial: int = 1) -> str:
    claims = hc.CodeClaims(province=province, subject=SUBJECT, serial=serial, issued_at=iat, expires_at=iat + 7 * DAY)
    return hc.sign_code(claims, signer)


def reason(text: str, keyring, now) -> str:
    result = hc.check(text, keyring, now=now)
    return "valid" if result.valid else result.reason.value


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A national root (3 of 5) with province 33 delegated and one key published, at T0."""
    site = Site(tmp_path_factory.mktemp("template"))
    site.run(T0, "root", "init", "--officials", "5", "--threshold", "3")
    site.run(T0, "province", "add", "33", "--home", str(site.home("33")), *POLICY)
    site.run(T0, "province", "key", "generate", "33", "--home", str(site.home("33")))
    site.run(T0, "province", "publish", "33", "--home", str(site.home("33")))
    return site


@pytest.fixture
def site(template, tmp_path):
    shutil.copytree(template.base, tmp_path / "site")
    return Site(tmp_path / "site")


# --------------------------------------------------------------------------- the documented ceremony


def test_full_ceremony_from_root_to_compromise(tmp_path):
    site = Site(tmp_path)
    out = site.run(T0, "root", "init", "--officials", "5", "--threshold", "3")
    assert "root v1 (3 of 5), targets v1 (3 of 5)" in out
    for n in range(1, 6):
        holder = site.national / f"official-{n}"
        assert sorted(p.name for p in holder.iterdir()) == ["root.pem", "root.pub.json", "targets.pem",
                                                          "targets.pub.json"]
        assert (holder / "root.pem").stat().st_mode & 0o777 == 0o600
        assert (holder / "root.pem").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert f"wrote {holder / 'root.pem'}" in out
    assert f"wrote {site.repo / 'metadata' / '1.root.json'}" in out

    provinces = {"33": "ES256", "44": "EdDSA", "11": "SM2-SM3"}
    for code, alg in provinces.items():
        home = str(site.home(code))
        out = site.run(T0, "province", "add", code, "--home", home, *POLICY)
        assert f"delegated provinces/{code}/ to province-{code} (2 of 3 keys)" in out
        out = site.run(T0, "province", "key", "generate", code, "--home", home, "--algorithm", alg)
        kid = site.key_set(code).keys[0].kid
        assert f"key {kid.hex()} ({alg}, file keystore" in out and f"signs {iso(T0)} .. {iso(T0 + 20 * DAY)}" in out
        assert "no_signing_key plan" in out  # the first key signs at once: no verifier holds codes yet
        out = site.run(T0, "province", "publish", code, "--home", home)
        assert f"province {code} key list serial 1 (1 key: {kid.hex()} active)" in out
        assert "timestamp v" in out

    # a verifier syncs from the directory and verifies each province's codes
    client = site.client()
    first = client.refresh(T0 + HOUR)
    assert first.complete and first.changed == ("11", "33", "44") and len(first.keyring) == 3
    for code in provinces:
        key = site.key_set(code).keys[0]
        assert reason(code_for(code, site.signer(code, key.kid), T0 + HOUR), first.keyring, T0 + HOUR) == "valid"

    # scheduled rotation: due lead time + margin (3 + 7 days) before the end of use (T0 + 20d)
    home33 = str(site.home("33"))
    assert "none due" in site.run(T0 + 9 * DAY, "province", "key", "list", "33", "--home", home33)
    assert "scheduled" in site.run(T0 + 11 * DAY, "province", "key", "list", "33", "--home", home33)
    out = site.run(T0 + 11 * DAY, "province", "key", "rotate", "33", "--home", home33)
    old, new = site.key_set("33").keys
    assert "scheduled plan" in out and f"signs {iso(T0 + 20 * DAY)} .. {iso(T0 + 40 * DAY)}" in out
    assert new.kid.hex() in out and "not yet published" in out
    out = site.run(T0 + 11 * DAY, "province", "publish", "33", "--home", home33)
    assert f"serial 2 (2 keys: {old.kid.hex()} active, {new.kid.hex()} prepublished)" in out

    rotated = client.refresh(T0 + 11 * DAY + HOUR)
    assert rotated.changed == ("33",) and rotated.complete
    assert rotated.bytes_transferred <= 10_000, rotated.bytes_transferred  # the target: <= 10 kB
    # offline from here: the verifier already holds the new key before its first code
    ring = rotated.keyring
    by_old = code_for("33", site.signer("33", old.kid), T0 + 19 * DAY)
    by_new = code_for("33", site.signer("33", new.kid), T0 + 20 * DAY, serial=2)
    at = T0 + 20 * DAY + HOUR
    assert (reason(by_old, ring, at), reason(by_new, ring, at)) == ("valid", "valid")

    # emergency: the new key is compromised; one publish + one refresh later its later codes are rejected
    since = T0 + 21 * DAY
    later = code_for("33", site.signer("33", new.kid), since + dt.timedelta(minutes=30), serial=3)
    assert reason(later, ring, since + HOUR) == "valid"  # before the publish and refresh
    out = site.run(since, "province", "key", "compromise", "33", new.kid.hex()[:10], "--since", iso(since),
                   "--home", home33)
    assert f"key {new.kid.hex()} marked compromised since {iso(since)}" in out
    assert "no key signs now" in out
    site.run(since, "province", "publish", "33", "--home", home33)
    after = client.refresh(since + HOUR)
    assert after.changed == ("33",)
    assert reason(later, after.keyring, since + HOUR) == Reason.KEY_COMPROMISED.value
    assert reason(by_new, after.keyring, since + HOUR) == "valid"  # signed before the compromise

    status = json.loads(site.run(since + HOUR, "status", "--json"))
    assert status["roles"]["root"]["threshold"] == 3 and status["roles"]["root"]["keys"] == 5
    assert sorted(status["provinces"]) == ["11", "33", "44"]
    states = {k["kid"]: k["state"] for k in status["provinces"]["33"]["key_list"]}
    assert states == {old.kid.hex(): "retired", new.kid.hex(): "compromised"}
    assert status["provinces"]["33"]["serial"] == 3
    text = site.run(since + HOUR, "status")
    assert "root       v1" in text and "province 33: role v4" in text and "compromised since" in text

    # a replacement key on short notice (nothing signs now), then expiry of the dead keys
    out = site.run(since + HOUR, "province", "key", "generate", "33", "--home", home33)
    assert "no_signing_key plan" in out
    out = site.run(T0 + 45 * DAY, "province", "key", "expire", "33", "--home", home33, "--destroy")
    assert "1 key(s) expired" in out and f"dropped key {old.kid.hex()}" in out
    assert f"destroyed private key {old.kid.hex()}" in out
    left = site.key_set("33").keys
    assert [k.kid for k in left][0] == new.kid
    assert [k.state_at(T0 + 45 * DAY) for k in left] == [KeyState.COMPROMISED, KeyState.RETIRED]
    assert not (site.home("33") / "keystore" / f"{old.kid.hex()}.pem").exists()


def test_root_rotation_via_cli_and_a_client_bootstrapped_at_v1_follows(site):
    client = site.client()
    assert client.refresh(T0 + HOUR).root_version == 1
    officials = [site.national / f"official-{n}" for n in range(1, 7)]
    old = [a for o in officials[:3] for a in ("--official", str(o))]
    # official-5 leaves, official-6 joins with a fresh key (3 of 5 still)
    new = [a for o in (officials[0], officials[1], officials[2], officials[3], officials[5])
           for a in ("--new-official", str(o))]
    out = site.run(T0 + 2 * HOUR, "root", "rotate", *old, *new)
    assert "root v2 (root 3 of 5), signed by old and new root keys" in out
    assert f"wrote {officials[5] / 'root.pem'}" in out and "removed " in out
    assert client.refresh(T0 + 3 * HOUR).root_version == 2

    # official-5's key no longer counts
    gone = ["--official", str(officials[4]), "--official", str(officials[0]), "--official", str(officials[1])]
    out = site.run(T0 + 4 * HOUR, "root", "rotate", *gone, code=1)
    assert "not keys of the current root" in out and "official-5" in out
    # the new root's officials re-sign it (same keys, fresh expiry) -> v3; a fresh v1 client walks 1 -> 2 -> 3
    present = [a for o in (officials[0], officials[1], officials[2], officials[3], officials[5])
               for a in ("--official", str(o))]
    out = site.run(T0 + 5 * HOUR, "root", "rotate", *present)
    assert "root v3" in out and "added none; removed none" in out
    fresh = site.client("fresh")
    result = fresh.refresh(T0 + 6 * HOUR)
    assert result.root_version == 3 and result.complete and len(result.keyring) == 1
    assert client.refresh(T0 + 6 * HOUR).root_version == 3


def test_timestamp_refresh_keeps_verifiers_fresh_and_its_absence_is_a_freeze(site):
    client = site.client()
    client.refresh(T0 + HOUR)
    out = site.run(T0 + 20 * HOUR, "timestamp", "refresh")
    assert "timestamp v" in out and f"expires {iso(T0 + 44 * HOUR)}" in out
    assert client.refresh(T0 + 30 * HOUR).fresh_until == T0 + 44 * HOUR
    from verifier.trustsync import TrustDataFrozen

    with pytest.raises(TrustDataFrozen, match="frozen"):
        client.refresh(T0 + 45 * HOUR)  # the cron stopped: the verifier notices
    assert "EXPIRED" in site.run(T0 + 45 * HOUR, "status")


# --------------------------------------------------------------------------- refusals


def test_unsafe_input_is_refused_with_a_clear_error(site, tmp_path):
    home = ["--home", str(site.home("33"))]
    kid = site.key_set("33").keys[0].kid.hex()
    cases = [
        (("root", "init", "--officials", "4", "--threshold", "2"), "must be a majority"),
        (("root", "init", "--officials", "5", "--threshold", "1"), "unsafe"),
        (("root", "init"), "already holds a trust repository"),
        (("province", "add", "33", *home), "already delegated"),
        (("province", "add", "99", *home), "CODE"),
        (("province", "key", "compromise", "33", kid, "--since", iso(T0 + DAY), *home), "cannot start in the future"),
        (("province", "key", "compromise", "33", "abcd", "--since", iso(T0), *home), "at least 8 hex digits"),
        (("province", "key", "compromise", "33", "0" * 16, "--since", iso(T0), *home), "has no key 0000000000000000"),
        (("province", "key", "retire", "33", kid, *home), "leaves no key signing now"),
        (("province", "key", "generate", "33", "--use-from", iso(T0 - DAY), *home), "cannot start signing in the past"),
        (("province", "key", "generate", "33", "--use-from", "2030-03-05T08:00:00", *home), "no time zone"),
        (("province", "key", "generate", "33", "--keystore", "pkcs11", *home), "module path and a token label"),
        (("province", "publish", "33", "--home", str(tmp_path / "nowhere")), "no TUF role keys"),
    ]
    for args, message in cases:
        out = site.run(T0 + HOUR, *args, code=2 if message in ("CODE", "no time zone") else 1)
        assert message in out, (args, out)
    # nothing was written by a refused command: the key set is as it was
    assert site.key_set("33").revision == 1


def test_secrets_come_from_per_holder_variables_and_are_checked(site):
    env = dict(ENV)
    env["HEALTHCODE_PASSPHRASE_OFFICIAL_2"] = "not official two's passphrase"
    out = site.run(T0 + HOUR, "province", "add", "44", "--home", str(site.home("44")), env=env, code=1)
    assert "wrong_passphrase" in out and "official-2" in out
    # a missing secret is the environment's fault, not bad usage: exit 1 (2 is for wrong options)
    env = {k: v for k, v in ENV.items() if k != "HEALTHCODE_PASSPHRASE"}
    out = site.run(T0 + HOUR, "publish", env=env, code=1)
    assert "set HEALTHCODE_PASSPHRASE_ONLINE" in out  # no terminal in CI: the variable to set is named
    env = {k: v for k, v in ENV.items() if k != "HEALTHCODE_KEYSTORE_SECRET"}
    out = site.run(T0 + HOUR, "province", "key", "generate", "33", "--home", str(site.home("33")), env=env, code=1)
    assert "set HEALTHCODE_KEYSTORE_SECRET" in out and "Usage:" not in out
    for path in site.base.rglob("*"):  # no secret ever lands in a file in clear
        if path.is_file():
            data = path.read_bytes()
            assert b"rehearsal passphrase" not in data and KEYSTORE_SECRET.encode() not in data


def _break_timestamp_with_a_directory(site) -> None:
    path = site.repo / "metadata" / "timestamp.json"
    path.unlink()
    path.mkdir()  # reading it is an OSError (IsADirectoryError)


def _corrupt_timestamp(site) -> None:
    (site.repo / "metadata" / "timestamp.json").write_text("{not json")  # tuf: DeserializationError


@pytest.mark.parametrize(
    "name, unset, breaks, args, code, message",
    [
        ("no keystore secret (environment, not usage)", "HEALTHCODE_KEYSTORE_SECRET", None,
         ("province", "key", "generate", "33", "--home", "{home}"), 1,
         "Error: no keystore secret: set HEALTHCODE_KEYSTORE_SECRET, or run on a terminal to be asked"),
        ("no online passphrase", "HEALTHCODE_PASSPHRASE", None, ("publish",), 1,
         "Error: no passphrase for {repo_base}/national-keys/online: set HEALTHCODE_PASSPHRASE_ONLINE"),
        ("an unreadable metadata file (OSError)", None, _break_timestamp_with_a_directory, ("status",), 1,
         "Error: [Errno 21] Is a directory"),
        ("corrupt metadata (tuf)", None, _corrupt_timestamp, ("status",), 1, "Error: Failed to deserialize"),
        ("a refusal of the lifecycle", None, None,
         ("province", "key", "retire", "33", "{kid}", "--home", "{home}"), 1,
         "Error: policy_violation: key {kid} is prepublished: only an active key can be retired"),  # 2030 key, now
        ("bad usage stays exit 2", None, None, ("province", "key", "list", "33", "--no-such-option"), 2,
         "Error: No such option '--no-such-option'"),
    ],
)
def test_every_failure_of_the_entry_point_is_one_error_line(site, monkeypatch, capsys, name, unset, breaks, args,
                                                            code, message):
    from keys.__main__ import main

    for variable, value in ENV.items():
        monkeypatch.setenv(variable, value)
    if unset:
        monkeypatch.delenv(unset)
    if breaks:
        breaks(site)
    values = dict(home=str(site.home("33")), kid=site.key_set("33").keys[0].kid.hex(), repo_base=site.base)
    argv = ["--repo", str(site.repo), "--national-keys", str(site.national), *(a.format(**values) for a in args)]
    assert main(argv) == code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith(message.format(**values)), err
    assert "Traceback" not in err


def test_key_generate_names_the_real_publication_deadline_in_beijing_time(site):
    home = ["--home", str(site.home("33"))]
    now = T0 + HOUR  # 2030-03-01 17:00 Beijing; the policy's lead time is 3 days
    run = "not yet published: run `healthcode-keys province publish 33`"
    out = site.run(now, "province", "key", "generate", "33", *home)  # default: now + lead time
    assert (f"{run} now: the key signs from 2030-03-04 17:00 北京时间 (CST) (in 3 d), and verifiers need the "
            "lead time of 3 d to fetch it") in out
    out = site.run(now, "province", "key", "generate", "33", "--use-from", iso(T0 + 10 * DAY), *home)
    assert (f"{run} before 2030-03-08 16:00 北京时间 (CST) (in 6 d 23 h): verifiers need the lead time of 3 d "
            "to fetch it before it signs from 2030-03-11 16:00 北京时间 (CST)") in out
    for kid in [k.kid.hex() for k in site.key_set("33").keys]:  # nothing left to sign: the next key signs at once
        site.run(now, "province", "key", "compromise", "33", kid, "--since", iso(now), *home)
    out = site.run(now, "province", "key", "generate", "33", *home)
    assert f"{run} now: the key signs from now on, and verifiers refuse its codes until they have synced" in out
    assert iso(now) not in out.split("warning:", 1)[1]  # no "publish before <now>" any more


def test_a_province_that_keeps_its_own_tuf_keys_sends_public_keys_only(site):
    # the province generates its role keys at home (its own rehearsal here) and sends the .pub.json files
    own = Site(site.base / "own")
    own.run(T0, "root", "init", "--officials", "3", "--threshold", "2")
    own.run(T0, "province", "add", "44", "--home", str(own.home("44")), "--tuf-keys", "2", "--tuf-threshold", "2")
    public = sorted((own.home("44") / "tuf-44").glob("*.pub.json"))
    args = [a for p in public for a in ("--tuf-public-key", str(p))]
    out = site.run(T0 + HOUR, "province", "add", "44", "--home", str(site.base / "national-view-44"), *args,
                   "--tuf-threshold", "2")
    assert "(2 of 2 keys)" in out and "the province must run `healthcode-keys province publish 44`" in out
    assert not (site.base / "national-view-44" / "tuf-44").exists()  # no private key was made nationally
    # the province signs with its own keys into the national repository
    shutil.copytree(own.home("44") / "tuf-44", site.home("44") / "tuf-44")
    site.run(T0 + HOUR, "province", "key", "generate", "44", "--home", str(site.home("44")))
    out = site.run(T0 + HOUR, "province", "publish", "44", "--home", str(site.home("44")))
    assert "province-44 v1" in out
    assert site.client().refresh(T0 + 2 * HOUR).changed == ("33", "44")


def test_every_command_has_help_text():
    import click

    def walk(command, path):
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])

    commands = list(walk(cli, []))
    assert len(commands) >= 16
    for path, command in commands:
        assert command.help and len(command.help) > 20, path
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, path
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, (path, param.name)


def test_the_entry_point_runs_as_a_real_process(site):
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "keys", "--repo", str(site.repo), "--now", iso(T0 + HOUR), "status"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=site.base)
    assert proc.returncode == 0, proc.stderr
    assert "province 33: role v2" in proc.stdout and "rehearsal: acting at" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "keys", "--repo", str(site.base / "none"), "status"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: ") and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- HSM


SOFTHSM_UTIL = shutil.which("softhsm2-util")
MODULE = next((p for p in ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                           "/usr/local/lib/softhsm/libsofthsm2.so", "/usr/lib64/pkcs11/libsofthsm2.so"]
               if os.path.exists(p)), None)


@pytest.mark.skipif(SOFTHSM_UTIL is None or MODULE is None, reason="SoftHSM2 is not installed")
def test_province_key_generate_in_an_hsm_signs_codes_verifiers_accept(site):
    pkcs11 = pytest.importorskip("pkcs11", reason="the PKCS#11 keystore needs python-pkcs11")
    from keys.keystore import Pkcs11Keystore

    tokens = site.base / "softhsm"
    (tokens / "tokens").mkdir(parents=True)
    conf = tokens / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT), "SOFTHSM2_CONF": str(conf), "HC_PIN": "123456"}
    subprocess.run([SOFTHSM_UTIL, "--init-token", "--free", "--label", "province-33", "--so-pin", "87654321",
                    "--pin", "123456"], check=True, capture_output=True, timeout=60, env=env)
    home = ["--home", str(site.home("33"))]
    at = T0 + DAY
    proc = subprocess.run(
        [sys.executable, "-m", "keys", "--repo", str(site.repo), "--national-keys", str(site.national),
         "--now", iso(at), "province", "key", "rotate", "33", *home, "--keystore", "pkcs11",
         "--pkcs11-module", MODULE, "--pkcs11-token", "province-33", "--keystore-secret-env", "HC_PIN"],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    key = site.key_set("33").keys[-1]
    assert key.handle.backend == "pkcs11" and "pkcs11 keystore" in proc.stdout
    assert key.use_from == at + 3 * DAY  # early rotation: now + lead time
    site.run(at, "province", "publish", "33", *home)
    ring = site.client().refresh(at + HOUR).keyring

    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        with Pkcs11Keystore(MODULE, "province-33", "123456") as hsm:
            signer = hsm.load_signer(key.handle)
            text = code_for("33", signer, key.use_from + HOUR)
        verified = hc.verify(text, ring, now=key.use_from + 2 * HOUR)
        assert (verified.kid, verified.algorithm) == (key.kid, Algorithm.ES256.value)
    finally:
        try:
            pkcs11.unload(MODULE)
        except Exception:
            pass
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@pytest.mark.parametrize("alg", [Algorithm.ES256, Algorithm.EDDSA], ids=str)
def test_a_keystore_key_can_be_a_province_tuf_role_key(site, alg):
    """keys.signers.KeystoreRoleSigner: a province signs its TUF role with a keystore (file or HSM) key."""
    from keys import ceremony, province_keys
    from keys.signers import KeystoreRoleSigner

    store = FileKeystore(site.base / "role-keystore", "role keystore secret")
    role_signer = KeystoreRoleSigner(store.load_signer(store.generate(alg, label="province-44-tuf")))
    signature = role_signer.sign(b"payload")
    role_signer.public_key.verify_signature(signature, b"payload")  # raises if bad
    with pytest.raises(UnverifiedSignatureError):
        role_signer.public_key.verify_signature(signature, b"another payload")

    def passphrase(holder, new=False) -> bytes:  # the CLI's rule: the holder's variable, else the common one
        own = "HEALTHCODE_PASSPHRASE_" + pathlib.Path(holder).name.upper().replace("-", "_")
        return ENV.get(own, ENV["HEALTHCODE_PASSPHRASE"]).encode()

    national = ceremony.NationalKeys(site.national)
    repo = ceremony.open_repository(site.repo, online=ceremony.load_online(national, passphrase))
    home = ceremony.ProvinceHome("44", site.home("44"))
    ceremony.add_province(repo, home, targets_signers=ceremony.load_officials(national, "targets", passphrase),
                          passphrase=passphrase, now=T0 + HOUR, public_keys=[role_signer.public_key], tuf_threshold=1)
    admin = province_keys.ProvinceKeyAdmin(province="44", key_set_path=home.key_set_path,
                                      keystore=FileKeystore(home.keystore_dir, KEYSTORE_SECRET), repo=repo,
                                      tuf_signers=[role_signer], publish_snapshot=True)
    key = admin.add_key(T0 + HOUR).key
    assert admin.publish(now=T0 + HOUR).published
    ring = site.client().refresh(T0 + 2 * HOUR).keyring
    assert key.kid in {k.kid for k in ring}
