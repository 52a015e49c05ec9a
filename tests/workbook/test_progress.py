"""Progress bars: on stderr for a person at a terminal, nothing at all for tests, CI and notebooks."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import nbformat
import pytest

import reference_impl.workbook.notebooks as notebooks
from reference_impl.workbook.measure import side_by_side_seconds
from reference_impl.workbook.progress import progress


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, and keeps what was written to it."""

    def isatty(self) -> bool:
        return True


def _terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    # Called in the test itself: pytest's capture re-installs sys.stderr between a fixture and the test.
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    return stderr


def test_no_bar_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stderr.isatty()
    assert list(progress(range(5), desc="quiet")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr().err == ""


def test_a_bar_on_a_terminal_with_the_items_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    tty_stderr = _terminal(monkeypatch)
    assert list(progress("abc", desc="letters", unit="letter")) == ["a", "b", "c"]
    # The first frame ("0/3"); with leave=False the bar is wiped at the end, so a log keeps no trace of it.
    shown = tty_stderr.getvalue()
    assert "letters:" in shown and "/3 " in shown, repr(shown)
    assert shown.endswith("\r"), repr(shown)


def test_side_by_side_seconds_shows_its_rounds_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    tty_stderr = _terminal(monkeypatch)
    side_by_side_seconds({"noop": lambda: None}, rounds=4, warmup=0)
    assert tty_stderr.getvalue() == ""
    side_by_side_seconds({"noop": lambda: None}, rounds=4, warmup=0, desc="timing")
    assert "timing:" in tty_stderr.getvalue() and "/4 " in tty_stderr.getvalue(), repr(tty_stderr.getvalue())


def test_the_executor_shows_a_bar_over_the_notebooks_of_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a.ipynb", "b.ipynb"):
        nbformat.write(nbformat.v4.new_notebook(), tmp_path / name)
    tty_stderr = _terminal(monkeypatch)
    ran: list[Path] = []
    monkeypatch.setattr(notebooks, "execute_notebook", lambda path, timeout: ran.append(path))
    assert notebooks.main(["execute", str(tmp_path)]) == 0
    assert [p.name for p in ran] == ["a.ipynb", "b.ipynb"]
    assert "executing:" in tty_stderr.getvalue() and "/2 " in tty_stderr.getvalue(), repr(
        tty_stderr.getvalue()
    )
    assert capsys.readouterr().out.splitlines() == [
        f"executed {tmp_path / 'a.ipynb'}",
        f"executed {tmp_path / 'b.ipynb'}",
    ]
