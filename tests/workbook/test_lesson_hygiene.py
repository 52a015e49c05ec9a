"""Rules every committed lesson must keep, so that nbval's comparison means something."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import pytest

import reference_impl

ROOT = Path(__file__).resolve().parents[2]
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
# A cell made only of these statements has nothing to show, so an empty output is what it should have.
_SILENT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _parse(src: str) -> ast.Module:
    # IPython magics (%matplotlib, !pip) are not Python; blank them out before parsing.
    return ast.parse(
        "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())
    )


def provided_names() -> set[str]:
    """Every public class and function that a module of reference_impl defines."""
    names = set(reference_impl.__all__) - {"__version__"}
    for info in pkgutil.walk_packages(reference_impl.__path__, "reference_impl."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", "") == info.name:
                names.add(name)
    return names


def test_there_is_a_lesson_to_test() -> None:
    assert (ROOT / "lessons" / "00_start_here.ipynb") in LESSONS


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_code_cell_was_executed_and_shows_what_it_should(path: Path) -> None:
    problems = []
    for i, cell in enumerate(_code_cells(path)):
        src = _source(cell)
        if not src.strip():
            continue
        if cell.get("execution_count") is None:
            problems.append(f"code cell {i} has no execution count (nbval would compare nothing there)")
        elif not cell.get("outputs") and not all(isinstance(s, _SILENT) for s in _parse(src).body):
            problems.append(
                f"code cell {i} computes something but has no stored output: {src.splitlines()[0]!r}"
            )
    assert not problems, (
        f"{path.name}: re-run `python -m reference_impl.workbook.notebooks execute "
        f"{path.relative_to(ROOT)}`:\n" + "\n".join(problems)
    )


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_does_not_redefine_what_reference_impl_provides(path: Path) -> None:
    provided = provided_names()
    redefined = []
    for i, cell in enumerate(_code_cells(path)):
        for node in ast.walk(_parse(_source(cell))):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in provided:
                redefined.append(f"cell {i}: {type(node).__name__.replace('Def', '').lower()} {node.name}")
    assert not redefined, (
        f"{path.name} defines names that reference_impl already provides (import and show them instead): "
        f"{redefined}"
    )


def test_the_redefinition_check_knows_the_package() -> None:
    # The check above is only as good as this list: it must contain the public names of every module.
    provided = provided_names()
    assert {"compare", "setup", "PeakMemory", "check_row_sums", "execute_notebook"} <= provided
    assert set(reference_impl.__all__) - {"__version__"} <= provided


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_starts_with_the_shared_setup_cell(path: Path) -> None:
    first = _code_cells(path)[0]
    assert "setup(" in _source(first), (
        f"{path.name}: the first code cell must call reference_impl.workbook.lesson.setup()"
    )
    assert "nbval-ignore-output" in first.get("metadata", {}).get("tags", [])
