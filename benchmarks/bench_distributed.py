"""Checkpointing under DDP and FSDP2 on N processes: per-rank peak, step time, hook calls and all-gathers per
step.

    # 2 gloo ranks on the CPU, tiny Llama:
    python benchmarks/bench_distributed.py
    # N GPUs (one rank per GPU):
    python benchmarks/bench_distributed.py --backend nccl --device cuda --model small --autocast-bf16 \\
        --out benchmarks/results/distributed_gpu.json

Every scenario (`SCENARIOS`) trains the same seeded tiny `LlamaForCausalLM`
(reference_impl.workbook.distributed) for three warm-up steps (DDP rebuilds its buckets once, in the second
or, with static_graph, the third), one counted step and `--rounds` timed steps, on every rank; per rank it
records
- `peak_bytes`: the exact peak of tensor bytes alive during the counted step (CPU: `FSDPPeakMemory`, which is
  `PeakMemory` that also sees FSDP2 free and re-allocate unsharded parameters; CUDA:
  `torch.cuda.max_memory_allocated` above what was allocated before the step). Parameters that exist before
  the step are not counted on the CPU; `param_bytes` is what the rank holds of them (FSDP2: its shards);
- `seconds`: the median time of the timed steps (CPU figures on 2 shared cores are noisy; read them as
  ratios);
- `hook_calls`: calls of a counting pre-forward hook registered on each decoder layer, in the counted step;
- `all_gathers`: all-gather collectives issued in the counted step (`count_all_gathers`: calls of
  `torch.distributed.all_gather_single` / `all_gather_into_tensor`, which FSDP2 issues once per `fully_shard`
  group it unshards; DDP issues none, it all-reduces gradients);
- `error`: the exception type and first line, when the step failed (DDP + reentrant + find_unused_parameters);
and `max_grad_diff`: the largest gap between the rank's (gathered) gradients and one single-process step on
the whole global batch. The GPU run is a separate issue; with --device cuda each rank uses GPU `rank % count`.
A mesh of one process (--world-size 1) issues no all-gather at all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from reference_impl.workbook.distributed import (
    DDP_SCENARIOS,
    FSDP_SCENARIOS,
    ModelSpec,
    Scenario,
    max_grad_diff,
    predicted_shard_bytes,
    reference_gradients,
    run_scenarios,
    tiny_llama,
)
from reference_impl.workbook.measure import machine_info

MODELS = {
    # C=32, T=16, 4 layers: seconds on two busy CPU cores
    "tiny": ModelSpec(),
    # a Llama-shaped model worth a GPU: C=1024, 8 layers, T=1024
    "small": ModelSpec(
        num_layers=8,
        hidden_size=1024,
        intermediate_size=2816,
        num_heads=16,
        num_kv_heads=4,
        vocab_size=32000,
        seq_len=1024,
        batch_per_rank=4,
    ),
}

SCENARIOS = [
    *(dataclasses.replace(s, name=f"FSDP2, {s.name}") for s in FSDP_SCENARIOS),
    Scenario(
        "FSDP2, sqrt segments, wraps __call__", "fsdp", checkpointing="sqrt", checkpoint_target="__call__"
    ),
    Scenario(
        "FSDP2, sqrt segments, wraps forward", "fsdp", checkpointing="sqrt", checkpoint_target="forward"
    ),
    Scenario(
        "FSDP2, checkpoint wraps __call__, reentrant",
        "fsdp",
        checkpointing="full",
        checkpoint_target="__call__",
        use_reentrant=True,
    ),
    *(dataclasses.replace(s, name=f"DDP, {s.name}") for s in DDP_SCENARIOS),
    Scenario("DDP, non-reentrant, no find_unused_parameters", "ddp", checkpointing="full"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per scenario (median)")
    parser.add_argument("--autocast-bf16", action="store_true", help="forward under bf16 autocast (CUDA)")
    parser.add_argument("--start-method", choices=["fork", "spawn"], default=None)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before the ranks are stopped")
    parser.add_argument("--out", type=Path, default=None, help="default: results/distributed_<cpu|gpu>.json")
    args = parser.parse_args()
    if args.device == "cuda" and torch.cuda.device_count() < 1:
        parser.error("--device cuda needs a CUDA GPU")
    out = (
        args.out
        or Path(__file__).parent / "results" / f"distributed_{'gpu' if args.device == 'cuda' else 'cpu'}.json"
    )
    spec = MODELS[args.model]
    scenarios = [dataclasses.replace(s, autocast_bf16=args.autocast_bf16) for s in SCENARIOS]

    torch.set_num_threads(1)  # what every rank uses; recorded by machine_info
    ranks = run_scenarios(
        scenarios,
        spec,
        world_size=args.world_size,
        backend=args.backend,
        device=args.device,
        steps=4,
        rounds=args.rounds,
        timeout_s=args.timeout,
        start_method=args.start_method,
    )
    reference_loss, expected = reference_gradients(spec, args.world_size)
    rows = []
    for i, scenario in enumerate(scenarios):
        per_rank = []
        for rank_results in ranks:
            r = rank_results[i]
            grads = r.pop("grads")
            per_rank.append({**r, "max_grad_diff": max_grad_diff(grads, expected) if grads else None})
        rows.append({"scenario": dataclasses.asdict(scenario), "per_rank": per_rank})
    model = tiny_llama(spec)
    record = {
        "machine": machine_info(),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "backend": args.backend,
        "device": args.device,
        "world_size": args.world_size,
        "rank_threads": 1,
        "model": args.model,
        "spec": dataclasses.asdict(spec),
        "autocast_bf16": args.autocast_bf16,
        "rounds": args.rounds,
        "single_process_loss": reference_loss,
        "predicted": {
            "param_bytes_unsharded": sum(p.numel() * p.element_size() for p in model.parameters()),
            "param_bytes_per_rank_fsdp": predicted_shard_bytes(model, args.world_size),
        },
        "scenarios": rows,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    for row in rows:
        r0 = row["per_rank"][0]
        what = r0["error"] or (
            f"peak {r0['peak_bytes'] / 1024:.1f} KiB, {r0['seconds'] * 1e3:.1f} ms, "
            f"hooks {r0['hook_calls']}, "
            f"all-gathers {r0['all_gathers']}, max |dgrad| {r0['max_grad_diff']:.1e}"
        )
        print(f"{row['scenario']['name']:<55} {what}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
