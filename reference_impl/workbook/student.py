"""Student copies of the lessons: the same notebooks with the exercises' solutions taken out.

    python -m reference_impl.workbook.student build lessons --out student            # every lesson
    python -m reference_impl.workbook.student build lessons/02_conv1d_vs_linear.ipynb --out student --force

Not a re-implementation of transformers: this is the workbook's own tooling, in the spirit of nbgrader's
"generate assignment". The lessons in `lessons/` are the tested master copies; a student copy is made from a
master by these rules:

- In a code cell, the lines from `### BEGIN SOLUTION` to `### END SOLUTION` (markers included) become one line
  `raise NotImplementedError`, indented like the BEGIN marker. Such a cell is an *exercise cell*; its outputs
  and execution count are cleared, and so are those of its *verdict cell*, the first cell from the exercise
  cell on that calls a self-check (`check_...(`): its stored output would show the success line before the
  student wrote anything. Other cells keep their outputs (the lesson's plots, and the demonstrations of what a
  check says about a wrong answer).
- Cells tagged `solution` are removed whole.
- The copy's notebook metadata gets a `student_copy` entry: the master it came from, the command that made it,
  and `content_sha256`, a hash of what was written (each cell's type, source, outputs and attachments).

The build refuses, naming the notebook and the cell (nothing is written, not even the good notebooks):
a BEGIN without its END, an END without a BEGIN, nested markers, a line that looks like a marker but is not
one exactly (`## BEGIN SOLUTION`, `### begin solution`: it would leak the solution), a marker in a Markdown
cell outside a fenced code example, a solution block at the top level of a cell (the placeholder would raise
`NotImplementedError` as soon as the cell runs, before a self-check can name the exercise: put the solution
inside the function's body), an exercise whose cell and following cells call no self-check before the next
exercise, a student cell that is no longer valid Python, and any telling solution line still found in the copy
(a traceback or a printed source in some other cell's output, a hint in Markdown, metadata). A telling line is
one of at least 12 characters, other than a bare `def`/`class` header, that the master shows nowhere else in
its code and that is not in the source of `reference_impl` itself (a lesson prints our implementation; an
exercise may well re-derive some of its lines).

The build also refuses, before writing anything, a path that does not exist, a folder with no notebook, and an
`--out` it cannot write into (below a file, or in a folder that refuses new files, e.g. a read-only file
system); the command then prints the reason in one line naming the path, with no traceback.

It never overwrites a notebook a student has changed. A copy on disk is replaced only when its content still
hashes to the `content_sha256` it was written with; otherwise (edited, run and saved, not made by this
command, unreadable) the build refuses with a message naming the file, unless `--force` is given, in which
case the file is first copied to `<name>.bak-<UTC timestamp>.ipynb` beside it and the message says so.
"""

from __future__ import annotations

import argparse
import ast
import copy
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat

from reference_impl.workbook.notebooks import find_notebooks, write_atomically

__all__ = [
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "METADATA_KEY",
    "PLACEHOLDER",
    "SOLUTION_TAG",
    "BuildError",
    "MasterError",
    "StudentCopy",
    "build",
    "content_hash",
    "main",
    "make_student_copy",
    "solution_lines",
    "strip_solutions",
]

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
PLACEHOLDER = "raise NotImplementedError"
SOLUTION_TAG = "solution"
METADATA_KEY = "student_copy"
GENERATED_BY = "python -m reference_impl.workbook.student build"

# Anything that a reader would take for a marker; only the two exact lines above are markers.
_MARKER_LIKE = re.compile(r"#+\s*(BEGIN|END)\s*SOLUTION", re.IGNORECASE)
# In Markdown a marker-like line is a heading, so only a line that starts with one counts there.
_MARKER_LIKE_LINE = re.compile(r"^\s*#+\s*(BEGIN|END)\s*SOLUTION", re.IGNORECASE)
# A call of a self-check from reference_impl.workbook.checks (`check_my_conv1d(MyConv1D)`).
_CHECK_CALL = re.compile(r"(?<!def )\bcheck_\w+\s*\(")
# A bare `def name(args):` / `class Name:` line only names a helper, as hints and prose legitimately do.
_HEADER = re.compile(r"^(async\s+)?(def|class)\s+\w+.*:\s*(#.*)?$")
# A solution line shorter than this (`return out`, `x = x.T`) is too generic to call a leak when seen
# elsewhere.
MIN_TELLING_LINE = 12


