"""The student's environment check: plain words and a fix command, never a traceback."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

from reference_impl.workbook.envcheck import PINNED_TRANSFORMERS, check_environment, report


def _importer(missing: set[str] = frozenset(), versions: dict[str, str] | None = None):
    versions = versions or {}

    def fake_import(name: str) -> types.ModuleType:
        if name in missing:
            raise ImportError(f"No module named {name!r}")
        module = importlib.import_module(name)
        if name in versions:
            fake = types.ModuleType(name)
            fake.__dict__.update(vars(module))
            fake.__version__ = versions[name]
            return fake
        return module

    return fake_import


def test_everything_present_reports_no_problem() -> None:
    findings = check_environment()
    assert all(f.ok for f in findings), report(findings)
    assert report(findings).endswith("Everything the workbook needs is here.")


def test_a_missing_package_is_reported_with_the_command_that_installs_it() -> None:
    findings = check_environment(_importer(missing={"transformers"}))
    text = report(findings)
    assert "❌ transformers is not installed" in text
    assert f"fix: pip install 'transformers=={PINNED_TRANSFORMERS}'" in text
    assert text.endswith("1 problem(s) to fix first.")


def test_a_too_old_torch_is_reported_with_its_version_and_the_fix() -> None:
    text = report(check_environment(_importer(versions={"torch": "2.1.0+cu118"})))
    assert "❌ torch 2.1.0+cu118 is too old: 2.6 or newer is needed" in text
    assert "fix: pip install 'torch==2.13.0'" in text


def test_versions_are_compared_as_pep_440_versions() -> None:
    # 2.10 is newer than 2.6 (not "2.10" < "2.6" as text); a release candidate comes before its release.
    findings = check_environment(_importer(versions={"torch": "2.10.0+cpu", "transformers": "4.53.0rc1"}))
    by_name = {f.name: f for f in findings}
    assert by_name["torch"].ok, by_name["torch"].message
    assert not by_name["transformers"].ok
    assert "transformers 4.53.0rc1 is too old: 4.53 or newer is needed" in by_name["transformers"].message
    unreadable = check_environment(_importer(versions={"matplotlib": "unknown"}))
    assert not next(f for f in unreadable if f.name == "matplotlib").ok


def test_another_transformers_release_works_but_is_flagged() -> None:
    findings = check_environment(_importer(versions={"transformers": "4.57.6"}))
    tf = next(f for f in findings if f.name == "transformers")
    assert tf.ok and tf.warning and "proven against" in tf.message


def test_a_package_that_crashes_while_importing_is_a_finding_not_a_traceback() -> None:
    def broken(name: str) -> types.ModuleType:
        if name == "matplotlib":
            raise RuntimeError("broken install")
        return importlib.import_module(name)

    text = report(check_environment(broken))
    assert "❌ matplotlib is not installed (RuntimeError)" in text


def test_command_line_exits_zero_here_and_prints_the_verdict() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reference_impl.workbook.envcheck"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.strip().endswith("Everything the workbook needs is here.")
