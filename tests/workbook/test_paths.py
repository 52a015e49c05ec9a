"""Where the checkout's folders are: one place looked at, and a clear error naming it when it is not there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import reference_impl.workbook.paths as paths
from reference_impl.workbook.lab import main
from reference_impl.workbook.paths import CHECKOUT, NotACheckoutError, checkout_folder

REPO = Path(__file__).resolve().parents[2]


def test_the_checkout_is_the_folder_that_holds_the_package() -> None:
    assert CHECKOUT == REPO
    assert checkout_folder("lessons") == REPO / "lessons"
    assert checkout_folder("benchmarks", "results") == REPO / "benchmarks" / "results"


def test_a_root_that_is_not_a_checkout_raises_naming_the_folder_looked_for(tmp_path: Path) -> None:
    with pytest.raises(NotACheckoutError, match="lessons/ not found") as caught:
        checkout_folder("lessons", root=tmp_path)
    assert str(tmp_path / "lessons") in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError), (
        "callers that catch FileNotFoundError must still catch it"
    )


def test_a_checkout_without_the_folder_raises_naming_it(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "lessons").mkdir()
    assert checkout_folder("lessons", root=tmp_path) == tmp_path / "lessons"
    with pytest.raises(NotACheckoutError, match="benchmarks/results/ not found"):
        checkout_folder("benchmarks", "results", root=tmp_path)


def test_the_launcher_reports_a_missing_checkout_as_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(paths, "CHECKOUT", tmp_path)

    def never_start_jupyterlab(*args: object) -> None:
        raise AssertionError(f"the launcher went on to start JupyterLab: {args[:2]}")

    monkeypatch.setattr(os, "execve", never_start_jupyterlab)
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "lessons/ not found" in err and str(tmp_path / "lessons") in err, err
