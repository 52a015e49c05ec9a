"""Tests of reference_impl/workbook/student.py: student copies leak no solution, stop at the first exercise,
and never overwrite a student's work.

Two kinds of masters are used: a tiny fixture notebook built here (so the mechanics are tested whatever
lessons exist), and every `lessons/*.ipynb` found when the tests are collected (lessons arrive one by one;
re-run this file when one does). Tests that start a kernel are marked `slow` and execute only up to the first
exercise.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from reference_impl.workbook.student import (
    METADATA_KEY,
    BuildError,
    MasterError,
    build,
    content_hash,
    main,
    make_student_copy,
    strip_solutions,
)

REPO = Path(__file__).resolve().parents[2]
LESSONS_DIR = REPO / "lessons"
MASTERS = sorted(LESSONS_DIR.glob("*.ipynb"))
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
NOT_FINISHED = re.compile(r"Exercise '(?P<name>[^']+)' is not finished yet")

# --- a tiny master notebook: two exercises (a function, a method), a solution cell, outputs everywhere
# ----------

CHECKS_SOURCE = """\
from reference_impl.workbook.checks import passed, student_call


def check_my_double(fn):
    got = student_call("my double", fn, 21)
    assert got == 42, f"my_double(21) returned {got}, expected 42"
    passed("my double")


def check_my_scale(scale):
    got = student_call("my scale", scale, 2)
    assert got == 6, f"MyScale()(2) returned {got}, expected 6"
    passed("my scale")"""

EXERCISE_1 = f"""\
def my_double(x):
    {BEGIN}
    doubled_value = x + x  # add the number to itself
    return doubled_value
    {END}


check_my_double(my_double)"""

EXERCISE_2 = f"""\
class MyScale:
    def __call__(self, x):
        {BEGIN}
        return x * 3  # three times, the secret factor
        {END}"""

SOLUTION_CELL = "The answer to exercise 1: `doubled_value = x + x  # add the number to itself`."


def _stream(text: str) -> nbformat.NotebookNode:
    return new_output("stream", name="stdout", text=text)


def fixture_master() -> nbformat.NotebookNode:
    """A master notebook shaped like a lesson's exercise section, with its outputs as execution left them."""
    cells = [
        new_markdown_cell("# Fixture lesson"),
        new_code_cell(CHECKS_SOURCE, execution_count=1),
        new_code_cell(
            "print('before the exercises')", execution_count=2, outputs=[_stream("before the exercises\n")]
        ),
        new_markdown_cell("<details><summary>Hint</summary>\n\nAdd it to itself.\n</details>"),
        new_code_cell(EXERCISE_1, execution_count=3, outputs=[_stream("✅ my double: all checks passed\n")]),
        new_markdown_cell(SOLUTION_CELL, metadata={"tags": ["solution"]}),
        new_code_cell(EXERCISE_2, execution_count=4),
        new_code_cell(
            "check_my_scale(MyScale())",
            execution_count=5,
            outputs=[_stream("✅ my scale: all checks passed\n")],
        ),
        new_code_cell(
            "print('after the exercises')", execution_count=6, outputs=[_stream("after the exercises\n")]
        ),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    return nb


def write_master(
    folder: Path, nb: nbformat.NotebookNode | None = None, name: str = "90_fixture.ipynb"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb if nb is not None else fixture_master(), path)
    return path


# --- an independent reading of a master: what a student copy must not contain
# ----------------------------------


def split_code(nb: nbformat.NotebookNode) -> tuple[list[list[str]], list[str]]:
    """The lines between BEGIN and END of each code cell, and all other code lines (read without
    reference_impl.workbook.student; cells tagged `solution` are in neither)."""
    blocks: list[list[str]] = []
    outside: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "solution" in cell.metadata.get("tags", []):
            continue
        inside: list[str] | None = None
        for line in cell.source.split("\n"):
            if line.strip() == BEGIN:
                inside = []
            elif line.strip() == END:
                assert inside is not None
                blocks.append(inside)
                inside = None
            elif inside is not None:
                inside.append(line)
            else:
                outside.append(line)
    return blocks, outside


def solution_blocks(nb: nbformat.NotebookNode) -> list[list[str]]:
    return split_code(nb)[0]


def telling_solution_lines(nb: nbformat.NotebookNode) -> set[str]:
    """Solution lines (blocks and `solution` cells) of 12+ characters, not a bare def/class header, that the
    master shows nowhere else in code and that are not in reference_impl's own source (public: lessons print
    it, students have it installed)."""
    blocks, outside = split_code(nb)
    hidden = [line for block in blocks for line in block]
    hidden += [
        line for c in nb.cells if "solution" in c.metadata.get("tags", []) for line in c.source.split("\n")
    ]
    shown = "\n".join(outside)
    package = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "reference_impl").rglob("*.py"))
    header = re.compile(r"(def|class) \w+[^:]*:$")  # naming a helper (as a hint may) tells nothing
    return {
        t
        for t in (line.strip() for line in hidden)
        if len(t) >= 12 and not header.fullmatch(t) and t not in shown and t not in package
    }


