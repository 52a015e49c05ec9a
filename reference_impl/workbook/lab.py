"""Open the lessons in JupyterLab, running on this environment's Python (the workbook's main job).

    python -m reference_impl.workbook.lab                      # JupyterLab on lessons/, kernel = this Python
    python -m reference_impl.workbook.lab --port 8899          # anything else is passed on to `jupyter lab`

Not a re-implementation of transformers: this is the workbook's own launcher, tested end to end by the browser
suite in tests/browser/ (which starts JupyterLab through it).

Three things make "the lessons run as the README promises" hold on a student's machine:

- JupyterLab is this interpreter's (`python -m jupyterlab`), so the `python3` kernel it starts is this
  interpreter too: jupyter_client replaces the `python` in the stock kernelspec by the server's own Python.
- `JUPYTER_PREFER_ENV_PATH=1` makes this environment's kernelspec and lab extensions win over user-wide ones
  in ~/.local/share/jupyter (jupyter_core does so by itself inside a virtualenv, not for a --user install).
  An old user-wide `@jupyter-widgets/jupyterlab-manager` is the classic cause of "Error displaying widget".
- The widgets front end (`jupyterlab_widgets`) must sit beside `ipywidgets`; we refuse to start without it
  rather than show sliders as plain text.

`--allow-root` is added only when running as root (containers), as JupyterLab otherwise refuses to start.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from reference_impl.workbook.paths import CHECKOUT, checkout_folder

__all__ = ["LESSONS_DIR", "lab_command", "lab_environment", "main"]

#: The lessons of a checkout of the workbook (the launcher needs a checkout, not just the installed package).
LESSONS_DIR = CHECKOUT / "lessons"


def lab_command(
    lessons_dir: Path = LESSONS_DIR,
    extra_args: Sequence[str] = (),
    *,
    python: str = sys.executable,
    as_root: bool | None = None,
) -> list[str]:
    """The `jupyter lab` command line that serves `lessons_dir` with `python`'s own kernel.

    Args:
        lessons_dir: folder JupyterLab opens (its `root_dir`).
        extra_args: passed on to JupyterLab last, so they override ours (e.g. `--ServerApp.port=8899`).
        python: interpreter that runs JupyterLab and therefore the `python3` kernel.
        as_root: whether to add `--allow-root`; None asks the operating system.
    """
    if as_root is None:
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    command = [
        python,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={lessons_dir}",
        # A notebook without kernel metadata still gets this environment's kernel, never another one.
        "--MappingKernelManager.default_kernel_name=python3",
    ]
    if as_root:
        command.append("--allow-root")
    command.extend(extra_args)
    return command


def lab_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: os.environ) with this environment's Jupyter paths put before the user's."""
    env = dict(os.environ if base is None else base)
    env["JUPYTER_PREFER_ENV_PATH"] = "1"
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reference_impl.workbook.lab",
        description=__doc__.splitlines()[0],
        epilog="Any other argument is passed on to JupyterLab (see `python -m jupyterlab --help-all`).",
        # Never read a JupyterLab option such as --lab as an abbreviation of ours.
        allow_abbrev=False,
    )
    parser.add_argument(
        "--lessons-dir",
        type=Path,
        default=None,
        help=f"folder of notebooks to open (default: {LESSONS_DIR}, the checkout's lessons)",
    )
    args, extra = parser.parse_known_args(argv)
    if args.lessons_dir is None:
        try:
            args.lessons_dir = checkout_folder("lessons")
        except FileNotFoundError as error:
            parser.error(str(error))
    if not args.lessons_dir.is_dir():
        parser.error(
            f"lessons_dir={str(args.lessons_dir)!r} is not a folder: run this from a checkout of the workbook"
        )
    for module, package in (
        ("jupyterlab", "jupyterlab"),
        ("ipywidgets", "ipywidgets"),
        ("jupyterlab_widgets", "ipywidgets"),
    ):
        if importlib.util.find_spec(module) is None:
            parser.error(f"{module} is not installed in {sys.executable}: pip install {package}")
    command = lab_command(args.lessons_dir.resolve(), extra)
    env = lab_environment()
    if os.name == "posix":
        # Become JupyterLab, so Ctrl-C and the exit status are its own.
        os.execve(command[0], command, env)
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
