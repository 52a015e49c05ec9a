"""The one-call set-up every lesson starts with, and the few helpers every lesson shares.

Not a re-implementation of transformers: this is the workbook's own furniture. Every lesson's second cell is
`from reference_impl.workbook.lesson import setup; setup()`. Measuring tools live in
`reference_impl.workbook.measure`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from typing import Any

import torch

from reference_impl.workbook.paths import CHECKOUT, checkout_folder

__all__ = [
    "compare",
    "load_record",
    "plot_measured_vs_predicted",
    "record_provenance",
    "setup",
    "versions",
]

#: Where recorded benchmark figures (JSON with provenance) live in a checkout of the workbook.
RESULTS_DIR = CHECKOUT / "benchmarks" / "results"


def versions() -> dict[str, str | None]:
    """Versions of the libraries a lesson's figures depend on (None for one that is not installed)."""
    import platform

    import reference_impl

    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "reference_impl": reference_impl.__version__,
    }
    try:
        import transformers

        found["transformers"] = transformers.__version__
    except ImportError:
        found["transformers"] = None
    return found


def setup(seed: int = 0, threads: int = 2, quiet: bool = False) -> dict[str, str | None]:
    """Make a lesson deterministic and print what it runs on.

    Seeds Python's, NumPy's and torch's generators, fixes torch's thread count (results of reductions can
    depend on it), turns on deterministic algorithms where torch has them (warning, not failing, where it has
    none), sets print options to 4 decimals without scientific notation, makes matplotlib figures a fixed
    size, and prints a one-line version banner (the cell that calls this is ignored by nbval).

    Returns:
        The versions dict that was printed.
    """
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # cuBLAS needs this for deterministic matmuls; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=110)
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.figsize": (7.0, 3.6), "figure.dpi": 90, "axes.grid": True})
    except ImportError:
        pass
    # Errors shown on purpose read as one line (type and message), not a traceback through library internals.
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            shell.run_line_magic("xmode", "Minimal")
    except ImportError:
        pass
    found = versions()
    if not quiet:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
        banner = ", ".join(f"{k} {v}" for k, v in found.items())
        print(f"{banner}; threads {threads}; GPU {gpu}; seed {seed}")
    return found


def compare(
    ours: torch.Tensor,
    theirs: torch.Tensor,
    *,
    atol: float = 0.0,
    rtol: float = 0.0,
    name: str = "ours vs theirs",
) -> float:
    """Print a one-line verdict on two tensors and assert they agree within `atol` + `rtol`·|theirs|.

    With the default tolerances of zero the check is bitwise. Shapes and dtypes must match exactly. The line
    printed is rounded, so it is the same on every machine where the check passes.

    Returns:
        The maximum absolute difference, as a Python float.
    """
    if ours.shape != theirs.shape:
        raise AssertionError(f"{name}: shapes differ: ours {tuple(ours.shape)}, theirs {tuple(theirs.shape)}")
    if ours.dtype != theirs.dtype:
        raise AssertionError(f"{name}: dtypes differ: ours {ours.dtype}, theirs {theirs.dtype}")
    diff = (ours.detach().double() - theirs.detach().double()).abs()
    max_diff = float(diff.max()) if diff.numel() else 0.0
    bitwise = torch.equal(ours, theirs)
    torch.testing.assert_close(ours, theirs, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
    if bitwise:
        print(f"{name}: bitwise equal, shape {tuple(ours.shape)}, {ours.dtype}")
    else:
        print(f"{name}: max |diff| < {_ceil_1sig(max_diff):.0e} (within atol={atol:g}, rtol={rtol:g})")
    return max_diff


def _ceil_1sig(x: float) -> float:
    """The next power of ten above x, so a printed bound does not jitter between machines."""
    import math

    if x <= 0:
        return 0.0
    return 10.0 ** math.ceil(math.log10(x) + 1e-12)


def load_record(name: str) -> dict[str, Any]:
    """Load a recorded benchmark result, e.g. `load_record("checkpointing_gpu")`.

    Records are JSON files in `benchmarks/results/` written by the scripts in `benchmarks/`; each holds a
    `machine` block saying where and with what it was measured. Raises FileNotFoundError naming the file and
    the records that do exist.
    """
    if RESULTS_DIR.parents[1] == CHECKOUT:  # not redirected (tests point RESULTS_DIR elsewhere)
        checkout_folder("benchmarks", "results")
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        have = sorted(p.stem for p in RESULTS_DIR.glob("*.json"))
        raise FileNotFoundError(f"no recorded result {name!r} at {path}; recorded: {have}")
    return json.loads(path.read_text())


def record_provenance(record: dict[str, Any]) -> str:
    """One line saying what a recorded result was measured on (GPU or CPU, versions, date)."""
    m = record.get("machine", {})
    device = m.get("gpu") or m.get("processor", "unknown CPU")
    return (
        f"measured on {device}, torch {m.get('torch')}, transformers {m.get('transformers')}, "
        f"{m.get('date_utc', 'unknown date')[:10]}"
    )


def plot_measured_vs_predicted(
    x: Sequence[float],
    measured: Sequence[float],
    predicted: Sequence[float] | None = None,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    ax: Any = None,
) -> Any:
    """Measurements as dots, the theory's prediction as a line, on one axis. Returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    if predicted is not None:
        ax.plot(x, predicted, "-", color="tab:gray", label="predicted")
    ax.plot(x, measured, "o", color="tab:blue", label="measured")
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return ax