def every_string(node: Any) -> Iterator[str]:
    """Keys and values of every dict and list: sources, outputs, metadata and attachments alike."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from every_string(value)
    elif isinstance(node, list):
        for value in node:
            yield from every_string(value)


def assert_no_solution_leaks(master: nbformat.NotebookNode, student_file: Path) -> None:
    raw = student_file.read_text(encoding="utf-8")
    strings = list(every_string(json.loads(raw)))
    telling = telling_solution_lines(master)
    for line in sorted(telling):
        assert not any(line in s for s in strings), f"solution line {line!r} leaks into {student_file}"
        assert json.dumps(line)[1:-1] not in raw, (
            f"solution line {line!r} leaks into {student_file} (raw JSON)"
        )
    assert BEGIN not in raw and END not in raw, f"a solution marker is left in {student_file}"


# --- strip_solutions: one cell's source
# -------------------------------------------------------------------------


def test_a_solution_block_becomes_the_placeholder_at_the_markers_indentation() -> None:
    student, blocks = strip_solutions(EXERCISE_2)
    assert student == "class MyScale:\n    def __call__(self, x):\n        raise NotImplementedError"
    assert blocks == [["        return x * 3  # three times, the secret factor"]]


def test_every_block_of_a_cell_is_replaced_and_code_around_them_is_kept() -> None:
    source = (
        f"def f(x):\n    y = x + 1\n    {BEGIN}\n    y = y * 2\n    {END}\n    return y\n\n\ndef g():\n "
        f" {BEGIN}\n  pass\n  {END}\nf(1)"
    )
    student, blocks = strip_solutions(source)
    assert (
        student
        == "def f(x):\n    y = x + 1\n    raise NotImplementedError\n    return y\n\n\ndef g():\n  raise "
        "NotImplementedError\nf(1)"
    )
    assert blocks == [["    y = y * 2"], ["  pass"]]


def test_a_cell_without_markers_is_unchanged() -> None:
    assert strip_solutions("x = 1\nprint(x)") == ("x = 1\nprint(x)", [])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param(
            f"def f():\n    {BEGIN}\n    return 1",
            r"line 2: '### BEGIN SOLUTION' is never closed",
            id="unclosed",
        ),
        pytest.param(
            f"def f():\n    return 1\n    {END}",
            r"line 3: '### END SOLUTION' without a '### BEGIN",
            id="end-alone",
        ),
        pytest.param(
            f"def f():\n    {BEGIN}\n    {BEGIN}\n    return 1\n    {END}\n    {END}",
            r"line 3: .* inside the solution block opened at line 2; markers cannot be nested",
            id="nested",
        ),
        pytest.param(
            f"def f():\n    ## BEGIN SOLUTION\n    return 1\n    {END}",
            r"line 2: .*looks like a solution marker",
            id="two-hashes",
        ),
        pytest.param(
            f"def f():\n    {BEGIN}\n    return 1\n    ### end solution",
            r"line 4: .*looks like a solution marker",
            id="lowercase",
        ),
        pytest.param(
            f"def f():\n    return 1  {BEGIN}\n    {END}",
            r"line 2: .*looks like a solution marker",
            id="trailing",
        ),
        pytest.param(
            f"{BEGIN}\ny = 2\n{END}", r"line 1: .*top level of the cell.*inside the body", id="top-level"
        ),
    ],
)
def test_broken_markers_are_refused_with_the_line(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        strip_solutions(source)


# --- make_student_copy: one notebook
# ----------------------------------------------------------------------------


def test_the_student_copy_of_the_fixture_keeps_the_lesson_and_drops_the_solutions(tmp_path: Path) -> None:
    master = fixture_master()
    before = copy.deepcopy(master)
    made = make_student_copy(master, name="lessons/90_fixture.ipynb")
    nb = made.notebook
    assert master == before, "the master must not be modified"
    assert made.removed_cells == 1
    assert [c.source for c in nb.cells].count(SOLUTION_CELL) == 0
    assert len(nb.cells) == len(master.cells) - 1
    assert made.exercise_cells == (4, 5)
    assert made.check_cells == (4, 6)  # exercise 1 checks itself; exercise 2 is checked by the next cell
    assert (
        nb.cells[4].source
        == "def my_double(x):\n    raise NotImplementedError\n\n\ncheck_my_double(my_double)"
    )
    for i in (4, 5, 6):  # exercise and verdict cells: nothing from the master's run is left
        assert nb.cells[i].outputs == [] and nb.cells[i].execution_count is None, i
    for i in (2, 7):  # every other cell keeps its outputs and count
        assert (
            nb.cells[i].outputs == master.cells[i + (i > 4)].outputs
            and nb.cells[i].execution_count is not None
        )
    recorded = nb.metadata[METADATA_KEY]
    assert recorded["master"] == "90_fixture.ipynb"
    assert recorded["content_sha256"] == content_hash(nb)
    path = tmp_path / "copy.ipynb"
    nbformat.write(nb, path)
    assert_no_solution_leaks(master, path)


def test_the_leak_scan_of_these_tests_bites() -> None:
    # The independent scan used on every lesson must see the fixture's solution lines...
    assert telling_solution_lines(fixture_master()) == {
        "doubled_value = x + x  # add the number to itself",
        "return doubled_value",
        "return x * 3  # three times, the secret factor",
        SOLUTION_CELL,
    }


def test_the_leak_scan_of_these_tests_fails_on_a_copy_that_kept_a_solution(tmp_path: Path) -> None:
    # ...and fail on a copy where one survived (here: in a cell's metadata).
    master = fixture_master()
    nb = make_student_copy(master, name="90_fixture.ipynb").notebook
    nb.cells[0].metadata["note"] = "return x * 3  # three times, the secret factor"
    path = tmp_path / "leaky.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(AssertionError, match="leaks into"):
        assert_no_solution_leaks(master, path)


def _with_cell(index: int, cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = fixture_master()
    nb.cells.insert(index, cell)
    return nb


def test_a_broken_marker_is_refused_naming_notebook_and_cell() -> None:
    nb = fixture_master()
    nb.cells[4].source = nb.cells[4].source.replace(f"    {END}\n", "")
    cell_id = nb.cells[4].id
    with pytest.raises(MasterError) as info:
        make_student_copy(nb, name="lessons/90_fixture.ipynb")
    message = str(info.value)
    assert message.startswith(
        f"lessons/90_fixture.ipynb, cell 5 (id {cell_id!r}, code starting 'def my_double(x):')"
    )
    assert "line 2: '### BEGIN SOLUTION' is never closed" in message


def test_an_exercise_without_a_check_is_refused() -> None:
    nb = fixture_master()
    del nb.cells[7]  # exercise 2's verdict cell
    with pytest.raises(MasterError, match=r"cell 6 .*'class MyScale:'.*calls no self-check"):
        make_student_copy(nb, name="90_fixture.ipynb")


def test_defining_a_check_does_not_count_as_calling_one() -> None:
    nb = fixture_master()
    nb.cells[7].source = "def check_my_scale_again(scale):\n    return scale"
    with pytest.raises(MasterError, match="calls no self-check"):
        make_student_copy(nb, name="90_fixture.ipynb")


def test_a_marker_in_markdown_is_refused_but_a_fenced_example_is_not() -> None:
    with pytest.raises(MasterError, match=r"cell 2 .*solution markers only work in code cells"):
        make_student_copy(
            _with_cell(1, new_markdown_cell(f"{BEGIN}\nthe answer\n{END}")), name="90_fixture.ipynb"
        )
    fenced = new_markdown_cell(
        f"Write your code here:\n```python\ndef f():\n    {BEGIN}\n    ...\n    {END}\n```"
    )
    made = make_student_copy(_with_cell(1, fenced), name="90_fixture.ipynb")
    assert made.notebook.cells[1].source == fenced.source


def test_a_solution_printed_by_another_cell_is_refused_as_a_leak() -> None:
    shows = new_code_cell(
        "import inspect\nprint(inspect.getsource(MyScale))",
        execution_count=7,
        outputs=[
            _stream(EXERCISE_2.replace(f"        {BEGIN}\n", "").replace(f"\n        {END}", "") + "\n")
        ],
    )
    with pytest.raises(
        MasterError, match=r"solution line 'return x \* 3  # three times.*notebook.cells\[8\].outputs"
    ):
        make_student_copy(_with_cell(9, shows), name="90_fixture.ipynb")


def test_a_hint_may_name_a_helper_but_not_quote_its_body() -> None:
    nb = fixture_master()
    nb.cells[4].source = (
        f"def my_double(x):\n    {BEGIN}\n    def twice_of(value):\n        return value + value  # the "
        f"double\n    return twice_of(x)\n    {END}\n\n\ncheck_my_double(my_double)"
    )
    nb.cells[3].source = "<details><summary>Hint</summary>\n\nWrite `def twice_of(value):` first.\n</details>"
    make_student_copy(nb, name="90_fixture.ipynb")  # naming the helper tells nothing
    nb.cells[3].source += "\nIt is `return value + value  # the double`."
    with pytest.raises(
        MasterError, match=r"solution line 'return value \+ value  # the double'.*cells\[3\]\.source"
    ):
        make_student_copy(nb, name="90_fixture.ipynb")


def test_a_placeholder_that_breaks_the_cells_syntax_is_refused() -> None:
    nb = fixture_master()
    # The markers swallow the `except`: the copy would be a `try` without one.
    swallowed = f"try:\n    {BEGIN}\n    x = 1\nexcept ValueError:\n    x = 2\n    {END}\ncheck_my_scale(x)"
    nb.cells[6].source = swallowed
    with pytest.raises(MasterError, match="no longer valid Python"):
        make_student_copy(nb, name="90_fixture.ipynb")


def test_a_student_copy_is_not_accepted_as_a_master() -> None:
    nb = make_student_copy(fixture_master(), name="90_fixture.ipynb").notebook
    with pytest.raises(MasterError, match="is itself a student copy"):
        make_student_copy(nb, name="student/90_fixture.ipynb")


# --- build: the files, and never overwriting a student's work
# --------------------------------------------------


def test_build_writes_a_student_copy_and_rebuilding_an_unchanged_copy_is_silent(tmp_path: Path) -> None:
    master_path = write_master(tmp_path / "lessons")
    out = tmp_path / "student"
    assert build([tmp_path / "lessons"], out) == [
        f"{out / master_path.name}: written from {master_path} (2 exercise(s), 1 solution cell(s) removed)"
    ]
    assert_no_solution_leaks(nbformat.read(master_path, as_version=4), out / master_path.name)
    assert build([master_path], out) == [f"{out / master_path.name}: up to date"]
    # The master changed, the copy did not: it is simply regenerated.
    master = nbformat.read(master_path, as_version=4)
    master.cells[0].source = "# Fixture lesson, revised"
    nbformat.write(master, master_path)
    assert build([master_path], out)[0].startswith(f"{out / master_path.name}: written from")
    assert nbformat.read(out / master_path.name, as_version=4).cells[0].source == "# Fixture lesson, revised"
    assert sorted(p.name for p in out.iterdir()) == [master_path.name]


def test_metadata_that_jupyterlab_rewrites_on_save_is_not_a_change(tmp_path: Path) -> None:
    master_path = write_master(tmp_path / "lessons")
    out = tmp_path / "student"
    build([master_path], out)
    nb = nbformat.read(out / master_path.name, as_version=4)
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.9"}
    nb.cells[0].metadata["collapsed"] = False
    nbformat.write(nb, out / master_path.name)
    assert build([master_path], out)[0].startswith(f"{out / master_path.name}: written from")


def _student_edits(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    nb.cells[4].source = "def my_double(x):\n    return 2 * x  # my own work\n\n\ncheck_my_double(my_double)"
    nbformat.write(nb, path)
    return path.read_text(encoding="utf-8")


def _student_runs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    nb.cells[4].execution_count = 1
    nb.cells[4].outputs = [new_output("error", ename="ExerciseNotFinished", evalue="...", traceback=[])]
    nbformat.write(nb, path)
    return path.read_text(encoding="utf-8")


def _someone_elses(path: Path) -> str:
    nbformat.write(new_notebook(cells=[new_markdown_cell("my own notes")]), path)
    return path.read_text(encoding="utf-8")


def _garbage(path: Path) -> str:
    path.write_text("{ not a notebook", encoding="utf-8")
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_student_edits, "its cells (sources or outputs) changed since it was generated"),
        (_student_runs, "its cells (sources or outputs) changed since it was generated"),
        (_someone_elses, "it was not made by `python -m reference_impl.workbook.student build`"),
        (_garbage, "it cannot be read as a notebook"),
    ],
    ids=["edited", "run-and-saved", "not-generated", "unreadable"],
)
def test_a_changed_copy_is_refused_and_force_keeps_a_backup(tmp_path: Path, change: Any, reason: str) -> None:
    master_path = write_master(tmp_path / "lessons")
    out = tmp_path / "student"
    dest = out / master_path.name
    if change is _student_edits or change is _student_runs:
        build([master_path], out)
    else:
        out.mkdir()
    students_work = change(dest)

    with pytest.raises(BuildError) as info:
        build([master_path], out)
    (message,) = info.value.problems
    assert message.startswith(f"{dest}: refusing to overwrite: {reason}")
    assert message.endswith(
        "It may hold a student's work. Move it away, or rerun with --force to replace it (a backup is kept "
        "beside it)."
    )
    assert dest.read_text(encoding="utf-8") == students_work, "a refused build must not touch the file"
    assert sorted(p.name for p in out.iterdir()) == [dest.name]

    (done,) = build([master_path], out, force=True)
    (backup,) = [p for p in out.iterdir() if p != dest]
    assert re.fullmatch(r"90_fixture\.bak-\d{8}T\d{6}Z\.ipynb", backup.name), backup.name
    assert backup.read_text(encoding="utf-8") == students_work, "the backup holds exactly the student's file"
    assert f"kept a backup at {backup}" in done and str(dest) in done
    rebuilt = nbformat.read(dest, as_version=4)
    assert rebuilt.metadata[METADATA_KEY]["content_sha256"] == content_hash(rebuilt)
    assert build([master_path], out) == [f"{dest}: up to date"]


def test_one_broken_master_means_nothing_is_written(tmp_path: Path) -> None:
    good = write_master(tmp_path / "lessons", name="90_good.ipynb")
    broken_nb = fixture_master()
    broken_nb.cells[6].source = broken_nb.cells[6].source.replace(END, "")
    write_master(tmp_path / "lessons", broken_nb, name="91_broken.ipynb")
    out = tmp_path / "student"
    with pytest.raises(BuildError) as info:
        build([tmp_path / "lessons"], out)
    assert len(info.value.problems) == 1
    assert "91_broken.ipynb, cell 7" in info.value.problems[0] and "never closed" in info.value.problems[0]
    assert not out.exists(), "nothing may be written when one master is broken"
    assert good.exists()


def test_paths_that_are_not_notebooks_or_folders_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(
        BuildError, match=r"path='.*notes\.txt' is not a notebook: expected a \.ipynb file or a folder"
    ):
        build([text], tmp_path / "student")
    with pytest.raises(BuildError, match=r"'.*missing\.ipynb' does not exist"):
        build([tmp_path / "missing.ipynb"], tmp_path / "student")
    with pytest.raises(BuildError, match=r"path='.*' is a folder with no notebook in it"):
        build([tmp_path], tmp_path / "student")


def test_the_out_folder_must_be_a_folder_other_than_the_masters(tmp_path: Path) -> None:
    master_path = write_master(tmp_path / "lessons")
    before = master_path.read_text(encoding="utf-8")
    with pytest.raises(BuildError, match="is the masters' own folder"):
        build([master_path], tmp_path / "lessons", force=True)
    assert master_path.read_text(encoding="utf-8") == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(BuildError, match=r"out='.*file' is not a folder"):
        build([master_path], tmp_path / "file")


def test_the_command_line_exits_non_zero_and_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master_path = write_master(tmp_path / "lessons")
    out = tmp_path / "student"
    assert main(["build", str(tmp_path / "lessons"), "--out", str(out)]) == 0
    _student_edits(out / master_path.name)
    capsys.readouterr()
    assert main(["build", str(tmp_path / "lessons"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("student copies NOT built; nothing was written:\n- ")
    assert f"{out / master_path.name}: refusing to overwrite" in err
    assert main(["build", str(tmp_path / "lessons"), "--out", str(out), "--force"]) == 0
    assert "kept a backup at" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        main(["build", str(tmp_path / "lessons")])  # --out is required
    assert usage.value.code == 2


def test_the_module_runs_as_a_command(tmp_path: Path) -> None:
    write_master(tmp_path / "lessons")
    result = subprocess.run(
        [sys.executable, "-m", "reference_impl.workbook.student", "build", "lessons", "--out", "student"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout
        == "student/90_fixture.ipynb: written from lessons/90_fixture.ipynb (2 exercise(s), 1 solution "
        "cell(s) removed)\n"
    )


# --- executing student copies: they run up to the first exercise and stop there, naming it
# -----------------------


def run_to_first_exercise(nb: nbformat.NotebookNode, verdict: int, cwd: Path) -> nbformat.NotebookNode:
    """Execute cells 0..verdict of a copy of `nb` in a fresh kernel of this environment; errors are
    recorded."""
    from nbclient import NotebookClient

    head = copy.deepcopy(nb)
    head.cells = head.cells[: verdict + 1]
    NotebookClient(
        head,
        timeout=300,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    ).execute()
    return head


def errors_of(cell: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for o in cell.get("outputs", []) if o.output_type == "error"]


def assert_stops_at_first_exercise(student: nbformat.NotebookNode, verdict: int, cwd: Path) -> str:
    """Run up to the first exercise's verdict cell; return the exercise name ExerciseNotFinished gives."""
    ran = run_to_first_exercise(student, verdict, cwd)
    for i, cell in enumerate(ran.cells[:verdict]):
        if cell.cell_type == "code" and "raises-exception" not in cell.metadata.get("tags", []):
            assert not errors_of(cell), (
                f"cell {i + 1} failed before the first exercise: {errors_of(cell)[0].evalue}"
            )
    errors = errors_of(ran.cells[verdict])
    assert errors, f"cell {verdict + 1}, the first exercise's check, ran without error in the student copy"
    assert errors[0].ename == "ExerciseNotFinished", f"{errors[0].ename}: {errors[0].evalue}"
    found = NOT_FINISHED.search(errors[0].evalue)
    assert found, errors[0].evalue
    return found["name"]


