"""The one entry-point wrapper for the project's click commands.

Every failure a user can cause or meet (bad usage, a missing secret, an
unreachable server, an RPC error) ends in one ``Error: ...`` line on stderr and
an exit code, never a traceback. Exit codes: 0 ok, 1 failure, 2 bad usage
(click's own), and whatever a ``click.ClickException`` carries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "run_click", "one_line"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def one_line(exc: BaseException) -> str:
    """A one-line description of ``exc`` for an ``Error:`` line (gRPC errors by code and details)."""
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):  # grpc.RpcError without importing grpc
        try:
            name = getattr(code(), "name", str(code()))
            return f"{name}: {details() or 'no details'}"
        except Exception:  # pragma: no cover - a half-built RpcError
            pass
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def run_click(
    command: click.Command,
    argv: Sequence[str] | None,
    *,
    prog_name: str,
    expected: tuple[type[BaseException], ...] = (),
    on_error: Callable[[BaseException], int] | None = None,
) -> int:
    """Run ``command`` and turn every expected failure into one ``Error:`` line and an exit code.

    ``expected`` names the exception types that are the user's environment, not a
    bug (the package's error root, ``OSError``, ``grpc.RpcError``): each becomes
    ``Error: <one line>`` and exit 1 (or what ``on_error`` returns). Anything else
    is a bug and keeps its traceback.
    """
    try:
        command.main(args=list(argv) if argv is not None else None, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        return EXIT_FAILURE
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except SystemExit as e:  # --help, --version, sys.exit inside a command
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_FAILURE)
    except expected as e:
        click.echo(f"Error: {one_line(e)}", err=True)
        return on_error(e) if on_error is not None else EXIT_FAILURE
    return EXIT_OK

