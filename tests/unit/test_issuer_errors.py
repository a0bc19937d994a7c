"""The issuer has one error root: every exception class it defines descends from ``IssuerError``.

Why: ``healthcode-issuer`` turns that root into one ``Error:`` line
(:func:`shellkit.cli.run_click`), and the service maps it to a status code
with a stable reason; an exception outside it is a traceback or an unnamed
INTERNAL. The generated ``issuer/api`` stubs define no exceptions and are not
imported here.
"""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

from issuer.errors import IssuerError

ROOT = pathlib.Path(__file__).resolve().parents[2] / "issuer"


def _module_names() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT.parent).with_suffix("")
        if relative.parts[1] == "api":  # generated protobuf/gRPC stubs
            continue
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        names.append(".".join(parts))
    return names


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in _module_names():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == name:
                found.append(value)
    return found


EXCEPTIONS = _exception_classes()


def test_the_scan_finds_the_issuers_exceptions() -> None:
    names = {cls.__name__ for cls in EXCEPTIONS}
    assert {"IssuerError", "DocumentError", "RenderError", "SheetError", "ConfigError", "InvalidRequest"} <= names


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_every_issuer_exception_descends_from_the_root(cls: type[BaseException]) -> None:
    assert issubclass(cls, IssuerError), f"{cls.__module__}.{cls.__name__} is outside IssuerError"


@pytest.mark.parametrize("cls", EXCEPTIONS, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_every_issuer_exception_has_a_stable_reason_code(cls: type[BaseException]) -> None:
    reason = getattr(cls, "reason", None)
    assert isinstance(reason, str) and re.fullmatch(r"[a-z][a-z0-9_]*", reason), reason


@pytest.mark.parametrize(
    ("module", "name", "reason"),
    [
        ("issuer.documents", "DocumentError", "invalid_document"),
        ("issuer.render", "RenderError", "render"),
        ("issuer.sheets", "SheetError", "sheet"),
        ("issuer.config", "ConfigError", "config"),
        ("issuer.wire", "DeadlineExceeded", "deadline_exceeded"),
    ],
    ids=["document", "render", "sheet", "config", "deadline"],
)
def test_the_former_roots_have_their_own_reason(module: str, name: str, reason: str) -> None:
    assert getattr(importlib.import_module(module), name).reason == reason