@pytest.mark.slow
def test_the_fixture_student_copy_stops_at_its_first_exercise(tmp_path: Path) -> None:
    made = make_student_copy(fixture_master(), name="90_fixture.ipynb")
    assert assert_stops_at_first_exercise(made.notebook, made.check_cells[0], tmp_path) == "my double"


@pytest.mark.slow
def test_the_fixture_master_passes_its_own_checks(tmp_path: Path) -> None:
    # The fixture is only a fair test of the mechanics if its solutions do pass.
    master = fixture_master()
    ran = run_to_first_exercise(master, len(master.cells) - 1, tmp_path)
    assert not any(errors_of(c) for c in ran.cells)
    assert ran.cells[4].outputs[0].text == "✅ my double: all checks passed\n"
    assert ran.cells[7].outputs[0].text == "✅ my scale: all checks passed\n"


# --- every lesson that exists now
# ------------------------------------------------------------------------------


def test_lessons_were_found() -> None:
    assert (LESSONS_DIR / "00_start_here.ipynb") in MASTERS


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("master_path", MASTERS, ids=[p.stem for p in MASTERS])
def test_every_lesson_has_exercises(master_path: Path) -> None:
    needed = 1 if master_path.stem == "00_start_here" else 2
    found = len(solution_blocks(_read(master_path)))
    assert found >= needed, (
        f"{master_path.name} has {found} solution block(s); a lesson needs at least {needed}"
    )


