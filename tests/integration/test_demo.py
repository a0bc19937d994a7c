"""The README's main-job command runs end to end (a real issuer process, a client, offline verify)."""

from tools import demo


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "9. verified offline: VALID" in out and "returned the same code: True" in out
    assert "VALID as a live code" in out
    assert "scanned again: replayed; one made 2 minutes ago: stale_presentation" in out
    assert "on its own (a screenshot of it): presentation_required" in out
    assert (tmp_path / "demo" / "code.png").read_bytes().startswith(b"\x89PNG")
