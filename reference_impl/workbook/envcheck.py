"""The environment check a student runs first (lessons/00_start_here.ipynb): what is missing, in plain words.

    python -m reference_impl.workbook.envcheck

Each requirement is checked without ever letting a traceback reach the student: a missing or too-old package
is reported with the exact command that fixes it, and an installed package whose import fails (a torch wheel
missing its shared libraries, say) with its error, not as "not installed". The exit status is 0 when
everything needed is there.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from packaging.version import InvalidVersion, Version

__all__ = [
    "REQUIREMENTS",
    "VERSION_DIFFERENCES",
    "Finding",
    "Requirement",
    "VersionDifference",
    "check_environment",
    "differences_from_pin",
    "main",
    "report",
]

# The transformers release the lessons and oracle tests are proven against (see README).
PINNED_TRANSFORMERS = "5.22.2"
# The torch build the README installs (CPU); the package requires the 2.13 series (pyproject.toml).
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
    Requirement("torch", "2.13", f"pip install 'torch=={PINNED_TORCH}'", "every lesson"),
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


@dataclass(frozen=True)
class VersionDifference:
    """Something a range of transformers releases does differently from the lessons' pin, and the lesson it
    touches.

    It applies to a release `v` with `since <= v < before` (a bound that is None is open). Each is asserted,
    line by line, by a version-guard test (`pytest -m oracle`; see the README's compatibility table).
    """

    lesson: str
    what: str
    since: str | None = None
    before: str | None = None

    def applies_to(self, version: str) -> bool:
        v = _version(version)
        if v is None:
            return False
        return (self.since is None or v >= Version(self.since)) and (
            self.before is None or v < Version(self.before)
        )


VERSION_DIFFERENCES: tuple[VersionDifference, ...] = (
    VersionDifference(
        "01", "gradient checkpointing defaults to use_reentrant=True (5.x: False)", before="5.0"
    ),
    VersionDifference(
        "04",
        "RoPE is configured by rope_scaling and rope_theta (5.x: rope_parameters); "
        "ROPE_INIT_FUNCTIONS still has 'default'",
        before="5.0",
    ),
    VersionDifference(
        "05",
        "prune_heads, prune_conv1d_layer, find_pruneable_heads_and_indices and head_mask still exist "
        "(5.0 removed them)",
        before="5.0",
    ),
    VersionDifference(
        "06",
        "sdpa_mask takes cache_position (5.x: q_length and q_offset) and draws the empty-cache prefill mask",
        before="5.0",
    ),
    VersionDifference(
        "01",
        "GradientCheckpointingLayer checkpoints forward, not __call__: module hooks run once per step, not "
        "twice",
        since="5.23",
    ),
    VersionDifference(
        "01",
        "the entry points are activation_checkpointing_enable/_disable and is_activation_checkpointing; "
        "gradient_checkpointing_* warn (FutureWarning, removal in v6)",
        since="5.23",
    ),
    VersionDifference(
        "04", "LongRoPE switches inv_freq in place (one address for CUDA graphs)", since="5.23"
    ),
    VersionDifference(
        "01",
        "layers take the cache as cache= (past_key_values deprecated until 5.40); "
        "no checkpointing while gradients are off",
        since="5.24",
    ),
    VersionDifference(
        "06",
        "create_causal_mask and its siblings take cache= (past_key_values deprecated until 5.40)",
        since="5.24",
    ),
    VersionDifference(
        "04",
        "apply_rotary_pos_emb is a module of the kernels package (same numbers)",
        since="5.25",
    ),
)


def differences_from_pin(version: str) -> list[VersionDifference]:
    """What transformers `version` does differently from the lessons' pin, in lesson order."""
    if version == PINNED_TRANSFORMERS:
        return []
    found = [d for d in VERSION_DIFFERENCES if d.applies_to(version)]
    return sorted(found, key=lambda d: d.lesson)


def _version(version: str) -> Version | None:
    """PEP 440 version ('2.13.0+cpu', '5.0.0rc1' before '5.0'), or None when the package reports none."""
    try:
        return Version(version)
    except InvalidVersion:
        return None


def _check_one(req: Requirement, importer: Callable[[str], ModuleType]) -> Finding:
    try:
        module = importer(req.module)
    except ModuleNotFoundError as e:
        if e.name in (None, req.module):
            return Finding(
                req.module,
                False,
                f"{req.module} is not installed ({type(e).__name__}); needed for {req.why}",
                req.install,
            )
        return _import_failure(req, e)  # the package is there; something it imports is not
    except (
        Exception
    ) as e:  # a broken install: a missing shared library, a wrong wheel, a crash in its __init__
        return _import_failure(req, e)
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


def _import_failure(req: Requirement, error: Exception) -> Finding:
    """An installed package whose import fails: its error, in one line (saying "not installed" would
    mislead)."""
    first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return Finding(
        req.module,
        False,
        f"{req.module} is installed but fails to import ({type(error).__name__}: {first_line}); needed for "
        f"{req.why}",
        req.install.replace("pip install ", "pip install --force-reinstall ", 1),
    )


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
        transformers_version = str(importer("transformers").__version__)
    except Exception:
        transformers_version = PINNED_TRANSFORMERS  # its absence is already reported above
    findings.extend(
        Finding(
            f"lesson {d.lesson}",
            True,
            f"lesson {d.lesson}: transformers {transformers_version}: {d.what}",
            warning=True,
        )
        for d in differences_from_pin(transformers_version)
    )
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