@pytest.mark.parametrize("master_path", MASTERS, ids=[p.stem for p in MASTERS])
def test_every_lesson_builds_a_copy_that_leaks_no_solution(master_path: Path, tmp_path: Path) -> None:
    master = _read(master_path)
    build([master_path], tmp_path)
    student_path = tmp_path / master_path.name
    student = _read(student_path)
    assert_no_solution_leaks(master, student_path)
    exercise_cells = [c for c in master.cells if c.cell_type == "code" and BEGIN in c.source]
    student_by_id = {c.id: c for c in student.cells}
    for cell in exercise_cells:
        copied = student_by_id[cell.id]
        assert "raise NotImplementedError" in copied.source
        assert copied.outputs == [] and copied.execution_count is None
    for cell in master.cells:
        if "solution" in cell.metadata.get("tags", []):
            assert cell.id not in student_by_id


@pytest.mark.slow
@pytest.mark.parametrize("master_path", MASTERS, ids=[p.stem for p in MASTERS])
def test_every_student_lesson_stops_at_its_first_exercise(master_path: Path) -> None:
    master = _read(master_path)
    made = make_student_copy(master, name=master_path.name)
    verdict = made.check_cells[0]
    # Run from the real lessons/ folder (paths like ../benchmarks/results resolve as in JupyterLab).
    name = assert_stops_at_first_exercise(made.notebook, verdict, LESSONS_DIR)
    # The master's verdict cell shows the success line of that very exercise.
    master_verdict = next(c for c in master.cells if c.id == made.notebook.cells[verdict].id)
    shown = "".join(o.get("text", "") for o in master_verdict.outputs if o.output_type == "stream")
    assert master_verdict.outputs, (
        f"{master_path.name}: the master's check cell (cell {verdict + 1} of the copy) has no stored output; "
        f"execute the master: python -m reference_impl.workbook.notebooks execute lessons/{master_path.name}"
    )
    assert f"✅ {name}: all checks passed" in shown, (
        f"{master_path.name}: the student copy stops at exercise {name!r}, but the master's check cell "
        f"(cell {verdict + 1} of the copy) shows {shown!r}"
    )


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    """Run the command line expecting a refusal; return its stderr lines (no traceback allowed)."""
    capsys.readouterr()
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return captured.err.splitlines()


