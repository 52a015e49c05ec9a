"""Fixtures for the browser suite: a JupyterLab server on a copy of the lessons, and headless Chromium.

The server is started through the workbook's own launcher (`python -m reference_impl.workbook.lab`), on
127.0.0.1, a free port and a random token, with Jupyter's config, data and runtime folders in a temporary
directory (so neither the user's settings nor an earlier run can change what we see). It always serves a
*copy* of the lessons with their outputs stripped, so every output on the page comes from this run and the
committed notebooks are never touched.

Environment variables (all optional):
    BROWSER_LESSONS_DIR        folder of notebooks to test instead of lessons/ (used to prove the suite bites)
    BROWSER_CHROMIUM           the Chromium executable (default /usr/bin/chromium, Debian's package)
    BROWSER_LESSON_TIMEOUT_S   seconds one lesson may take to run all its cells (default 300)
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
LESSONS_DIR = Path(os.environ.get("BROWSER_LESSONS_DIR", REPO / "lessons")).resolve()
SCREENSHOTS_DIR = REPO / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("BROWSER_CHROMIUM", "/usr/bin/chromium")
SERVER_START_TIMEOUT_S = 120.0
# Headless Chromium as root in a container, with nothing phoning home.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# JupyterLab settings for the test server only: no "official Jupyter news?" toast over the screenshots.
LAB_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def lesson_notebooks() -> list[Path]:
    """The notebooks the suite runs: every `*.ipynb` directly in LESSONS_DIR, in teaching order."""
    return sorted(LESSONS_DIR.glob("*.ipynb"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "notebook" in metafunc.fixturenames:
        notebooks = lesson_notebooks()
        metafunc.parametrize("notebook", notebooks, ids=[p.name for p in notebooks])


@pytest.fixture(scope="session")
def lessons_dir() -> Path:
    """The folder whose notebooks the suite runs (lessons/, or BROWSER_LESSONS_DIR)."""
    return LESSONS_DIR


@dataclass
class LabServer:
    """A running JupyterLab: where it listens, its token, the folder it serves and its log file."""

    url: str
    token: str
    root_dir: Path
    log: Path

    def page_url(self, notebook_name: str) -> str:
        """The notebook in a workspace of its own, so no tab of an earlier lesson is reopened beside it."""
        workspace = Path(notebook_name).stem
        return f"{self.url}/lab/workspaces/{workspace}/tree/{notebook_name}?token={self.token}"

    def api(self, method: str, path: str) -> Any:
        """Call the Jupyter server's REST API (e.g. `api("GET", "sessions")`); returns the decoded JSON or
        None."""
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, n_chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n_chars:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_without_outputs(source: Path, target: Path) -> None:
    """Copy the lessons folder, clearing every output and execution count of the notebooks in the copy."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for path in target.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, path)


def _write_lab_settings(config_dir: Path) -> None:
    for relative, settings in LAB_USER_SETTINGS.items():
        path = config_dir / "lab" / "user-settings" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))


def _wait_until_serving(server: LabServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with status {process.returncode} before serving; its "
                f"log:\n{server.log_tail()}"
            )
        try:
            server.api("GET", "status")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(
        f"JupyterLab did not answer within {SERVER_START_TIMEOUT_S:.0f} s; its log:\n{server.log_tail()}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server then shuts its kernels down), and SIGKILL to its process group if it hangs."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """JupyterLab serving a stripped copy of LESSONS_DIR, started with `python -m
    reference_impl.workbook.lab`."""
    if not LESSONS_DIR.is_dir():
        pytest.fail(f"BROWSER_LESSONS_DIR={str(LESSONS_DIR)!r} is not a folder")
    base = tmp_path_factory.mktemp("jupyterlab")
    root_dir = base / "lessons"
    _copy_without_outputs(LESSONS_DIR, root_dir)
    _write_lab_settings(base / "config")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
    )
    command = [
        sys.executable,
        "-m",
        "reference_impl.workbook.lab",
        f"--lessons-dir={root_dir}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--ServerApp.open_browser=False",
    ]
    server = LabServer(
        url=f"http://127.0.0.1:{port}", token=token, root_dir=root_dir, log=base / "server.log"
    )
    with server.log.open("wb") as log:
        # Own process group, so a server that ignores SIGTERM can be killed with everything it started.
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            _wait_until_serving(server, process)
            yield server
        finally:
            _stop(process)


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright, with a fresh profile (no browser is downloaded)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the browser suite needs Playwright: pip install playwright (see tests/browser/README.md)"
        )
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"BROWSER_CHROMIUM={CHROMIUM!r} does not exist: apt-get install chromium (see "
            "tests/browser/README.md)"
        )
    playwright = sync_playwright().start()
    try:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Any, lab_server: LabServer) -> Iterator[Any]:
    """A fresh tab; afterwards the tab is closed and every kernel it started is shut down."""
    tab = browser.new_page()
    tab.set_default_timeout(60_000)
    try:
        yield tab
    finally:
        tab.close()
        for session in lab_server.api("GET", "sessions"):
            lab_server.api("DELETE", f"sessions/{session['id']}")


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS_DIR


def pytest_terminal_summary(terminalreporter: Any) -> None:
    ran_browser_tests = any(
        isinstance(report, pytest.TestReport) and report.when == "call" and "browser" in report.keywords
        for reports in terminalreporter.stats.values()
        for report in reports
    )
    if ran_browser_tests:
        terminalreporter.write_sep("-", "browser suite")
        terminalreporter.write_line(f"screenshots of each lesson after running: {SCREENSHOTS_DIR}")