class MasterError(ValueError):
    """A master notebook cannot be turned into a student copy; the message names the notebook and the cell."""


class BuildError(Exception):
    """The build was refused; `problems` lists every reason (one line or paragraph each).

    Nothing was written, unless `partial` is True: writing itself failed part-way (the checks before it
    passed).
    """

    def __init__(self, problems: Sequence[str], *, partial: bool = False) -> None:
        self.problems = list(problems)
        self.partial = partial
        super().__init__("\n".join(self.problems))


def strip_solutions(source: str) -> tuple[str, list[list[str]]]:
    """Replace each solution block of one code cell's source by `raise NotImplementedError`.

    Returns:
        The student source, and the lines of each solution block (markers excluded) in order.

    Raises:
        ValueError: a marker without its pair, nested markers, a marker-like line that is not exactly a
            marker, or a block at the top level of the cell; the message gives the 1-based line number in the
            cell.
    """
    out: list[str] = []
    blocks: list[list[str]] = []
    current: list[str] | None = None
    begin_line = 0
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            if current is not None:
                raise ValueError(
                    f"line {number}: {BEGIN_SOLUTION!r} inside the solution block opened at line "
                    f"{begin_line}; markers cannot be nested"
                )
            indent = line[: len(line) - len(line.lstrip())]
            if not indent:
                raise ValueError(
                    f"line {number}: {BEGIN_SOLUTION!r} at the top level of the cell; the student copy would "
                    "raise NotImplementedError as soon as the cell runs, before a self-check can name the "
                    "exercise. Put the solution inside the body of the function or method the student writes"
                )
            current, begin_line = [], number
            out.append(f"{indent}{PLACEHOLDER}")
        elif stripped == END_SOLUTION:
            if current is None:
                raise ValueError(f"line {number}: {END_SOLUTION!r} without a {BEGIN_SOLUTION!r} before it")
            blocks.append(current)
            current = None
        elif _MARKER_LIKE.search(line):
            raise ValueError(
                f"line {number}: {stripped!r} looks like a solution marker but is not exactly "
                f"{BEGIN_SOLUTION!r} or {END_SOLUTION!r} on a line of its own; it would leak the solution"
            )
        elif current is not None:
            current.append(line)
        else:
            out.append(line)
    if current is not None:
        raise ValueError(f"line {begin_line}: {BEGIN_SOLUTION!r} is never closed by {END_SOLUTION!r}")
    return "\n".join(out), blocks


def solution_lines(master: nbformat.NotebookNode) -> list[str]:
    """The telling lines of a master's solutions: stripped, at least `MIN_TELLING_LINE` characters long.

    Solution blocks and cells tagged `solution` count. A bare `def`/`class` header line is not telling (a hint
    may name the helper to write). A line also found in the master's code outside every
    solution (the lesson's own demonstration code, a shape comment) or in the source of `reference_impl`
    (which a lesson shows with `inspect.getsource`, and which every student has installed) is public, so it is
    left out.
    """
    hidden: list[str] = []
    shown_code: list[str] = []
    for cell in master.cells:
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            hidden.extend(cell.source.split("\n"))
        elif cell.cell_type == "code":
            try:
                student_source, blocks = strip_solutions(cell.source)
            except ValueError:
                continue  # make_student_copy reports it, naming the cell
            shown_code.append(student_source)
            hidden.extend(line for block in blocks for line in block)
    shown = "\n".join(shown_code)
    public = _package_source()
    telling = {line.strip() for line in hidden}
    return sorted(
        t
        for t in telling
        if len(t) >= MIN_TELLING_LINE and not _HEADER.match(t) and t not in shown and t not in public
    )


