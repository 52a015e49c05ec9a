"""Forward+backward time of our Conv1D, transformers' Conv1D and nn.Linear on GPT-2 projection sizes.

    python benchmarks/bench_conv1d.py                      # writes benchmarks/results/conv1d_cpu.json
    python benchmarks/bench_conv1d.py --tokens 128 --rounds 5 --out /tmp/conv1d.json

For every projection of GPT-2 small (C=768) and medium (C=1024) -- c_attn (C -> 3C), attn c_proj (C -> C),
mlp c_fc (C -> 4C), mlp c_proj (4C -> C) -- the same weights are timed as
- `ours`: reference_impl.Conv1D (addmm on the (nx, nf) weight),
- `transformers`: transformers.pytorch_utils.Conv1D (the same addmm),
- `transformers_again`: a second, identical transformers layer: its ratio to `transformers` is the noise
  floor,
- `linear`: nn.Linear holding W.T contiguous (F.linear: addmm on the transposed view of an (nf, nx) weight),
interleaved (reference_impl.workbook.measure.side_by_side_seconds), in several passes. The target: ours within
3% of transformers (ratio of medians <= 1.03).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch import nn

from reference_impl.conv1d import Conv1D, conv1d_to_linear
from reference_impl.workbook.measure import machine_info, side_by_side_seconds

TARGET = 1.03
SIZES = {  # model: [(projection, nx, nf)]
    "gpt2 (C=768)": [
        ("c_attn", 768, 2304),
        ("attn.c_proj", 768, 768),
        ("mlp.c_fc", 768, 3072),
        ("mlp.c_proj", 3072, 768),
    ],
    "gpt2-medium (C=1024)": [
        ("c_attn", 1024, 3072),
        ("attn.c_proj", 1024, 1024),
        ("mlp.c_fc", 1024, 4096),
        ("mlp.c_proj", 4096, 1024),
    ],
}


def fwd_bwd(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """One training step's worth of work for a projection: forward, then backward to x, weight and bias."""

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(grad)

    return step


def bench_size(nx: int, nf: int, tokens: int, rounds: int, passes: int) -> dict:
    from transformers.pytorch_utils import Conv1D as TheirConv1D

    ours = Conv1D(nf, nx)
    theirs, theirs_again = TheirConv1D(nf, nx), TheirConv1D(nf, nx)
    theirs.load_state_dict(ours.state_dict())
    theirs_again.load_state_dict(ours.state_dict())
    linear = conv1d_to_linear(ours)
    x = torch.randn(1, tokens, nx, requires_grad=True)  # (B, T, nx)
    grad = torch.randn(1, tokens, nf)
    fns = {
        "ours": fwd_bwd(ours, x, grad),
        "transformers": fwd_bwd(theirs, x, grad),
        "transformers_again": fwd_bwd(theirs_again, x, grad),
        "linear": fwd_bwd(linear, x, grad),
    }
    runs = [
        side_by_side_seconds(
            fns, rounds=rounds, warmup=1 if i else 2, desc=f"{nx}->{nf} pass {i + 1}/{passes}"
        )
        for i in range(passes)
    ]
    medians = {name: statistics.median(run[name] for run in runs) for name in fns}
    per_pass = {
        "ours/transformers": [run["ours"] / run["transformers"] for run in runs],
        "transformers_again/transformers": [run["transformers_again"] / run["transformers"] for run in runs],
        "linear/transformers": [run["linear"] / run["transformers"] for run in runs],
    }
    return {
        "nx": nx,
        "nf": nf,
        "tokens": tokens,
        "median_seconds": medians,
        "ratios": {k: medians[k.split("/")[0]] / medians["transformers"] for k in per_pass},
        "ratios_per_pass": per_pass,
    }


