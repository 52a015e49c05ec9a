"""Train the capstone's tiny Llama on key-value recall, fine-tune a copy at 4x with Position Interpolation,
and write both checkpoints with a record of how they were made.

    python scripts/train_capstone_model.py

The script writes reference_impl/workbook/data/capstone_tiny_llama{,_pi4x}.{pt,json}.

The model and the task are defined in reference_impl/workbook/capstone.py and capstone_experiment.py; this
script only trains, checks the accuracy, and records. One CPU thread, seeded: about 1.5 minutes of CPU time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from reference_impl.workbook.capstone_experiment import (
    CHECKPOINT,
    FINETUNED_CHECKPOINT,
    TRAINED_LENGTH,
    evaluate,
    finetune_at_length,
    load_capstone_model,
    new_model,
    save_capstone_model,
    task_batch,
    train,
)
from reference_impl.workbook.measure import machine_info

TASK = (
    "key-value recall: 4 (key, value) pairs among random symbols, then the 4 keys again; "
    "label = the value (reference_impl/workbook/capstone_experiment.py)"
)


def record(path: Path, made_by: str, **fields: object) -> None:
    path.with_suffix(".json").write_text(
        json.dumps({"made_by": made_by, "task": TASK, **fields, "machine": machine_info()}, indent=2) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    made_by = (
        "python scripts/train_capstone_model.py"
        + (f" --steps {args.steps}" if args.steps != 1500 else "")
        + (f" --finetune-steps {args.finetune_steps}" if args.finetune_steps != 60 else "")
        + (f" --seed {args.seed}" if args.seed else "")
    )

    torch.set_num_threads(1)
    start = time.perf_counter()
    model = new_model(args.seed)
    losses = train(model, args.steps, seed=args.seed)
    seconds = time.perf_counter() - start
    held_out = task_batch(256, TRAINED_LENGTH, torch.Generator().manual_seed(4321))
    accuracy, loss = evaluate(model, held_out)
    if accuracy < 0.99:
        raise SystemExit(f"held-out accuracy {accuracy:.3f} < 0.99 after {args.steps} steps: not writing")
    CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
    file = save_capstone_model(model, CHECKPOINT)
    record(
        CHECKPOINT,
        made_by,
        trained_length=TRAINED_LENGTH,
        steps=args.steps,
        batch_size=32,
        optimizer="AdamW lr 3e-3, betas (0.9, 0.98), weight decay 0.01, 50 warm-up steps, "
        "cosine decay, clip 1.0",
        seed=args.seed,
        final_train_loss=round(losses[-1], 4),
        held_out_accuracy=round(accuracy, 4),
        held_out_loss=round(loss, 4),
        held_out="256 sequences of length 32, generator seed 4321",
        train_seconds=round(seconds, 1),
    )
    reloaded = evaluate(load_capstone_model(CHECKPOINT), held_out)
    assert reloaded == (accuracy, loss), f"reloaded {reloaded} != {(accuracy, loss)}"
    print(
        f"wrote {file.name} ({file.stat().st_size // 1024} KiB): accuracy {accuracy:.3f} in {seconds:.0f} s"
    )

    factor = 4
    start = time.perf_counter()
    tuned = finetune_at_length(model, "linear", factor, args.finetune_steps, seed=args.seed + 1)
    seconds = time.perf_counter() - start
    long_batch = task_batch(64, factor * TRAINED_LENGTH, torch.Generator().manual_seed(4321))
    before = evaluate(finetune_at_length(model, "linear", factor, 0), long_batch)
    after = evaluate(tuned, long_batch)
    file = save_capstone_model(tuned, FINETUNED_CHECKPOINT)
    record(
        FINETUNED_CHECKPOINT,
        made_by,
        starts_from=CHECKPOINT.with_suffix(".pt").name,
        rope="linear (Position Interpolation), factor 4",
        finetune_length=factor * TRAINED_LENGTH,
        steps=args.finetune_steps,
        batch_size=16,
        optimizer="AdamW lr 1e-3, betas (0.9, 0.98), weight decay 0.01, 10 warm-up steps, "
        "cosine decay, clip 1.0",
        seed=args.seed + 1,
        accuracy_at_4x_before=round(before[0], 4),
        accuracy_at_4x_after=round(after[0], 4),
        held_out="64 sequences of length 128, generator seed 4321",
        train_seconds=round(seconds, 1),
    )
    print(
        f"wrote {file.name}: accuracy at 4x with linear scaling {before[0]:.3f} -> {after[0]:.3f} "
        f"after {args.finetune_steps} steps in {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
