"""The course around the components: lesson set-up and plots, measuring tools, lesson-only models, paths.

`reference_impl.workbook` imports the components (`reference_impl.*`) and is never imported by them. Its
modules:
- `lesson`: the set-up cell, `compare`, recorded results and their provenance, plots;
- `measure`: exact CPU peak memory (`PeakMemory`), bytes saved for backward (`SavedTensors`), GPU peaks,
  timings;
- `models`: lesson-only layers such as `GatedBlock`;
- `checks`: the exercises' self-checks;
- `student`, `notebooks`, `lab`, `envcheck`: command-line tools (student copies, the executor, the JupyterLab
  launcher, the environment check), each run with `python -m reference_impl.workbook.<name>`;
- `rope_plots`, `pruning_experiment`: figure code and the tiny trained task model of lessons 04 and 05;
- `distributed`: N `torch.distributed` ranks (gloo or NCCL) running DDP / FSDP2 scenarios for lesson 07;
- `paths`: where the checkout's lessons/ and benchmarks/results/ are;
- `tiny`: transformers' configs at toy sizes for tests, benchmarks and lessons (`tiny_gpt2_config`, ...);
- `progress`: tqdm bars for the loops a person waits on (only when stderr is a terminal).
"""

from __future__ import annotations

from reference_impl.workbook.lesson import (
    compare,
    load_record,
    plot_measured_vs_predicted,
    record_provenance,
    setup,
    versions,
)
from reference_impl.workbook.measure import PeakMemory, SavedTensors, tensor_bytes
from reference_impl.workbook.models import GatedBlock
from reference_impl.workbook.paths import NotACheckoutError, checkout_folder

__all__ = [
    "GatedBlock",
    "NotACheckoutError",
    "PeakMemory",
    "SavedTensors",
    "checkout_folder",
    "compare",
    "load_record",
    "plot_measured_vs_predicted",
    "record_provenance",
    "setup",
    "tensor_bytes",
    "versions",
]
