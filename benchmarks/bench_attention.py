"""Our eager attention vs transformers' eager and sdpa attention functions, on CPU, measured side by side.

    python benchmarks/bench_attention.py            # writes benchmarks/results/attention_cpu.json

One causal attention layer call: 1 sequence of 1024 tokens, 16 heads of 64 dims, float32, forward only, no
grad. The two eager functions get the same additive causal mask (`eager_mask`); sdpa gets
`attention_mask=None` (`is_causal=True` inside, as `sdpa_mask` arranges for a plain causal batch). Timings are
medians of interleaved rounds (`reference_impl.workbook.measure.side_by_side_seconds`), so the ratios are fair
even on a busy machine.
Target: ours within 5% of transformers' eager (the same operations in the same order).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from reference_impl.attention import eager_attention_forward
from reference_impl.masking import eager_mask
from reference_impl.workbook.measure import machine_info, side_by_side_seconds

TARGET = 1.05  # ours / transformers' eager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "attention_cpu.json")
    args = parser.parse_args()

    from transformers.integrations.sdpa_attention import sdpa_attention_forward as hf_sdpa
    from transformers.models.llama.modeling_llama import eager_attention_forward as hf_eager

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, H, T, D = 1, args.heads, args.tokens, args.head_dim
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))  # (B, H, T, D)
    mask = eager_mask(B, T, T)  # (B, 1, T, T) additive causal
    layer = SimpleNamespace(num_key_value_groups=1, training=False, is_causal=True)
    scaling = D**-0.5

    # Same inputs, same answer: check before timing.
    ours = eager_attention_forward(layer, q, k, v, mask, scaling=scaling)[0]
    torch.testing.assert_close(ours, hf_eager(layer, q, k, v, mask, scaling=scaling)[0], atol=0, rtol=0)
    torch.testing.assert_close(ours, hf_sdpa(layer, q, k, v, None, scaling=scaling)[0], atol=1e-5, rtol=1e-5)

    with torch.inference_mode():
        medians = side_by_side_seconds(
            {
                "ours_eager": lambda: eager_attention_forward(layer, q, k, v, mask, scaling=scaling),
                "transformers_eager": lambda: hf_eager(layer, q, k, v, mask, scaling=scaling),
                "transformers_sdpa": lambda: hf_sdpa(layer, q, k, v, None, scaling=scaling),
            },
            rounds=args.rounds,
            warmup=2,
            desc="attention",
        )
    ratios = {
        "ours_eager / transformers_eager": medians["ours_eager"] / medians["transformers_eager"],
        "transformers_sdpa / transformers_eager": medians["transformers_sdpa"]
        / medians["transformers_eager"],
    }
    record = {
        "what": "one causal attention call, forward, float32, CPU",
        "shape": {"batch": B, "tokens": T, "heads": H, "head_dim": D},
        "rounds": args.rounds,
        "median_seconds": medians,
        "ratios": ratios,
        "target": {"ours_eager / transformers_eager": f"<= {TARGET}"},
        "meets_target": ratios["ours_eager / transformers_eager"] <= TARGET,
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")

    print(
        f"attention, B={B} T={T} H={H} D={D}, float32, {args.threads} threads, median of {args.rounds} rounds"
    )
    for name, seconds in medians.items():
        print(f"  {name:<20} {seconds * 1e3:8.1f} ms   {seconds / medians['transformers_eager']:.3f}x eager")
    verdict = "meets" if record["meets_target"] else "MISSES"
    print(
        f"ours / transformers eager = {ratios['ours_eager / transformers_eager']:.3f} ({verdict} target <= "
        f"{TARGET})"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