@functools.cache
def _package_source() -> str:
    """The text of every module of reference_impl: public (students have the package), so never a secret."""
    root = Path(__file__).resolve().parents[1]  # reference_impl/, components and workbook
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py")))


def content_hash(nb: nbformat.NotebookNode) -> str:
    """SHA-256 of what a student can change: each cell's type, source, outputs and attachments (not metadata).

    Metadata is left out because JupyterLab rewrites some of it on every save; outputs are in, because running
    a notebook and saving it is also work we must not throw away.
    """
    content = [
        {
            "cell_type": cell.cell_type,
            "source": cell.source,
            "outputs": cell.get("outputs", []),
            "attachments": cell.get("attachments", {}),
        }
        for cell in nb.cells
    ]
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StudentCopy:
    """A student notebook made from a master, and what was taken out of it."""

    notebook: nbformat.NotebookNode
    exercise_cells: tuple[int, ...]  # indices, in the student copy, of the cells that had a solution block
    check_cells: tuple[
        int, ...
    ]  # index of each exercise's verdict: the first cell from it that calls a check
    removed_cells: int  # cells tagged `solution`


def _describe(name: str, index: int, cell: nbformat.NotebookNode) -> str:
    """`lessons/x.ipynb, cell 7 (id 'ab12', "def my_conv1d(...")`: enough to find the cell in JupyterLab."""
    first = next((line.strip() for line in cell.source.split("\n") if line.strip()), "")
    if len(first) > 40:
        first = first[:37] + "..."
    cell_id = cell.get("id")
    ident = f"id {cell_id!r}, " if cell_id else ""
    return f"{name}, cell {index + 1} ({ident}{cell.cell_type} starting {first!r})"