def test_an_out_folder_below_a_file_is_refused_in_one_line_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master_path = write_master(tmp_path / "lessons")
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    out = notes / "student" / "copies"
    lines = _cli_error(capsys, ["build", str(master_path), "--out", str(out)])
    assert lines == [
        "student copies NOT built; nothing was written:",
        f"- out={str(out)!r} cannot be created: {str(notes)!r} is a file, not a folder",
    ]
    assert notes.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["lessons", "notes.txt"]


def test_a_master_path_that_does_not_exist_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "lesons"  # mistyped
    out = tmp_path / "student"
    lines = _cli_error(capsys, ["build", str(missing), "--out", str(out)])
    assert lines[-1] == f"- path={str(missing)!r} does not exist" and len(lines) == 2
    assert not out.exists()


# Tests run as root, for whom permission bits mean nothing; sysfs refuses new files even to root, so /sys
# stands for "a read-only folder" (skipped where it is absent or writable).
def _sys_refuses_files() -> bool:
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys").is_dir()
    os.close(fd)
    os.unlink(probe)
    return False


@pytest.mark.skipif(
    not _sys_refuses_files(), reason="needs /sys refusing new files (a read-only folder for root)"
)
def test_an_out_folder_that_refuses_files_is_refused_in_one_line_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    master_path = write_master(tmp_path / "lessons")
    out = Path("/sys") / "student-copies-test"
    lines = _cli_error(capsys, ["build", str(master_path), "--out", str(out)])
    assert len(lines) == 2 and lines[1].startswith(
        f"- out={str(out)!r} cannot be written: '/sys' refuses new files ("
    )
    assert not out.exists()


def test_a_write_that_fails_part_way_is_reported_in_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure the probe cannot foresee (disk full between the check and the write), simulated."""
    import reference_impl.workbook.student as student

    master_path = write_master(tmp_path / "lessons")
    out = tmp_path / "student"

    def disk_full(nb: Any, dest: Path) -> None:
        raise OSError(28, "No space left on device", str(dest))

    monkeypatch.setattr(student, "write_atomically", disk_full)
    lines = _cli_error(capsys, ["build", str(master_path), "--out", str(out)])
    assert lines == [
        "student copies NOT built; some copies may have been written:",
        f"- out={str(out)!r}: writing failed at {out / master_path.name}: No space left on device",
    ]
