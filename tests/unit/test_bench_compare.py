"""``python -m tools.bench issuer-compare``'s guards (the run itself is a benchmark, recorded in
docs/benchmarks.md): without ``--tree`` it says it skipped, as when every benchmark runs; a directory
that is no checkout of this project is refused before any server starts."""

from __future__ import annotations

import io
import pathlib

import pytest

from tools.bench import __main__ as bench_main
from tools.bench import issuer_compare


def test_without_a_tree_it_skips_and_says_so() -> None:
    out = io.StringIO()
    assert issuer_compare.run(tree="", out=out) is None
    assert "skipped (needs --tree DIR" in out.getvalue()


def test_a_directory_without_the_issuer_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SystemExit, match="not a checkout of this project"):
        issuer_compare.run(tree=str(tmp_path), out=io.StringIO())


def test_registered_with_its_tree_option() -> None:
    assert bench_main.BENCHES["issuer-compare"] is issuer_compare.run
    assert bench_main.DEFAULTS["issuer-compare"]["tree"] == ""
