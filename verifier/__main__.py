"""``healthcode-verifier``: the offline verifier for hospital terminals (a thin click shell).

Commands: ``sync`` (refresh trust data), ``verify`` (one code or image),
``run`` (the scanner loop), ``status`` (trust data in force). This module is
the only one that reads argv, the environment, signals and the system clock;
everything else gets them as parameters. See ``docs/verifier.md``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import gc
import os
import pathlib
import re
import signal
import sys
import time
from collections.abc import Callable

import click

import healthcode as hc

from shellkit.cli import run_click
from shellkit.times import beijing

from .config import (
    STATIC_CODE_POLICIES,
    AuditConfig,
    CodePolicy,
    FreshnessPolicy,
    ScanConfig,
    SyncConfig,
    VerifierConfig,
)
from .errors import NoTrustData, TrustError, VerifierError
from .trust_sources import DevBundleSource, TufTrustSource
from .trust import (
    TrustSource,
    assess,
    format_age,
    sync_failure,
)

EXIT_VALID, EXIT_INVALID, EXIT_ERROR = 0, 1, 2


def beijing_times(text: str) -> str:
    from .display import beijing_times as convert

    return convert(text)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(value: str) -> _dt.timedelta:
    """``"72h"``, ``"7d"``, ``"5m"``, ``"300ms"``, ``"30s"`` -> timedelta."""
    match = _DURATION.match(value)
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration like 300ms, 30s, 5m, 72h or 7d")
    return _dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, _dt.timedelta):
            return value
        try:
            return parse_duration(value)
        except click.BadParameter as exc:
            self.fail(str(exc.message), param, ctx)


DURATION = Duration()


def _utc(value: str) -> _dt.datetime:
    moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise click.BadParameter("give a zone, e.g. 2026-11-22T08:00:00Z")
    return moment.astimezone(_dt.timezone.utc)


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def millisecond_clock() -> Callable[[], _dt.datetime]:
    """The system clock (UTC) to the millisecond: one ``datetime`` object per millisecond.

    Every time the verifier shows or logs has millisecond precision and the
    core counts whole seconds, so nothing is lost; and the run loop, seeing the
    same object again, reuses what it derived from it (policy, time text).
    """
    last_ms = -1
    last = _EPOCH

    def clock() -> _dt.datetime:
        nonlocal last_ms, last
        ms = time.time_ns() // 1_000_000
        if ms != last_ms:
            last = _EPOCH + _dt.timedelta(milliseconds=ms)
            last_ms = ms  # after `last`: another thread that sees this ms gets its datetime
        return last

    return clock


class CliError(click.ClickException):
    exit_code = EXIT_ERROR


class Context:
    def __init__(self, data_dir: pathlib.Path, source: str | None, root: str | None, dev_trust: bool,
                 now: str | None, *, sync_deadline: _dt.timedelta | None = None) -> None:
        self.data_dir = data_dir
        self.sync_deadline = sync_deadline
        self.source_location = source
        self.root = root
        self.dev_trust = dev_trust
        fixed = _utc(now) if now else None
        self.clock: Callable[[], _dt.datetime] = (lambda: fixed) if fixed else millisecond_clock()

    def trust_source(self) -> TrustSource:
        trust_dir = self.data_dir / "trust"
        if self.dev_trust:
            return DevBundleSource(trust_dir, self.source_location)
        missing = TufTrustSource.available()
        if missing:
            raise CliError(
                f"the TUF trust source is not available ({missing}); "
                "--dev-trust selects the unsigned development bundle")
        deadline = self.sync_deadline.total_seconds() if self.sync_deadline is not None else None
        return TufTrustSource(trust_dir, self.source_location, bootstrap_root=self.root, refresh_deadline=deadline)


def _policy_options(f):
    f = click.option("--warn-age", type=DURATION, default="72h", show_default=True,
                     help="Warn when trust data is older than this.")(f)
    f = click.option("--max-age", type=DURATION, default="7d", show_default=True,
                     help="Refuse codes (trust_data_stale) when trust data is older than this.")(f)
    f = click.option("--clock-skew", type=DURATION, default="5m", show_default=True,
                     help="Accept codes issued up to this far in the future of the local clock.")(f)
    return f


def _code_options(f):
    f = click.option("--static-codes", type=click.Choice(STATIC_CODE_POLICIES), default="check-id",
                     show_default=True,
                     help="Valid static (printed) codes: accept; accept and tell the operator to check the "
                          "holder's identity document; or refuse (static_code_refused).")(f)
    f = click.option("--presentation-skew", type=DURATION, default="30s", show_default=True,
                     help="How far a phone's clock may differ from this terminal's for its live code.")(f)
    return f


def _code_policy(static_codes, presentation_skew) -> CodePolicy:
    try:
        return CodePolicy(static_codes=static_codes, presentation_skew=presentation_skew)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _policy(warn_age, max_age, clock_skew) -> FreshnessPolicy:
    try:
        return FreshnessPolicy(warn_age=warn_age, max_age=max_age, clock_skew=clock_skew)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=pathlib.Path),
              default="verifier-data", show_default=True, envvar="HEALTHCODE_VERIFIER_DIR",
              help="Where verified trust data and the audit log are kept.")
@click.option("--source", metavar="URL|DIR", envvar="HEALTHCODE_VERIFIER_SOURCE",
              help="Trust mirror: an https URL, or a directory (e.g. a USB stick).")
@click.option("--root", type=click.Path(dir_okay=False), help="Bootstrap root metadata (first sync only).")
@click.option("--dev-trust", is_flag=True,
              help="Use the UNSIGNED development trust bundle instead of the TUF repository.")
@click.option("--sync-deadline", type=DURATION, default="60s", show_default=True,
              help="Longest a refresh from an http(s) mirror may take in all; a slower one fails.")
@click.option("--now", hidden=True, help="Pretend the clock reads this UTC time (tests, investigations).")
@click.pass_context
def cli(ctx, data_dir, source, root, dev_trust, sync_deadline, now):
    """Verify health codes offline at a hospital terminal."""
    ctx.obj = Context(data_dir, source, root, dev_trust, now, sync_deadline=sync_deadline)


# --- sync ----------------------------------------------------------------------------------


@cli.command()
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.pass_obj
def sync(obj: Context, progress):
    """Refresh keys and revocation data from the mirror; say what changed."""
    if not obj.source_location:
        raise click.UsageError("--source URL|DIR is required for sync")
    source = obj.trust_source()
    bar = None

    def on_progress(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc="trust data", file=sys.stderr,
                       disable=(not sys.stderr.isatty()) if progress is None else not progress)
        bar.update(done - bar.n)

    try:
        report = source.refresh(obj.clock(), progress=on_progress)
        state = source.load(obj.clock())
    except (TrustError, OSError) as exc:
        raise CliError(f"{beijing_times(sync_failure(exc))}; "
                       "上次有效的信任数据继续使用 / the last good trust data stays in force") from None
    finally:
        if bar is not None:
            bar.close()
    if report.changed:
        names = ", ".join(f"{p} {hc.PROVINCES.get(p, '?')}" for p in report.changed)
        click.echo(f"已更新 / changed: {len(report.changed)} province(s): {names}")
    else:
        click.echo("无更新 / changed: nothing (already up to date)")
    provinces = {key.province for key in state.keyring}
    click.echo(f"信任数据 / trust data: {len(state.keyring)} key(s) of {len(provinces)} province(s); "
               f"{report.bytes_downloaded:,} bytes fetched; 验证于 / verified at "
               f"{beijing(state.last_verified_refresh, seconds=True)}"
               + (f"; {beijing_times('; '.join(report.notes))}" if report.notes else ""))
    for warning in state.warnings:
        click.echo(f"警告 / warning: {warning}")


# --- status --------------------------------------------------------------------------------


@cli.command()
@_policy_options
@click.pass_obj
def status(obj: Context, warn_age, max_age, clock_skew):
    """Show the trust data in force and its age (exit 1 when codes would be refused)."""
    policy = _policy(warn_age, max_age, clock_skew)
    try:
        state = obj.trust_source().load(obj.clock())
    except TrustError as exc:
        click.echo(f"无可用的信任数据 / no usable trust data: {beijing_times(str(exc))}")
        sys.exit(EXIT_INVALID)
    assessment = assess(policy, system_now=obj.clock(), last_verified=state.last_verified_refresh)
    by_province: dict[str, int] = {}
    for key in state.keyring:
        by_province[key.province] = by_province.get(key.province, 0) + 1
    age = assessment.age
    assert age is not None  # assess() with a last verified time gives its age
    click.echo(f"信任数据 / trust data: {assessment.level.value}, {format_age(age)} old, "
               f"验证于 / verified at {beijing(state.last_verified_refresh)} "
               f"(warn after {format_age(policy.warn_age)}, refuse after {format_age(policy.max_age)})")
    if assessment.warning:
        click.echo(f"警告 / warning: {assessment.warning}")
    click.echo(f"密钥 / keys: {len(state.keyring)} in {len(by_province)} province(s): "
               + ", ".join(f"{p} {hc.PROVINCES[p]} ({n})" for p, n in sorted(by_province.items())))
    click.echo(f"撤销数据 / revocation: {'已载入 / loaded' if state.revocation is not None else '无 / none'}")
    for warning in state.warnings:
        click.echo(f"警告 / warning: {warning}")
    sys.exit(EXIT_VALID if assessment.stale_detail(assessment.now) is None else EXIT_INVALID)


# --- verify --------------------------------------------------------------------------------


@cli.command()
@click.argument("text", required=False)
@click.option("--image", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Read the code(s) from a PNG or JPEG image.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result line(s) instead.")
@_policy_options
@_code_options
@click.pass_obj
def verify(obj: Context, text, image, as_json, warn_age, max_age, clock_skew, static_codes, presentation_skew):
    """Verify one code or live code (TEXT, '-' for standard input, or --image FILE).

    No replay cache here: a live code checked twice with ``verify`` is valid twice (``run`` remembers).

    Exit status: 0 valid, 1 invalid, 2 error (no usable trust data, unreadable file, bad usage).
    """
    from .display import Display
    from .output import encode, result_record
    from .check import check, instant_of, judge_for
    from .scan import LineFramer, Scan, to_scan

    policy = _policy(warn_age, max_age, clock_skew)
    judge = judge_for(VerifierConfig(freshness=policy, codes=_code_policy(static_codes, presentation_skew)),
                      replay=False)
    scan_config = ScanConfig()
    if (text is None) == (image is None):
        raise click.UsageError("give either TEXT (or '-') or --image FILE")
    if image is not None:
        from .images import ImageDecodeError, decode_image

        if not image.is_file():
            raise CliError(f"文件不存在 / no such file: {image}")
        source = f"image:{image.name}"
        try:
            texts = decode_image(image)
            scans = [Scan(t, source, None, "image") for t in texts[: scan_config.max_codes_per_image]]
            if not scans:
                scans = [Scan(None, source, "no QR code found in the image", "image")]
        except ImageDecodeError as exc:
            scans = [Scan(None, source, f"image unreadable: {exc}", "image")]
    elif text == "-":
        framer = LineFramer(scan_config.max_line)
        lines = framer.feed(sys.stdin.buffer.read(scan_config.max_line + 2))
        held = framer.flush()
        first = lines[0] if lines else (held if held is not False else b"")
        scans = [to_scan(first, "stdin", "eof", scan_config.max_line)]
    else:
        scans = [to_scan(text.encode("utf-8", "surrogateescape"), "argument", "eof", scan_config.max_line)]

    try:
        state = obj.trust_source().load(obj.clock())
    except NoTrustData as exc:
        state = None
        click.echo(f"警告 / warning: 无信任数据 / no trust data: {exc}", err=True)
    display = Display(sys.stdout)
    worst = EXIT_VALID
    for seq, scan in enumerate(scans, 1):
        at = instant_of(policy, obj.clock(), state)  # the same steps as the run loop's (verifier.check)
        outcome = check(judge, at, seq, scan.text, scan.problem, scan.source, scan.ended_by)
        assessment = at.assessment
        if as_json:
            sys.stdout.buffer.write(encode(result_record(outcome)))
            sys.stdout.flush()
        else:
            warnings = [assessment.warning] if assessment.warning else []
            display.show(outcome, warnings + list(outcome.trust_warnings))
        if outcome.reason is hc.Reason.TRUST_DATA_STALE:
            worst = EXIT_ERROR
        elif outcome.reason is not None and worst == EXIT_VALID:
            worst = EXIT_INVALID
    sys.exit(worst)


# --- run -----------------------------------------------------------------------------------


@cli.command()
@click.option("--stdin", "use_stdin", is_flag=True, help="Read scans from standard input (default if no input).")
@click.option("--tty", "ttys", multiple=True, metavar="PATH", help="A keyboard-wedge scanner's tty (repeatable).")
@click.option("--serial", "serial_port", metavar="DEVICE", help="A serial scanner, e.g. /dev/ttyUSB0.")
@click.option("--baud", type=int, default=9600, show_default=True, help="Serial speed.")
@click.option("--folder", type=click.Path(file_okay=False, path_type=pathlib.Path),
              help="Watch this folder for dropped PNG/JPEG images (camera terminals).")
@click.option("--folder-done", type=click.Choice(["move", "delete"]), default="move", show_default=True,
              help="After an image is processed: move it into <folder>/processed, or delete it.")
@click.option("--json", "json_to", default="auto", show_default=True,
              metavar="auto|stdout|none|file:PATH|unix:PATH|tcp:127.0.0.1:PORT",
              help="Where the JSON result lines go (auto: standard output when it is a pipe or a file, "
                   "nowhere when it is the operator's terminal).")
@click.option("--omit-main-index-id", is_flag=True, help="Leave the main index ID out of the JSON lines.")
@click.option("--display", "display_to", type=click.Choice(["auto", "stdout", "stderr", "none"]), default="auto",
              show_default=True, help="Operator display (auto: stderr when JSON goes to stdout, else stdout).")
@click.option("--audit/--no-audit", default=True, show_default=True, help="Keep the SQLite audit log.")
@click.option("--audit-db", type=click.Path(dir_okay=False, path_type=pathlib.Path),
              help="Audit database (default: <data-dir>/audit.sqlite3).")
@click.option("--keep-subject-for", type=DURATION, default=None,
              help="Replay window: keep main index IDs and raw codes in the audit log this long (default: never).")
@click.option("--audit-retention", type=DURATION, default="90d", show_default=True,
              help="Delete audit rows older than this.")
@click.option("--audit-max-rows", type=int, default=1_000_000, show_default=True,
              help="Keep at most this many audit rows.")
@click.option("--sync/--no-sync", "background_sync", default=True, show_default=True,
              help="Refresh trust data in the background (needs --source).")
@click.option("--sync-interval", type=DURATION, default="2m", show_default=True,
              help="Time between refreshes (a refresh with nothing new costs about 1 kB).")
@click.option("--sync-retry", type=DURATION, default="1m", show_default=True, help="Retry after a failed refresh.")
@click.option("--max-line", type=int, default=4096, show_default=True, help="Longest accepted scan, in bytes.")
@click.option("--frame-timeout", type=DURATION, default="300ms", show_default=True,
              help="Silence that ends a scan without Enter (ttys and serial ports).")
@_policy_options
@_code_options
@click.pass_obj
def run(obj: Context, use_stdin, ttys, serial_port, baud, folder, folder_done, json_to, omit_main_index_id,
        display_to, audit, audit_db, keep_subject_for, audit_retention, audit_max_rows, background_sync,
        sync_interval, sync_retry, max_line, frame_timeout, warn_age, max_age, clock_skew, static_codes,
        presentation_skew):
    """The scanner loop: verify every scan, show it, write JSON lines and the audit log."""
    from .audit import AuditLog
    from .display import Display
    from .output import open_sink
    from .runtime import Runtime
    from .scan import FdStream, FolderSource, SerialStream, make_scanner_tty

    if json_to == "auto":  # the operator's screen shows verdicts, never the HIS's lines (main index IDs)
        json_to = "none" if os.isatty(1) else "stdout"
    try:
        config = VerifierConfig(
            freshness=_policy(warn_age, max_age, clock_skew),
            scan=ScanConfig(max_line=max_line, frame_timeout=frame_timeout, folder_done=folder_done),
            audit=AuditConfig(path=audit_db or obj.data_dir / "audit.sqlite3", keep_subject_for=keep_subject_for,
                              retention=audit_retention, max_rows=audit_max_rows),
            sync=SyncConfig(interval=sync_interval, retry=sync_retry,
                            enabled=background_sync and bool(obj.source_location)),
            codes=_code_policy(static_codes, presentation_skew),
            include_subject_in_output=not omit_main_index_id,
        )
        sink = open_sink(json_to)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if display_to == "auto":
        display_to = "stderr" if json_to in ("stdout", "-") else "stdout"
    display = None
    if display_to != "none":
        display = Display(sys.stdout if display_to == "stdout" else sys.stderr)
    audit_log = AuditLog(config.audit, clock=obj.clock).start() if audit else None
    runtime = Runtime(obj.trust_source(), config=config, clock=obj.clock,
                      sinks=[] if json_to == "none" else [sink], display=display,
                      audit=audit_log, background_sync=config.sync.enabled)
    runtime.output_name = "无（未配置 --json）/ none (no --json)" if json_to == "none" else json_to

    restore_stdin = None
    if use_stdin or not (ttys or serial_port or folder):
        if os.isatty(0):
            restore_stdin = make_scanner_tty(0, signals=True)
        runtime.add_stream(lambda: FdStream(0, "stdin", read_size=config.scan.read_size), name="stdin")
    for path in ttys:
        runtime.add_stream(functools.partial(FdStream.open_tty, path, read_size=config.scan.read_size),
                           name=f"tty:{path}")
    if serial_port:
        runtime.add_stream(lambda: SerialStream(serial_port, baud, read_size=config.scan.read_size),
                           name=f"serial:{serial_port}", reopen=True)
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
        runtime.add_folder(FolderSource(folder, done=folder_done, max_codes=config.scan.max_codes_per_image))

    def on_signal(signum, frame):
        runtime.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    gc.freeze()  # what start-up built lives for the whole run: keep it out of every collection
    try:
        runtime.run()
    finally:
        if restore_stdin is not None:
            restore_stdin()
        sink.close()
        if audit_log is not None:
            audit_log.close()
        runtime.join(timeout=2.0)


def main(argv: list[str] | None = None) -> int:
    """The console script: every failure is one ``Error:`` line and exit 2 (the EXIT_* codes kept)."""
    import sqlite3

    return run_click(cli, argv, prog_name="healthcode-verifier",
                     expected=(VerifierError, OSError, sqlite3.Error),
                     on_error=lambda exc: EXIT_ERROR)


if __name__ == "__main__":
    sys.exit(main())
