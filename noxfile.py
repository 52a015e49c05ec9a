"""The transformers matrix: the oracle tests against each proven transformers line, one nox session per line.

    .venv/bin/python -m nox              # every line, one after the other (what CI runs)
    .venv/bin/python -m nox -s latest    # one line

Each session is a fresh virtual environment (`venv_backend="venv"`, under .nox/) holding torch 2.13.0, the
project's test tools and one transformers release. torch is installed first and pinned: it is the CPU build this
machine has on disk, and an unpinned torch would pull a CUDA build of several GB. The oracle tests (marker
`oracle`, which includes the hook-count tests and the version guards) compare reference_impl with the installed
release; where the lines differ, a version guard asserts what each line does.
"""

from __future__ import annotations

import nox

# The torch every line is proven with; the same pin as the README's commands (tests/test_readme.py checks).
TORCH = "2.13.0"
# The transformers lines, by session name: the newest 4.x, the lessons' pin, the newest release.
LINES = {"tf4": "4.57.6", "pin": "5.22.2", "latest": "5.25.0"}

nox.options.sessions = list(LINES)
nox.options.error_on_missing_interpreters = True


def _oracle_tests(session: nox.Session, transformers: str) -> None:
    session.install(f"torch=={TORCH}")
    session.install("-e", ".[test]", f"transformers=={transformers}")
    session.run(
        "python", "-c", "import torch, transformers; print(torch.__version__, transformers.__version__)"
    )
    session.run("python", "-m", "pytest", "-m", "oracle", "tests", "-n", "2", *session.posargs)


@nox.session(venv_backend="venv")
def tf4(session: nox.Session) -> None:
    """transformers 4.57.6, the newest 4.x release."""
    _oracle_tests(session, LINES["tf4"])


@nox.session(venv_backend="venv")
def pin(session: nox.Session) -> None:
    """transformers 5.22.2, the release the lessons are pinned to."""
    _oracle_tests(session, LINES["pin"])


@nox.session(venv_backend="venv")
def latest(session: nox.Session) -> None:
    """transformers 5.25.0, the newest release (activation checkpointing, `cache` keyword)."""
    _oracle_tests(session, LINES["latest"])
