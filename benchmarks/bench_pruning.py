"""Parameters and CPU forward latency after pruning 25%, 50% and 75% of the heads, against the ideal.

    python benchmarks/bench_pruning.py    # writes benchmarks/results/pruning_cpu.json, prints a table

Two GPT-2 models (random weights: the arithmetic does not depend on them): the lesson's tiny task model
(2 layers, 8 heads, C = 64; batch 64 x 12 tokens) and a GPT-2-small-sized one (12 layers, 12 heads, C = 768;
batch 1 x 128 tokens, no LM head). The same fraction of heads is pruned in every layer with
`reference_impl.pruning.prune_heads`. All variants of a model are timed interleaved in one run
(`side_by_side_seconds`), so their ratios are comparable.

The ideal, per layer, with p the fraction of heads pruned:
- parameters: the attention projections lose exactly p of their head-owned weights, p·(4C² + 3C);
  MLP, embeddings and LayerNorms stay. Predicted = measured exactly (an arithmetic check).
- latency: time proportional to FLOPs. Per token and layer, the heads own 2·(3C² + C²) projection FLOPs
  and 2·2·T·C for scores and weighted values; the MLP costs 2·8C². Predicted ratio
  = 1 - p · head FLOPs / all FLOPs. Attention alone: 1 - p.
"""

from __future__ import annotations

import argparse
import copy
import json
from functools import partial
from pathlib import Path
from typing import Any

import torch

from reference_impl.pruning_heads import prune_heads
from reference_impl.workbook.measure import machine_info, side_by_side_seconds
from reference_impl.workbook.pruning_experiment import predicted_latency_ratio, predicted_parameters

FRACTIONS = (0.0, 0.25, 0.5, 0.75)
RESULTS = Path(__file__).resolve().parent / "results"


def _models() -> dict[str, dict[str, Any]]:
    from transformers import GPT2Config, GPT2Model

    from reference_impl.workbook.pruning_experiment import tiny_task_config

    return {
        "tiny (2x8 heads, C=64)": {"model": GPT2Model(tiny_task_config()), "batch": 64, "tokens": 12},
        "gpt2-small-sized (12x12 heads, C=768)": {
            "model": GPT2Model(GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=128)),
            "batch": 1,
            "tokens": 128,
        },
    }


def _forward(model: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(input_ids=x)


def _attention(model: torch.nn.Module, hidden: torch.Tensor) -> None:
    with torch.no_grad():
        model.h[0].attn(hidden)  # the first layer's attention block alone: (B, T, C) -> (B, T, C)


def measure(rounds: int) -> dict[str, Any]:
    torch.manual_seed(0)
    results: dict[str, Any] = {}
    for name, spec in _models().items():
        base = spec["model"].eval()
        config = base.config
        C, H, L, T = config.n_embd, config.n_head, config.n_layer, spec["tokens"]
        x = torch.randint(0, config.vocab_size, (spec["batch"], T))
        variants = {}
        for p in FRACTIONS:
            model = copy.deepcopy(base)
            k = round(p * H)
            if k:
                prune_heads(model, {layer: list(range(k)) for layer in range(L)})
            variants[p] = model
        total = sum(t.numel() for t in base.parameters())

        hidden = torch.randn(spec["batch"], T, C)
        fns = {f"forward {p}": partial(_forward, m, x) for p, m in variants.items()}
        fns |= {f"attention {p}": partial(_attention, m, hidden) for p, m in variants.items()}
        seconds = side_by_side_seconds(fns, rounds=rounds, warmup=2, inner=20 if C < 256 else 1, desc=name)
        rows = []
        for p, model in variants.items():
            params = sum(t.numel() for t in model.parameters())
            rows.append(
                {
                    "fraction_pruned": p,
                    "heads_per_layer": H - round(p * H),
                    "parameters": params,
                    "parameters_predicted": predicted_parameters(total, p, C, L),
                    "forward_seconds": seconds[f"forward {p}"],
                    "forward_ratio": seconds[f"forward {p}"] / seconds["forward 0.0"],
                    "forward_ratio_predicted": predicted_latency_ratio(p, C, T),
                    "attention_seconds": seconds[f"attention {p}"],
                    "attention_ratio": seconds[f"attention {p}"] / seconds["attention 0.0"],
                    "attention_ratio_predicted": 1 - p,
                }
            )
        results[name] = {
            "batch": spec["batch"],
            "tokens": T,
            "layers": L,
            "heads": H,
            "hidden": C,
            "rows": rows,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "pruning_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record = {
        "what": "parameters and CPU forward latency after pruning the same fraction of heads in every layer",
        "command": "python benchmarks/bench_pruning.py",
        "target": "parameters equal the prediction exactly; latency ratios at or above the FLOP-proportional "
        "ideal",
        "machine": machine_info(),
        "models": measure(args.rounds),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for name, result in record["models"].items():
        print(name)
        print("  pruned  heads  params (pred.)          forward ratio (ideal)  attention ratio (ideal)")
        for r in result["rows"]:
            print(
                f"  {r['fraction_pruned']:>5.0%}  {r['heads_per_layer']:>5}  {r['parameters']:>10,} "
                f"({r['parameters_predicted']:>10,})  {r['forward_ratio']:>6.2f} "
                f"({r['forward_ratio_predicted']:.2f})"
                f"          {r['attention_ratio']:>6.2f} ({r['attention_ratio_predicted']:.2f})"
            )


if __name__ == "__main__":
    main()
