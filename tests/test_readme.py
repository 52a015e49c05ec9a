"""The README's commands are the ones CI runs, and they say what they must."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _block(marker: str) -> str:
    # The same extraction .ci/run performs (its readme_block function), run through bash to be sure.
    script = (ROOT / ".ci" / "run").read_text()
    fn = script[
        script.index("readme_block() {") : script.index("\n}\n", script.index("readme_block() {")) + 3
    ]
    done = subprocess.run(
        ["bash", "-c", f"{fn}\nreadme_block {marker}"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.parametrize("marker", ["main-command", "test-command", "browser-command", "compat-command"])
def test_every_command_ci_runs_is_one_line_in_the_readme(marker: str) -> None:
    block = _block(marker)
    assert block, f"README.md has no ```bash block after <!-- {marker} -->"
    assert len(block.splitlines()) == 1, f"{marker} must be a single command a user can paste: {block!r}"


def test_the_two_fresh_machine_commands_install_then_open_or_test() -> None:
    main, test = _block("main-command"), _block("test-command")
    for command in (main, test):
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ")
    assert main.endswith("-m reference_impl.workbook.lab")
    assert test.endswith(".venv/bin/python -m pytest")


def test_ci_runs_the_test_browser_and_compat_blocks() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    for marker in ("test-command", "browser-command", "compat-command"):
        assert f"run_block {marker}" in script


def test_readme_has_no_unfilled_placeholders() -> None:
    text = (ROOT / "README.md").read_text()
    for placeholder in ("LESSON_ROWS", "REEXPORT_TABLE", "COMPAT_TABLE", "STUDENT_SECTION", "LESSON_TIME_"):
        assert placeholder not in text, f"README.md still has the placeholder {placeholder}"


def _noxfile():
    import importlib.util

    spec = importlib.util.spec_from_file_location("noxfile", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_matrix_command_runs_one_nox_session_per_proven_transformers_line() -> None:
    from reference_impl.workbook.envcheck import PINNED_TORCH, PINNED_TRANSFORMERS

    noxfile = _noxfile()
    assert _block("compat-command").endswith("-m nox"), "CI's matrix block must run every nox session"
    assert noxfile.LINES["pin"] == PINNED_TRANSFORMERS
    assert noxfile.TORCH == PINNED_TORCH
    assert set(noxfile.nox.options.sessions) == set(noxfile.LINES) == {"tf4", "pin", "latest"}
    readme = (ROOT / "README.md").read_text()
    for version in noxfile.LINES.values():
        assert version in readme, f"README.md does not name transformers {version}, a line CI proves"
