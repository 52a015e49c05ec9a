"""Train the tiny GPT-2 of lesson 05 on the offset-pair task and write the checkpoint the package ships.

    python scripts/train_tiny_pruning_model.py
    # writes reference_impl/workbook/data/pruning_tiny_gpt2.{pt,json}

The task and the model are defined in reference_impl/workbook/pruning_experiment.py; this script only trains,
checks the accuracy, and records how the weights were made. One CPU thread, seeded: about 10-30 s depending on
the load.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from reference_impl.workbook.measure import machine_info
from reference_impl.workbook.pruning_experiment import (
    CHECKPOINT,
    load_tiny_task_model,
    offset_pair_batch,
    task_accuracy,
    train_tiny_task_model,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=CHECKPOINT, help="path without suffix; .pt and .json are written"
    )
    args = parser.parse_args()

    torch.set_num_threads(1)
    start = time.perf_counter()
    model = train_tiny_task_model(steps=args.steps, seed=args.seed)
    seconds = time.perf_counter() - start
    held_out = offset_pair_batch(512, torch.Generator().manual_seed(1234))
    accuracy = task_accuracy(model, held_out)
    if accuracy < 0.99:
        raise SystemExit(f"accuracy {accuracy:.3f} < 0.99 after {args.steps} steps: not writing a checkpoint")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Plain tensors (clone breaks the wte/lm_head tie in the file; loading re-ties them): a small, portable
    # .pt.
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out.with_suffix(".pt"))
    record = {
        "made_by": "python scripts/train_tiny_pruning_model.py"
        + (f" --steps {args.steps}" if args.steps != 300 else ""),
        "task": "offset pair: y_t = 8 * x[t-1] + x[t-3], digits 0..7, T = 12 "
        "(reference_impl/workbook/pruning_experiment.py)",
        "steps": args.steps,
        "batch_size": 64,
        "seed": args.seed,
        "held_out_accuracy": round(accuracy, 4),
        "train_seconds": round(seconds, 1),
        "machine": machine_info(),
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    reloaded = task_accuracy(load_tiny_task_model(args.out), held_out)
    assert reloaded == accuracy, f"reloaded accuracy {reloaded} != {accuracy}"
    print(
        f"wrote {args.out.with_suffix('.pt')} ({args.out.with_suffix('.pt').stat().st_size // 1024} KiB): "
        f"held-out accuracy {accuracy:.3f} after {args.steps} steps in {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
