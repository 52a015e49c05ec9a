"""The environment check a student runs first (lessons/00_start_here.ipynb): what is missing, in plain words.

    python -m reference_impl.workbook.envcheck

Each requirement is checked without ever letting a traceback reach the student: a missing or too-old package
is reported with the exact command that fixes it. The exit status is 0 when everything needed is there.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from packaging.version import InvalidVersion, Version

__all__ = ["REQUIREMENTS", "Finding", "Requirement", "check_environment", "main", "report"]

# The transformers release the lessons and oracle tests are proven against (see README).
PINNED_TRANSFORMERS = "5.22.2"
# The torch build the README installs (CPU); any torch >= MIN works.
PINNED_TORCH = "2.13.0"


@dataclass(frozen=True)
class Requirement:
    """A package the workbook needs: import name, lowest version, the pip command that installs it."""

    module: str
    minimum: str
    install: str
    why: str
    exact: str | None = None  # a version the lessons' figures were made with (a mismatch is a warning)


@dataclass(frozen=True)
class Finding:
    """One line of the report. `ok` False means the workbook will not work until `fix` is run."""

    name: str
    ok: bool
    message: str
    fix: str | None = None
    warning: bool = False


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("torch", "2.6", f"pip install 'torch=={PINNED_TORCH}'", "every lesson"),
    Requirement(
        "transformers",
        "4.53",
        f"pip install 'transformers=={PINNED_TRANSFORMERS}'",
        "the proofs against the real library",
        exact=PINNED_TRANSFORMERS,
    ),
    Requirement("matplotlib", "3.8", "pip install 'matplotlib>=3.8'", "the plots"),
    Requirement("ipywidgets", "8.1", "pip install 'ipywidgets>=8.1'", "the interactive panels"),
    Requirement("tqdm", "4.66", "pip install 'tqdm>=4.66'", "progress bars"),
)


def _version(version: str) -> Version | None:
    """PEP 440 version ('2.13.0+cpu', '5.0.0rc1' before '5.0'), or None when the package reports none."""
    try:
        return Version(version)
    except InvalidVersion:
        return None


def _check_one(req: Requirement, importer: Callable[[str], ModuleType]) -> Finding:
    try:
        module = importer(req.module)
    except Exception as e:  # an ImportError, or a broken install that fails while importing
        return Finding(
            req.module,
            False,
            f"{req.module} is not installed ({type(e).__name__}); needed for {req.why}",
            req.install,
        )
    version = str(getattr(module, "__version__", "0"))
    parsed = _version(version)
    if parsed is None or parsed < Version(req.minimum):
        return Finding(
            req.module,
            False,
            f"{req.module} {version} is too old: {req.minimum} or newer is needed for {req.why}",
            req.install,
        )
    if req.exact is not None and parsed != Version(req.exact):
        return Finding(
            req.module,
            True,
            f"{req.module} {version} works, but the lessons were proven against {req.exact}; some outputs "
            "may differ",
            req.install,
            warning=True,
        )
    return Finding(req.module, True, f"{req.module} {version}")


def check_environment(importer: Callable[[str], ModuleType] = importlib.import_module) -> list[Finding]:
    """Check every requirement, the Python version and the GPU; never raises.

    Args:
        importer: how modules are imported (tests pass a fake one to simulate missing or old packages).
    """
    findings = []
    py = sys.version_info
    if py < (3, 10):
        findings.append(
            Finding(
                "python",
                False,
                f"Python {py.major}.{py.minor} is too old: 3.10 or newer is needed",
                "install Python 3.10+ and create the virtual environment again (see README)",
            )
        )
    else:
        findings.append(Finding("python", True, f"Python {py.major}.{py.minor}.{py.micro}"))
    findings.extend(_check_one(req, importer) for req in REQUIREMENTS)
    try:
        torch = importer("torch")
        if torch.cuda.is_available():
            findings.append(
                Finding("gpu", True, f"GPU: {torch.cuda.get_device_name()} (GPU cells will measure live)")
            )
        else:
            findings.append(
                Finding(
                    "gpu",
                    True,
                    "no GPU: fine, every lesson runs on CPU; GPU figures are shown from recorded data",
                )
            )
    except Exception:
        pass  # torch's absence is already reported above
    return findings


def report(findings: list[Finding]) -> str:
    """The findings as lines a student reads: ✅ fine, ⚠️ works with a caveat, ❌ must be fixed (with the
    command)."""
    lines = []
    for f in findings:
        mark = "❌" if not f.ok else ("⚠️" if f.warning else "✅")
        lines.append(f"{mark} {f.message}")
        if f.fix and (not f.ok or f.warning):
            lines.append(f"   fix: {f.fix}")
    missing = sum(not f.ok for f in findings)
    lines.append(
        "Everything the workbook needs is here." if missing == 0 else f"{missing} problem(s) to fix first."
    )
    return "\n".join(lines)


def main() -> int:
    findings = check_environment()
    print(report(findings))
    return 0 if all(f.ok for f in findings) else 1


if __name__ == "__main__":
    raise SystemExit(main())
