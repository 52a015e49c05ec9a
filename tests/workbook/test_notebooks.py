"""`python -m reference_impl.workbook.notebooks execute`: clean re-execution, refusal of non-notebooks, no
damage on failure.
Also proves the suite's nbval run really compares outputs (a broken output fails it)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from reference_impl.workbook.notebooks import clean_metadata, find_notebooks, main

ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, *sources: str, tags: dict[int, list[str]] | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    for i, t in (tags or {}).items():
        nb.cells[i].metadata["tags"] = t
    nb.metadata["widgets"] = {"state": "volatile"}
    nbformat.write(nb, path)
    return path


def test_refuses_a_path_that_is_not_a_notebook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "notes.md"
    readme.write_text("# not a notebook")
    with pytest.raises(SystemExit) as exc:
        main(["execute", str(readme)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "path=" in err and "notes.md" in err and "is not a notebook" in err


def test_refuses_a_missing_notebook(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.ipynb"):
        find_notebooks([tmp_path / "missing.ipynb"])


def test_a_folder_expands_to_its_notebooks_without_checkpoints(tmp_path: Path) -> None:
    _write(tmp_path / "b.ipynb", "1")
    _write(tmp_path / "a.ipynb", "1")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    _write(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb", "1")
    assert [p.name for p in find_notebooks([tmp_path])] == ["a.ipynb", "b.ipynb"]


@pytest.mark.slow
def test_execute_keeps_counts_strips_volatile_metadata_and_allows_tagged_errors(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ok.ipynb",
        "import os\nprint(os.path.basename(os.getcwd()))",
        "raise ValueError('shown on purpose')",
        "print(6 * 7)",
        tags={1: ["raises-exception"]},
    )
    assert main(["execute", str(path)]) == 0
    nb = nbformat.read(path, as_version=4)
    assert [c.execution_count for c in nb.cells] == [1, 2, 3]
    assert nb.cells[0].outputs[0]["text"] == f"{tmp_path.name}\n", (
        "cells must run in the notebook's own folder"
    )
    assert nb.cells[1].outputs[0]["ename"] == "ValueError"
    assert nb.cells[2].outputs[0]["text"] == "42\n"
    assert "widgets" not in nb.metadata
    assert all("execution" not in c.metadata for c in nb.cells)


@pytest.mark.slow
def test_a_failing_notebook_is_left_byte_for_byte_untouched(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.ipynb", "print('fine')", "1 / 0")
    before = path.read_bytes()
    assert main(["execute", str(path)]) == 1
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ipynb"], "no temporary file may be left behind"


def test_clean_metadata_removes_what_varies_and_keeps_tags() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1")]
    nb.cells[0].metadata.update({"execution": {"iopub.status.busy": "x"}, "tags": ["keep"]})
    nb.metadata.update({"widgets": {}, "language_info": {"name": "python", "version": "3.11.7"}})
    clean_metadata(nb)
    assert nb.cells[0].metadata == {"tags": ["keep"]}
    assert nb.metadata["language_info"] == {"name": "python"}
    assert "widgets" not in nb.metadata


@pytest.mark.slow
def test_nbval_fails_when_a_stored_output_of_start_here_is_broken(tmp_path: Path) -> None:
    # The proof that the suite compares outputs: corrupt one stored output of a real lesson and run nbval on
    # it.
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    for name in ("pyproject.toml", "nbval_sanitize.cfg"):
        shutil.copy(ROOT / name, tmp_path / name)
    nb = json.loads((ROOT / "lessons" / "00_start_here.ipynb").read_text())
    target = next(
        c
        for c in nb["cells"]
        if c["cell_type"] == "code"
        and "nbval-ignore-output" not in c["metadata"].get("tags", [])
        and any(o.get("name") == "stdout" for o in c["outputs"])
    )
    out = next(o for o in target["outputs"] if o.get("name") == "stdout")
    out["text"] = ["this is not what the cell prints\n"]
    (lessons / "00_start_here.ipynb").write_text(json.dumps(nb))
    args = [
        sys.executable,
        "-m",
        "pytest",
        "lessons/00_start_here.ipynb",
        "-n0",
        "-q",
        "-o",
        "testpaths=lessons",
    ]
    broken = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert broken.returncode == 1, broken.stdout[-2000:]
    assert "1 failed" in broken.stdout


@pytest.mark.parametrize("kind", ["empty-folder", "mistyped-folder"])
def test_an_empty_or_mistyped_folder_is_an_error_not_a_silent_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    folder = tmp_path / "lessons"
    if kind == "empty-folder":
        folder.mkdir()
        (folder / "notes.md").write_text("not a notebook")
        expected = "is a folder with no notebook in it"
    else:
        folder = tmp_path / "lesons"  # the folder is called lessons
        expected = "does not exist"
    with pytest.raises(SystemExit) as exc:
        main(["execute", str(folder)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"path={str(folder)!r}" in err and expected in err


@pytest.mark.slow
def test_a_notebook_that_is_not_json_is_reported_and_the_others_still_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "a_broken.ipynb"
    broken.write_text('{"cells": [')  # cut short: not JSON
    good = _write(tmp_path / "b_good.ipynb", "print(6 * 7)")
    assert main(["execute", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert f"{broken}: not a valid notebook (NotJSONError" in err and "left unchanged" in err
    assert "Traceback" not in err
    assert f"executed {good}" in out
    assert nbformat.read(good, as_version=4).cells[0].outputs[0]["text"] == "42\n"
    assert broken.read_text() == '{"cells": ['