def _is_valid_python(source: str) -> bool:
    """True when the cell parses as IPython does it (magics allowed)."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError:
        return False
    return True


def _markdown_marker(source: str) -> str | None:
    """The first marker-like line of a Markdown cell outside fenced code (```), or None."""
    fenced = False
    for line in source.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and _MARKER_LIKE_LINE.match(line):
            return line
    return None


def _strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string in a notebook (keys and values of sources, outputs, metadata, attachments), with its
    place."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield f"{where}.{key}", str(key)
            yield from _strings(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")


def make_student_copy(master: nbformat.NotebookNode, *, name: str) -> StudentCopy:
    """Make the student copy of one master notebook (the master is not modified).

    Args:
        master: the master notebook, as read by `nbformat.read(path, as_version=4)`.
        name: how to name the master in messages and in the copy's metadata (its file name or path).

    Raises:
        MasterError: the master breaks a rule (see the module docstring); the message names notebook and cell.
    """
    if METADATA_KEY in master.metadata:
        raise MasterError(
            f"{name} is itself a student copy (its metadata has {METADATA_KEY!r}); build from the masters in "
            "lessons/"
        )
    nb = copy.deepcopy(master)
    kept: list[nbformat.NotebookNode] = []
    exercises: list[int] = []
    removed = 0
    for index, cell in enumerate(master.cells):
        where = _describe(name, index, cell)
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            removed += 1
            continue
        new = copy.deepcopy(cell)
        if cell.cell_type == "code":
            try:
                new.source, blocks = strip_solutions(cell.source)
            except ValueError as e:
                raise MasterError(f"{where}: {e}") from None
            if blocks:
                if not _is_valid_python(new.source):
                    raise MasterError(
                        f"{where}: with its solution replaced by {PLACEHOLDER!r} the cell is no longer valid "
                        "Python; put the markers around whole statements"
                    )
                exercises.append(len(kept))
        else:
            marker = _markdown_marker(cell.source)
            if marker is not None:
                raise MasterError(
                    f"{where}: {marker.strip()!r}: solution markers only work in code cells; "
                    f"tag a cell {SOLUTION_TAG!r} to leave it out of the student copy"
                )
        kept.append(new)
    nb.cells = kept

    calls = [i for i, c in enumerate(kept) if c.cell_type == "code" and _CHECK_CALL.search(c.source)]
    checks: list[int] = []
    for position, exercise in enumerate(exercises):
        following = exercises[position + 1] if position + 1 < len(exercises) else len(kept)
        verdict = next((c for c in calls if exercise <= c < following), None)
        if verdict is None:
            raise MasterError(
                f"{_describe(name, exercise, kept[exercise])}: this exercise calls no self-check "
                "(`check_...(`) in its own cell or before the next exercise; a student would get no verdict"
            )
        checks.append(verdict)
    for i in (*exercises, *checks):
        kept[i].outputs = []
        kept[i].execution_count = None

    telling = solution_lines(master)
    for where, text in _strings(nb, "notebook"):
        leaked = next((line for line in telling if line in text), None)
        if leaked is not None:
            raise MasterError(
                f"{name}: solution line {leaked!r} would still be in the student copy at {where}; "
                "remove it from that output, hint or metadata (or tag the cell that shows it "
                f"{SOLUTION_TAG!r})"
            )

    nb.metadata[METADATA_KEY] = {
        "master": Path(name).name,
        "generated_by": GENERATED_BY,
        "content_sha256": content_hash(nb),
    }
    nbformat.validate(nb)
    return StudentCopy(
        notebook=nb, exercise_cells=tuple(exercises), check_cells=tuple(checks), removed_cells=removed
    )


def _changed_on_disk(dest: Path) -> str | None:
    """Why the notebook at `dest` may hold a student's work (None if it is exactly what a build wrote)."""
    try:
        on_disk = nbformat.read(dest, as_version=4)
    except Exception as e:  # any unreadable file is someone's, not ours
        return f"it cannot be read as a notebook ({type(e).__name__})"
    recorded = on_disk.metadata.get(METADATA_KEY, {}).get("content_sha256")
    if recorded is None:
        return f"it was not made by `{GENERATED_BY}` (no {METADATA_KEY}.content_sha256 in its metadata)"
    if content_hash(on_disk) != recorded:
        return "its cells (sources or outputs) changed since it was generated"
    return None


def _backup_path(dest: Path) -> Path:
    """`name.bak-20250101T120000Z.ipynb` beside `dest` (a counter is added if that name is taken)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = dest.with_name(f"{dest.stem}.bak-{stamp}{dest.suffix}")
    counter = 1
    while candidate.exists():
        candidate = dest.with_name(f"{dest.stem}.bak-{stamp}-{counter}{dest.suffix}")
        counter += 1
    return candidate


def _same_text(dest: Path, nb: nbformat.NotebookNode) -> bool:
    """True when `dest` already holds exactly the JSON `nbformat.write` would write for `nb`."""
    return dest.read_text(encoding="utf-8").rstrip("\n") == nbformat.writes(nb).rstrip("\n")


def build(
    paths: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str], *, force: bool = False
) -> list[str]:
    """Write the student copy of every master notebook in `paths` (files or folders) into the folder `out`.

    Everything is checked before anything is written: if one master is broken or one copy on disk was changed
    (and `force` is False), `BuildError` lists every problem and no file is touched.

    Returns:
        One line per notebook saying what was done (written, up to date, backed up and replaced).

    Raises:
        BuildError: the reasons, each naming its file (and cell).
    """
    out_dir = Path(out)
    try:
        masters = find_notebooks(paths)
    except (ValueError, FileNotFoundError) as e:
        raise BuildError([str(e)]) from None
    if not masters:
        raise BuildError([f"no notebooks found in {[str(p) for p in paths]}"])
    if out_dir.exists() and not out_dir.is_dir():
        raise BuildError([f"out={str(out_dir)!r} is not a folder"])
    unwritable = _cannot_write_into(out_dir)
    if unwritable is not None:
        raise BuildError([unwritable])

    problems: list[str] = []
    plans: list[tuple[Path, Path, StudentCopy, str | None]] = []
    seen: dict[Path, Path] = {}
    for master_path in masters:
        dest = out_dir / master_path.name
        if dest.resolve() == master_path.resolve() or out_dir.resolve() == master_path.parent.resolve():
            problems.append(
                f"{master_path}: out={str(out_dir)!r} is the masters' own folder; student copies go elsewhere"
            )
            continue
        if dest in seen:
            problems.append(f"{master_path} and {seen[dest]} would both be written to {dest}")
            continue
        seen[dest] = master_path
        try:
            made = make_student_copy(nbformat.read(master_path, as_version=4), name=str(master_path))
        except MasterError as e:
            problems.append(str(e))
            continue
        except Exception as e:  # a master that is not valid JSON, not a notebook, or invalid once copied
            problems.append(f"{master_path}: cannot be read or copied as a notebook: {type(e).__name__}: {e}")
            continue
        changed = None
        if dest.is_dir():
            problems.append(f"{dest} is a folder; cannot write the student copy of {master_path} there")
            continue
        if dest.exists():
            changed = _changed_on_disk(dest)
            if changed is not None and not force:
                problems.append(
                    f"{dest}: refusing to overwrite: {changed}. It may hold a student's work. "
                    "Move it away, or rerun with --force to replace it (a backup is kept beside it)."
                )
                continue
        plans.append((master_path, dest, made, changed))
    if problems:
        raise BuildError(problems)

    try:
        return _write_plans(out_dir, plans)
    except OSError as e:  # a failure the probe could not foresee (disk full, a folder changed meanwhile)
        raise BuildError(
            [f"out={str(out_dir)!r}: writing failed at {e.filename or out_dir}: {e.strerror or e}"],
            partial=True,
        ) from None


def _cannot_write_into(out_dir: Path) -> str | None:
    """Why the copies cannot be written into `out_dir` (one line naming the path and the reason), or None.

    Checked before anything is written: the nearest existing folder at or above `out_dir` must be a folder
    (not a
    file: `--out notes.txt/student`) and must take a file. The second is tried by creating and removing a
    temporary file there, because permission bits say nothing for root, while a read-only file system (or
    /sys) still refuses.
    """
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"out={str(out_dir)!r} cannot be created: {str(existing)!r} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".student-build-probe-", dir=existing)
    except OSError as e:
        return (
            f"out={str(out_dir)!r} cannot be written: {str(existing)!r} refuses new files ({e.strerror or e})"
        )
    os.close(fd)
    os.unlink(probe)
    return None


def _write_plans(out_dir: Path, plans: list[tuple[Path, Path, StudentCopy, str | None]]) -> list[str]:
    """Write the checked copies (backing up changed ones); one line per notebook."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[str] = []
    for master_path, dest, made, changed in plans:
        summary = f"{len(made.exercise_cells)} exercise(s), {made.removed_cells} solution cell(s) removed"
        if changed is not None:
            backup = _backup_path(dest)
            shutil.copy2(dest, backup)
            write_atomically(made.notebook, dest)
            done.append(f"{dest}: {changed}; kept a backup at {backup}; wrote the new copy ({summary})")
        elif dest.exists() and _same_text(dest, made.notebook):
            done.append(f"{dest}: up to date")
        else:
            write_atomically(made.notebook, dest)
            done.append(f"{dest}: written from {master_path} ({summary})")
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reference_impl.workbook.student", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write student copies of master lessons (solutions replaced)")
    b.add_argument("paths", nargs="+", help="master .ipynb files or folders of them (e.g. lessons)")
    b.add_argument("--out", required=True, help="folder for the student copies (e.g. student)")
    b.add_argument(
        "--force",
        action="store_true",
        help="replace copies that were changed since they were generated, keeping a backup of each",
    )
    args = parser.parse_args(argv)
    try:
        lines = build(args.paths, args.out, force=args.force)
    except BuildError as e:
        done = "some copies may have been written" if e.partial else "nothing was written"
        print(f"student copies NOT built; {done}:", file=sys.stderr)
        for problem in e.problems:
            print(f"- {problem}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
