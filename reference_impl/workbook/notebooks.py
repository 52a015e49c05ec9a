"""Re-execute lesson notebooks in place, from a clean kernel, so stored outputs are always made the same way.

    python -m reference_impl.workbook.notebooks execute lessons/                 # every lesson
    python -m reference_impl.workbook.notebooks execute lessons/03_chunking_equivalence.ipynb

Each notebook runs top to bottom in a fresh kernel of *this* Python environment with its own folder as the
working directory (as JupyterLab and nbval run it). Execution counts are kept (nbval compares a cell only if
it has one); volatile metadata (timings, widget state, the Python patch version) is stripped. The file is
replaced only when every cell ran; on a failure the original is left untouched and the failing cell is
reported. Cells tagged `raises-exception` may raise, as in nbval. A notebook that cannot be read or run is
reported and the others still run; the exit status is then 1. A path that does not exist, or a folder without
notebooks, is an error (status 2) before anything runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import nbformat
from tqdm import tqdm

from reference_impl.workbook.progress import progress

__all__ = ["clean_metadata", "execute_notebook", "find_notebooks", "main", "write_atomically"]

# Cell metadata that changes from run to run and means nothing to a reader.
_VOLATILE_CELL_KEYS = ("execution", "collapsed", "scrolled", "ExecuteTime")
# Notebook metadata that changes with the machine or the run.
_VOLATILE_NB_KEYS = ("widgets", "toc", "varInspector")


def find_notebooks(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders to the `*.ipynb` inside them (not checkpoints); refuse anything that is not a notebook.

    Raises:
        FileNotFoundError: a path that does not exist (a mistyped folder too).
        ValueError: a file that is not a .ipynb; a folder with no notebook in it (nothing to do is a mistake,
            not a success).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = [p for p in sorted(path.glob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
            if not inside:
                raise ValueError(
                    f"path={str(path)!r} is a folder with no notebook in it; expected a folder of .ipynb "
                    f"files"
                )
            found.extend(inside)
        elif not path.exists():
            raise FileNotFoundError(f"path={str(path)!r} does not exist")
        elif path.suffix != ".ipynb":
            raise ValueError(
                f"path={str(path)!r} is not a notebook: expected a .ipynb file or a folder of them"
            )
        else:
            found.append(path)
    return found


def clean_metadata(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Strip volatile metadata in place (and return the notebook); keep tags, ids and execution counts."""
    for key in _VOLATILE_NB_KEYS:
        nb.metadata.pop(key, None)
    lang = nb.metadata.get("language_info")
    if lang is not None:
        lang.pop("version", None)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    for cell in nb.cells:
        for key in _VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
    return nb


def execute_notebook(path: Path, *, timeout: int = 600, kernel_name: str = "python3") -> None:
    """Run `path` from a clean kernel and rewrite it with fresh outputs; leave it untouched if a cell fails.

    Raises:
        RuntimeError: the file is not a readable notebook (not JSON, not nbformat), or a cell failed; the file
            is left unchanged either way.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # not JSON, or JSON that nbformat cannot read: report it, do not stop the others
        raise RuntimeError(
            f"{path}: not a valid notebook ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "it was left unchanged"
        ) from None
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(path.parent.resolve())}},
        record_timing=False,
        allow_errors=False,
    )
    try:
        client.execute()
    except CellExecutionError as e:
        raise RuntimeError(f"{path}: a cell failed, the notebook was left unchanged.\n{e}") from None
    clean_metadata(nb)
    write_atomically(nb, path)


def write_atomically(nb: nbformat.NotebookNode, dest: Path) -> None:
    """Write beside `dest` and rename, so a crash half-way never leaves a truncated notebook."""
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=dest.parent)
    os.close(fd)
    try:
        nbformat.write(nb, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reference_impl.workbook.notebooks", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="re-execute notebooks in place from a clean kernel")
    ex.add_argument("paths", nargs="+", help=".ipynb files or folders of them")
    ex.add_argument("--timeout", type=int, default=600, help="seconds a single cell may run (default 600)")
    args = parser.parse_args(argv)
    try:
        notebooks = find_notebooks(args.paths)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    failed = 0
    for path in progress(notebooks, desc="executing", unit="notebook"):
        try:
            execute_notebook(path, timeout=args.timeout)
            # tqdm.write prints above the bar (a plain print when there is none).
            tqdm.write(f"executed {path}", file=sys.stdout)
        except RuntimeError as e:
            failed += 1
            tqdm.write(str(e), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
