"""Rules every committed lesson must keep, so that nbval's comparison means something."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path

import nbformat
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


# --- portable, short outputs; a next link; student copies that match their instructions ---------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: Folders that belong to the machine a lesson ran on, never to the lesson: home, virtual-environment,
#: temporary.
MACHINE_PATH = re.compile(
    r"(?:/home/|/root/|/Users/|/tmp/|/var/folders/|/private/var/|/work/|site-packages|dist-packages|\.venv|"
    r"[A-Za-z]:\\\\)"
)
#: A deliberate error shows its type and message in this many lines at most.
MAX_ERROR_LINES = 3
SOLUTION_WORDS = re.compile(r"(BEGIN|END)[ _]SOLUTION|solution marker", re.IGNORECASE)


def output_texts(cell: dict) -> list[str]:
    """The text of every output of a code cell: streams, plain-text results and errors (images left out)."""
    texts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            texts.append("".join(out["text"]))
        elif out["output_type"] == "error":
            texts.append(_ANSI.sub("", "\n".join(out["traceback"])))
            texts.append(f"{out['ename']}: {out['evalue']}")
        else:
            data = out.get("data", {})
            for key in ("text/plain", "text/html", "text/markdown"):
                if key in data:
                    texts.append("".join(data[key]))
    return texts


def machine_paths(path: Path) -> list[str]:
    found = []
    for i, cell in enumerate(_code_cells(path)):
        for text in output_texts(cell):
            for match in MACHINE_PATH.finditer(text):
                line = text[: match.start()].count("\n")
                found.append(
                    f"code cell {i}, output line {line + 1}: {text.splitlines()[line].strip()[:120]!r}"
                )
    return list(dict.fromkeys(found))  # one entry per line, however many folders it names


def long_errors(path: Path) -> list[str]:
    found = []
    for i, cell in enumerate(_code_cells(path)):
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                lines = [ln for ln in _ANSI.sub("", "\n".join(out["traceback"])).splitlines() if ln.strip()]
                if len(lines) > MAX_ERROR_LINES:
                    found.append(
                        f"code cell {i}: {out['ename']} shown in {len(lines)} lines: {lines[0][:80]!r}"
                    )
            elif out["output_type"] == "stream" and "Traceback (most recent call last)" in "".join(
                out["text"]
            ):
                found.append(f"code cell {i}: a traceback printed to {out['name']}")
    return found


def next_link_problem(path: Path, lessons: list[Path]) -> str | None:
    """None if the lesson's last markdown cell links to the lesson after it (or it is the last lesson)."""
    later = [p for p in lessons if p.name > path.name]
    if not later:
        return None
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]
    last = _source(cells[-1]) if cells else ""
    if f"]({later[0].name})" not in last or "next" not in last.lower():
        return f"{path.name}: its last markdown cell has no 'Next: [...]({later[0].name})' link"
    return None


def student_copy_mentions_markers(path: Path) -> list[str]:
    from reference_impl.workbook.student import make_student_copy

    copy = make_student_copy(nbformat.read(path, as_version=4), name=path.name).notebook
    return [
        f"{c.cell_type} cell {i}: {m.group(0)!r}"
        for i, c in enumerate(copy.cells)
        for m in [SOLUTION_WORDS.search(c.source)]
        if m
    ]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_no_stored_output_shows_a_path_of_the_machine_it_ran_on(path: Path) -> None:
    found = machine_paths(path)
    assert not found, f"{path.name}: outputs name folders of the machine that ran it:\n" + "\n".join(found)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_deliberate_errors_are_shown_in_a_few_lines(path: Path) -> None:
    found = long_errors(path)
    assert not found, (
        f"{path.name}: errors must read as type and message in at most {MAX_ERROR_LINES} lines "
        "(setup() switches IPython to `xmode Minimal`; re-execute, or shorten the message):\n"
        + "\n".join(found)
    )


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_lesson_ends_with_a_link_to_the_next(path: Path) -> None:
    problem = next_link_problem(path, LESSONS)
    assert problem is None, problem


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_the_student_copy_never_mentions_solution_markers(path: Path) -> None:
    found = student_copy_mentions_markers(path)
    assert not found, (
        f"{path.name}: the student copy has no solution markers, so its text must not mention them "
        "(say 'replace `raise NotImplementedError`'):\n" + "\n".join(found)
    )


def _notebook(tmp_path: Path, cells: list, name: str = "09_fixture.ipynb") -> Path:
    nb = nbformat.v4.new_notebook(cells=cells)
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_the_hygiene_checks_bite_on_a_bad_fixture(tmp_path: Path) -> None:
    error = nbformat.v4.new_output(
        "error",
        ename="ValueError",
        evalue="bad",
        traceback=["-" * 20, "ValueError  Traceback", "File x", "ValueError: bad"],
    )
    leak = nbformat.v4.new_output("stream", name="stdout", text="saved to /home/alice/.venv/lib/x.pt\n")
    code = nbformat.v4.new_code_cell("f()", execution_count=1, outputs=[error, leak])
    exercise = nbformat.v4.new_code_cell(
        "def my_f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n\n\ncheck_f(my_f)",
        execution_count=2,
    )
    told = nbformat.v4.new_markdown_cell(
        "Replace the code between the `BEGIN SOLUTION` / `END SOLUTION` lines."
    )
    bad = _notebook(tmp_path, [code, told, exercise, nbformat.v4.new_markdown_cell("## Summary")])
    nxt = _notebook(tmp_path, [], "10_next.ipynb")
    assert machine_paths(bad) == ["code cell 0, output line 1: 'saved to /home/alice/.venv/lib/x.pt'"]
    assert long_errors(bad) and "4 lines" in long_errors(bad)[0]
    assert next_link_problem(bad, [bad, nxt]) is not None
    assert student_copy_mentions_markers(bad) == ["markdown cell 1: 'BEGIN SOLUTION'"]
    # ... and stay quiet on a good one.
    short = nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=["ValueError: bad"])
    good = _notebook(
        tmp_path,
        [
            nbformat.v4.new_code_cell("f()", execution_count=1, outputs=[short]),
            nbformat.v4.new_markdown_cell("Replace `raise NotImplementedError` with your code."),
            exercise,
            nbformat.v4.new_markdown_cell("## Summary\n\nNext: [10 · Next](10_next.ipynb)"),
        ],
    )
    assert not machine_paths(good) and not long_errors(good) and not student_copy_mentions_markers(good)
    assert next_link_problem(good, [good, nxt]) is None and next_link_problem(nxt, [good, nxt]) is None
