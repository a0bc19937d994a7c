"""The shells' shared host helpers: owner-only files, atomic writes, secret checks, times, the CLI wrapper."""

from __future__ import annotations

import ast
import datetime as dt
import os
import pathlib
import signal
import stat

import click
import pytest

from shellkit import cli, files, processes, times

SHELLKIT = pathlib.Path(files.__file__).parent


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(autouse=True)
def _wide_umask():
    old = os.umask(0o022)  # the usual default: files would come out 0644
    yield
    os.umask(old)


def test_shellkit_imports_nothing_of_the_project():
    project = {"healthcode", "issuer", "verifier", "keys", "tools"}
    for path in SHELLKIT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert (node.module or "").split(".")[0] not in project, path
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] not in project for a in node.names), path


def test_atomic_write_is_owner_only_by_default_and_leaves_no_temp(tmp_path):
    target = tmp_path / "state.json"
    files.write_file_atomically(target, b"one")
    files.write_file_atomically(target, b"two")
    assert target.read_bytes() == b"two"
    assert _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_failure_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    files.write_file_atomically(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        files.write_file_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_write_public_mode_when_asked(tmp_path):
    target = tmp_path / "published.json"
    files.write_file_atomically(target, b"{}", mode=0o644)
    assert _mode(target) == 0o644


@pytest.mark.parametrize("existing_mode", [None, 0o644, 0o666, 0o600])
def test_open_private_creates_or_tightens_to_owner_only(tmp_path, existing_mode):
    target = tmp_path / "journal.csv"
    if existing_mode is not None:
        target.write_text("old\n")
        os.chmod(target, existing_mode)
    with files.open_private(target, "a") as handle:
        handle.write("row\n")
    assert _mode(target) == 0o600


def test_ensure_private_file_tightens_and_ignores_missing(tmp_path):
    target = tmp_path / "db"
    target.write_bytes(b"")
    os.chmod(target, 0o644)
    files.ensure_private_file(target)
    assert _mode(target) == 0o600
    files.ensure_private_file(tmp_path / "missing")  # no error


@pytest.mark.parametrize(("mode", "refused"), [(0o600, False), (0o400, False), (0o640, True), (0o644, True),
                                               (0o604, True), (0o620, True)])
def test_secret_readable_by_others_is_refused_with_the_fix(tmp_path, mode, refused):
    secret = tmp_path / "vault.key"
    secret.write_bytes(b"00" * 32)
    os.chmod(secret, mode)
    if refused:
        with pytest.raises(files.InsecureFileMode, match=r"chmod 600 .*vault\.key"):
            files.read_secret(secret, what="vault key")
        with pytest.raises(files.InsecureFileMode):
            files.require_private(secret)
    else:
        assert files.read_secret(secret) == b"00" * 32
        files.require_private(secret)


class _ConfigError(Exception):
    pass


def test_read_config_file_raises_the_callers_error(tmp_path):
    plain, secret = tmp_path / "ca.pem", tmp_path / "tls.key"
    plain.write_bytes(b"cert")
    secret.write_bytes(b"key")
    os.chmod(secret, 0o644)
    assert files.read_config_file(plain, what="client CA", error=_ConfigError) == b"cert"
    with pytest.raises(_ConfigError, match=r"chmod 600 .*tls\.key") as refused:
        files.read_config_file(secret, what="TLS key", error=_ConfigError, secret=True)
    assert refused.value.__context__ is None or refused.value.__suppress_context__
    os.chmod(secret, 0o600)
    assert files.read_config_file(secret, what="TLS key", error=_ConfigError, secret=True) == b"key"
    with pytest.raises(_ConfigError, match=r"^cannot read client CA .*missing\.pem: No such file or directory$"):
        files.read_config_file(tmp_path / "missing.pem", what="client CA", error=_ConfigError)


def test_terminate_stops_gracefully_or_kills():
    import subprocess
    import sys

    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert processes.terminate(polite, timeout=30) == -signal.SIGTERM
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"],
                                stdout=subprocess.PIPE)
    stubborn.stdout.readline()  # SIGTERM is ignored from here on
    assert processes.terminate(stubborn, timeout=0.2) == -signal.SIGKILL
    stubborn.stdout.close()
    assert processes.terminate(stubborn) == -signal.SIGKILL  # already gone: its status, no signal sent


def test_stop_signals_set_the_event_inside_the_block_only():
    import asyncio

    async def main() -> bool:
        with processes.stop_signals((signal.SIGUSR1,)) as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.wait_for(stop.wait(), 5)
        return asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)  # False: already removed

    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        assert asyncio.run(main()) is False
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_file_lock_creates_owner_only_lock(tmp_path):
    lock = tmp_path / "sub" / ".lock"
    with files.file_lock(lock):
        assert lock.exists()
    assert _mode(lock) == 0o600


@pytest.mark.parametrize(("utc", "shown"), [
    (dt.datetime(2026, 12, 7, 4, 17, tzinfo=dt.timezone.utc), "2026-12-07 12:17 北京时间 (CST)"),
    (dt.datetime(2026, 12, 7, 16, 5, tzinfo=dt.timezone.utc), "2026-12-08 00:05 北京时间 (CST)"),
])
def test_people_read_beijing_time_machines_read_utc(utc, shown):
    assert times.beijing(utc) == shown
    assert times.iso_utc(utc.astimezone(times.CHINA_STANDARD_TIME)) == utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="naive"):
        times.beijing(dt.datetime(2026, 1, 1))


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (45, "45 s"), (3720, "1 h 2 min"),
                                               (7 * 86400 + 3600 + 5, "7 d 1 h"), (-90, "-1 min 30 s")])
def test_human_duration(seconds, text):
    assert times.human_duration(dt.timedelta(seconds=seconds)) == text


@click.command()
@click.option("--fail", type=click.Choice(["none", "expected", "usage"]), default="none")
def _demo(fail):
    if fail == "expected":
        raise LookupError("the server said\nno")
    if fail == "usage":
        raise click.UsageError("bad flag")


@pytest.mark.parametrize(("argv", "code", "stderr"), [
    ([], 0, ""),
    (["--fail", "expected"], 1, "Error: the server said no\n"),
    (["--fail", "usage"], 2, "bad flag"),
    (["--help"], 0, ""),
])
def test_cli_wrapper_turns_expected_failures_into_one_line(capsys, argv, code, stderr):
    assert cli.run_click(_demo, argv, prog_name="demo", expected=(LookupError,)) == code
    err = capsys.readouterr().err
    assert stderr in err
    assert "Traceback" not in err
