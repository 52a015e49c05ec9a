"""The student's environment check: plain words and a fix command, never a traceback."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

from reference_impl.workbook.envcheck import (
    PINNED_TRANSFORMERS,
    check_environment,
    differences_from_pin,
    report,
)


def _importer(missing: set[str] = frozenset(), versions: dict[str, str] | None = None):
    versions = versions or {}

    def fake_import(name: str) -> types.ModuleType:
        if name in missing:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)  # as Python says it
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
    assert "❌ torch 2.1.0+cu118 is too old: 2.13 or newer is needed" in text
    assert "fix: pip install 'torch==2.13.0'" in text


def test_versions_are_compared_as_pep_440_versions() -> None:
    # A local version label (+cpu) is still the release; a release candidate comes before its release.
    findings = check_environment(_importer(versions={"torch": "2.13.0+cpu", "transformers": "4.53.0rc1"}))
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
    assert "❌ matplotlib is installed but fails to import (RuntimeError: broken install)" in text
    assert "fix: pip install --force-reinstall 'matplotlib>=3.8'" in text


def test_a_torch_whose_import_fails_is_reported_with_its_error_not_as_missing() -> None:
    def broken_torch(name: str) -> types.ModuleType:
        if name == "torch":  # what a CUDA wheel on a machine without its libraries says
            raise OSError(
                "libcudnn.so.9: cannot open shared object file: No such file or directory\nmore detail"
            )
        return importlib.import_module(name)

    findings = check_environment(broken_torch)
    torch_finding = next(f for f in findings if f.name == "torch")
    assert not torch_finding.ok
    assert torch_finding.message == (
        "torch is installed but fails to import (OSError: libcudnn.so.9: cannot open shared object file: No "
        "such file or directory); needed for every lesson"
    )
    assert "not installed" not in report(findings)


def test_a_missing_dependency_of_an_installed_package_is_not_called_missing_package() -> None:
    def missing_dependency(name: str) -> types.ModuleType:
        if name == "transformers":
            raise ModuleNotFoundError("No module named 'tokenizers'", name="tokenizers")
        return importlib.import_module(name)

    text = report(check_environment(missing_dependency))
    assert (
        "❌ transformers is installed but fails to import (ModuleNotFoundError: No module named 'tokenizers')"
        in text
    )


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


def test_another_transformers_release_lists_its_differences_by_lesson() -> None:
    text = report(check_environment(_importer(versions={"transformers": "5.25.0"})))
    assert (
        "⚠️ lesson 01: transformers 5.25.0: GradientCheckpointingLayer checkpoints forward, not __call__"
        in text
    )
    assert "⚠️ lesson 06: transformers 5.25.0: create_causal_mask and its siblings take cache=" in text
    assert text.endswith("Everything the workbook needs is here.")
    assert "lesson 0" not in report(check_environment())  # the pin: nothing to list


@pytest.mark.parametrize(
    ("version", "lessons", "forward", "cache"),
    [
        (PINNED_TRANSFORMERS, [], False, False),
        ("4.57.6", ["01", "04", "05", "06"], False, False),
        ("5.23.0", ["01", "01", "04"], True, False),
        ("5.25.0", ["01", "01", "01", "04", "04", "06"], True, True),
    ],
)
def test_differences_from_the_pin_apply_by_release(version, lessons, forward, cache) -> None:
    found = differences_from_pin(version)
    assert [d.lesson for d in found] == lessons
    assert any("checkpoints forward" in d.what for d in found) == forward
    assert any("take the cache as cache=" in d.what for d in found) == cache
