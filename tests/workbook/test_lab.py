"""The JupyterLab launcher's command line and environment (no server, no browser: see tests/browser/)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from jupyter_core.paths import jupyter_path

import reference_impl.workbook.lab as lab
from reference_impl.workbook.lab import LESSONS_DIR, lab_command, lab_environment, main

REPO = Path(__file__).resolve().parents[2]


def test_command_is_this_pythons_jupyterlab_on_the_lessons_folder() -> None:
    command = lab_command(as_root=False)
    assert command[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={REPO / 'lessons'}" in command
    assert LESSONS_DIR == REPO / "lessons"
    assert "--MappingKernelManager.default_kernel_name=python3" in command


def test_allow_root_is_added_only_when_running_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "--allow-root" in lab_command(as_root=True)
    assert "--allow-root" not in lab_command(as_root=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    assert "--allow-root" in lab_command()
    monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
    assert "--allow-root" not in lab_command()


def test_extra_arguments_come_last_so_they_override_ours() -> None:
    extra = ["--ServerApp.port=8899", "--ServerApp.root_dir=/elsewhere"]
    command = lab_command(Path("/lessons"), extra, as_root=False)
    assert command[-2:] == extra
    assert command.index("--ServerApp.root_dir=/lessons") < command.index("--ServerApp.root_dir=/elsewhere")


def test_environment_puts_this_environments_jupyter_paths_first_and_keeps_the_rest() -> None:
    base = {"PATH": "/bin", "JUPYTER_PREFER_ENV_PATH": "0"}
    env = lab_environment(base)
    assert env == {"PATH": "/bin", "JUPYTER_PREFER_ENV_PATH": "1"}
    assert base["JUPYTER_PREFER_ENV_PATH"] == "0", "the caller's mapping must not be changed"


def _decoy_user_kernel(data_dir: Path) -> None:
    """A user-wide `python3` kernelspec pointing at another interpreter, as an old `ipykernel install --user`
    leaves."""
    spec = data_dir / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = ["/opt/other-python/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "decoy", "language": "python"})
    )


def test_the_python3_kernel_is_this_interpreter_even_beside_a_user_wide_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _decoy_user_kernel(tmp_path)
    # Where jupyter_core does not prefer the environment by itself (a --user or system install) ...
    outside_venv = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path), "JUPYTER_PREFER_ENV_PATH": "0"}
    monkeypatch.setattr(os, "environ", outside_venv)
    decoy = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager())
    assert decoy.format_kernel_cmd()[0] == "/opt/other-python/bin/python", (
        "the decoy should win without the fix"
    )
    # ... the launcher's environment still gives JupyterLab the kernel of the Python it runs on.
    monkeypatch.setattr(os, "environ", lab_environment(outside_venv))
    ours = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager())
    assert ours.format_kernel_cmd()[0] == sys.executable


def _widget_manager_extensions() -> list[Path]:
    """Every @jupyter-widgets/jupyterlab-manager lab extension, in the order JupyterLab looks (first one
    wins)."""
    candidates = [Path(d) / "@jupyter-widgets" / "jupyterlab-manager" for d in jupyter_path("labextensions")]
    return [c for c in candidates if (c / "package.json").is_file()]


def test_the_widgets_front_end_is_this_environments_even_beside_a_user_wide_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An old user-wide copy of the widgets front end: the classic cause of "Error displaying widget".
    decoy = tmp_path / "labextensions" / "@jupyter-widgets" / "jupyterlab-manager"
    decoy.mkdir(parents=True)
    (decoy / "package.json").write_text(
        json.dumps({"name": "@jupyter-widgets/jupyterlab-manager", "version": "3.0.0"})
    )
    outside_venv = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path), "JUPYTER_PREFER_ENV_PATH": "0"}
    monkeypatch.setattr(os, "environ", outside_venv)
    assert _widget_manager_extensions()[0] == decoy, "the decoy should win without the fix"

    monkeypatch.setattr(os, "environ", lab_environment(outside_venv))
    ours = _widget_manager_extensions()[0]
    assert ours.is_relative_to(Path(sys.prefix)), f"JupyterLab would load the widgets front end from {ours}"


def test_main_becomes_jupyterlab_with_our_command_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        calls.append((path, argv, env))
        raise SystemExit(0)

    monkeypatch.setattr(lab.os, "execve", fake_execve)
    monkeypatch.setattr(lab.os, "name", "posix")
    with pytest.raises(SystemExit):
        main(["--lessons-dir", str(tmp_path), "--ServerApp.port=8899"])
    [(path, argv, env)] = calls
    assert path == sys.executable
    assert argv == lab_command(tmp_path.resolve(), ["--ServerApp.port=8899"])
    assert env["JUPYTER_PREFER_ENV_PATH"] == "1"


def test_main_refuses_a_lessons_folder_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-lessons-here"
    with pytest.raises(SystemExit) as exit_info:
        main(["--lessons-dir", str(missing)])
    assert exit_info.value.code == 2
    assert f"lessons_dir={str(missing)!r} is not a folder" in capsys.readouterr().err


def test_help_says_other_arguments_go_to_jupyterlab(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "passed on to JupyterLab" in capsys.readouterr().out