def bench_overhead(rounds: int) -> dict:
    """Per-call cost of the Python around the matmul: forward of a tiny layer (8 -> 8, one row), no autograd.

    The matmul is negligible here, so the difference ours - transformers is the cost of our extra input checks
    (last dimension, dtype). It is an absolute time per call, far steadier than a ratio on a loaded machine,
    and it bounds what those checks can add at the GPT-2 sizes: difference / (time of one call there). A
    negative difference means the checks cost less than the timer's resolution on this machine; the bound then
    is 0.
    """
    from transformers.pytorch_utils import Conv1D as TheirConv1D

    ours = Conv1D(8, 8)
    theirs = TheirConv1D(8, 8)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 8)

    def forward(layer: nn.Module):
        def call() -> None:
            with torch.no_grad():
                layer(x)

        return call

    fns = {"ours": forward(ours), "transformers": forward(theirs)}
    medians = side_by_side_seconds(fns, rounds=3 * rounds, warmup=2, inner=500, desc="overhead")
    return {
        "nx": 8,
        "nf": 8,
        "tokens": 1,
        "what": "forward only, under torch.no_grad, 500 calls per timing",
        "median_seconds": medians,
        "ours_minus_transformers_seconds": medians["ours"] - medians["transformers"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="B*T rows per step (default 128: B=1, T=128)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per pass (default 7)")
    parser.add_argument("--passes", type=int, default=3, help="independent passes per size (default 3)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "conv1d_cpu.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    results = []
    print(
        f"{'model':22} {'projection':12} {'nx->nf':>11} {'ours ms':>8} {'HF ms':>8} {'Linear ms':>9} "
        f"{'ours/HF':>8} {'HF/HF':>7} {'Lin/HF':>7}"
    )
    for model, projections in SIZES.items():
        for name, nx, nf in projections:
            r = bench_size(nx, nf, args.tokens, args.rounds, args.passes)
            r.update(model=model, projection=name)
            results.append(r)
            m, q = r["median_seconds"], r["ratios"]
            print(
                f"{model:22} {name:12} {f'{nx}->{nf}':>11} {m['ours'] * 1e3:8.2f} "
                f"{m['transformers'] * 1e3:8.2f} "
                f"{m['linear'] * 1e3:9.2f} {q['ours/transformers']:8.3f} "
                f"{q['transformers_again/transformers']:7.3f} {q['linear/transformers']:7.3f}"
            )

    overhead = bench_overhead(args.rounds)
    extra = overhead["ours_minus_transformers_seconds"]
    for r in results:
        r["overhead_bound"] = max(extra, 0.0) / r["median_seconds"]["transformers"]
    print(
        f"tiny layer (8->8, 1 row, forward): ours {overhead['median_seconds']['ours'] * 1e6:.1f} us, "
        f"transformers {overhead['median_seconds']['transformers'] * 1e6:.1f} us per call: our checks cost "
        f"{extra * 1e6:+.1f} us a call, at most {max(r['overhead_bound'] for r in results):+.2%} of a GPT-2 "
        "projection"
    )

    ours_ratios = [r["ratios"]["ours/transformers"] for r in results]
    noise = [abs(r["ratios"]["transformers_again/transformers"] - 1) for r in results]
    linear_ratios = [r["ratios"]["linear/transformers"] for r in results]
    summary = {
        "ours/transformers_geomean": statistics.geometric_mean(ours_ratios),
        "ours/transformers_worst": max(ours_ratios),
        "noise_floor_max_abs": max(noise),
        "linear/transformers_geomean": statistics.geometric_mean(linear_ratios),
        "checks_overhead_seconds_per_call": extra,
        "checks_overhead_worst_fraction": max(r["overhead_bound"] for r in results),
        "target": f"ours/transformers <= {TARGET}",
        "target_met_geomean": statistics.geometric_mean(ours_ratios) <= TARGET,
        "target_met_every_size": max(ours_ratios) <= TARGET,
    }
    record = {
        "benchmark": "conv1d forward+backward, ours vs transformers Conv1D vs nn.Linear",
        "command": "python benchmarks/bench_conv1d.py "
        f"--tokens {args.tokens} --rounds {args.rounds} --passes {args.passes} --threads {args.threads}",
        "machine": machine_info(),
        "settings": {"tokens": args.tokens, "rounds": args.rounds, "passes": args.passes, "dtype": "float32"},
        "target": TARGET,
        "summary": summary,
        "overhead": overhead,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"ours/HF geomean {summary['ours/transformers_geomean']:.3f} (worst "
        f"{summary['ours/transformers_worst']:.3f}); "
        f"HF/HF noise floor up to {summary['noise_floor_max_abs']:.1%}; Linear/HF geomean "
        f"{summary['linear/transformers_geomean']:.3f}; target {summary['target']}: "
        f"{'met' if summary['target_met_geomean'] else 'NOT met'} (geomean). Wrote {args.out}"
    )


if __name__ == "__main__":
    main()
