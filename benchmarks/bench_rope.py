"""Our rotary forward vs transformers' on CPU: cos/sin for 4096 tokens, then rotating one layer's q and k.

    python benchmarks/bench_rope.py                     # writes benchmarks/results/rope_cpu.json
    python benchmarks/bench_rope.py --tokens 1024 --rounds 5 --out /tmp/rope.json

One step = `RotaryEmbedding(x, position_ids)` -> (cos, sin), then `apply_rotary_pos_emb(q, k, cos, sin)` for a
32-head, 128-dim layer (Llama 3.1 8B's rope: llama3 scaling, base 500000; 8 KV heads). Ours
(reference_impl.rope) and transformers' (LlamaRotaryEmbedding + modeling_llama.apply_rotary_pos_emb) are timed
interleaved in one run (`reference_impl.workbook.measure.side_by_side_seconds`), so the ratio is what we
record; the target is ours / theirs <= 1.05. Ours is timed twice per round ("ours again"), so the record also
says how far two timings of the very same code drift apart on this machine. One thread by default: on a shared
machine it varies least.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from reference_impl.rope import RotaryEmbedding, apply_rotary_pos_emb
from reference_impl.workbook.measure import machine_info, side_by_side_seconds

TARGET_RATIO = 1.05
RESULTS = Path(__file__).resolve().parent / "results"


def llama31_config(n_heads: int, head_dim: int):
    """A one-layer Llama 3.1-style config in the installed transformers' format (5.x rope_parameters, 4.x
    rope_scaling)."""
    from transformers import LlamaConfig

    from reference_impl.workbook.tiny import rope_config_kwargs

    rope = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    common = {
        "hidden_size": n_heads * head_dim,
        "num_attention_heads": n_heads,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "num_hidden_layers": 1,
        "vocab_size": 128,
    }
    return LlamaConfig(**rope_config_kwargs(rope, 500_000.0), **common)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "rope_cpu.json")
    args = parser.parse_args(argv)

    from transformers.models.llama import modeling_llama as ml

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = llama31_config(args.heads, args.head_dim)
    ours_rotary, their_rotary = RotaryEmbedding(config), ml.LlamaRotaryEmbedding(config)
    T, H, D = args.tokens, args.heads, args.head_dim
    q = torch.randn(1, H, T, D)  # (B, H, T, D)
    k = torch.randn(1, 8, T, D)  # (B, H_kv, T, D)
    position_ids = torch.arange(T)[None]  # (B, T)

    def ours() -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = ours_rotary(q, position_ids)
        return apply_rotary_pos_emb(q, k, cos, sin)

    def theirs() -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = their_rotary(q, position_ids)
        return ml.apply_rotary_pos_emb(q, k, cos, sin)

    for a, b in zip(ours(), theirs(), strict=True):  # same work, same bits
        assert torch.equal(a, b), "ours and transformers' differ; fix that before timing"
    # "ours again" is the same function timed a second time: its ratio to "ours" is the noise floor of this
    # run
    seconds = side_by_side_seconds(
        {"ours": ours, "transformers": theirs, "ours again": ours}, rounds=args.rounds, warmup=2, desc="rope"
    )
    ratio = seconds["ours"] / seconds["transformers"]
    noise = seconds["ours again"] / seconds["ours"]
    record = {
        "benchmark": "rope forward: RotaryEmbedding cos/sin + apply_rotary_pos_emb on q and k",
        "command": "python benchmarks/bench_rope.py" + (f" --tokens {T}" if T != 4096 else ""),
        "machine": machine_info(),
        "shape": {
            "batch": 1,
            "tokens": T,
            "heads": H,
            "kv_heads": 8,
            "head_dim": D,
            "dtype": "float32",
            "rope_type": "llama3",
        },
        "rounds": args.rounds,
        "median_seconds": seconds,
        "ratio_ours_over_transformers": ratio,
        "ratio_ours_again_over_ours": noise,
        "target_ratio_at_most": TARGET_RATIO,
        "within_target": ratio <= TARGET_RATIO,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{'':14}{'median ms':>10}")
    for name, s in seconds.items():
        print(f"{name:14}{s * 1e3:10.2f}")
    print(
        f"ratio ours/transformers = {ratio:.3f} (target <= {TARGET_RATIO}); noise floor ours again/ours = "
        f"{noise:.3f} -> {args.out}"
    )
    return record


if __name__ == "__main__":
    main()
