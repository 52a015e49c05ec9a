"""Gradient checkpointing on real model shapes: activation peak vs step time, theirs, ours, our policies.

    python benchmarks/bench_checkpointing.py --device cuda --out benchmarks/results/checkpointing_gpu.json
    python benchmarks/bench_checkpointing.py --device cpu --tiny           # a smoke test of the script itself

A training step is forward + loss + backward under bf16 autocast, on a model built from its config (random
init, fp32 weights). For each model, every configuration is measured in one interleaved run
(`reference_impl.workbook.measure.side_by_side_seconds`), so ratios between them are taken under the same
conditions:

- `none`: no checkpointing;
- `hf_{re,nre}_k{1..4}`: transformers' `model.gradient_checkpointing_enable({"use_reentrant": ...},
  every_n_layers=k)`;
- `ours_{re,nre}_k{1..4}`: our `set_gradient_checkpointing` on a twin model whose blocks run our
  `GradientCheckpointingLayer.__call__` (same weights; the twin's blocks are re-classed, see
  `adopt_our_layer`);
- our policies: `ours_sqrt_{re,nre}`, `ours_selective_k{1,2}`, `ours_selattn_k1`;
- diagnostics of the non-reentrant cost: `ours_nre_k1_norng` (preserve_rng_state=False),
  `ours_nre_k1_nodet` (determinism_check="none"), and a profile of one step of `hf_re_k1` and `hf_nre_k1`.

Peak = `torch.cuda.max_memory_allocated` during a step, above what was allocated before it (model +
gradients). The lower bound on a checkpointed step: no-checkpoint time + one extra forward of the checkpointed
layers (`fwd_body_ms * checkpointed / L`, the body's forward timed under no_grad).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reference_impl.checkpointing import GradientCheckpointingLayer, set_gradient_checkpointing  # noqa: E402
from reference_impl.workbook.measure import PeakMemory, gpu_peak_memory, machine_info, side_by_side_seconds  # noqa: E402

MiB = 2**20

# name -> (family, config kwargs, batch, sequence length); the sizes of the table.
MODELS: dict[str, tuple[str, dict[str, Any], int, int]] = {
    "gpt2_small": ("gpt2", {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024}, 8, 1024),
    "gpt2_medium": ("gpt2", {"n_layer": 24, "n_embd": 1024, "n_head": 16, "n_positions": 1024}, 8, 1024),
    "llama_16x1024": (
        "llama",
        {
            "num_hidden_layers": 16,
            "hidden_size": 1024,
            "intermediate_size": 2816,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "max_position_embeddings": 2048,
            "vocab_size": 32000,
        },
        4,
        2048,
    ),
}
# The same Llama at 4x the batch: does the non-reentrant gap shrink when each kernel launch carries more work?
MODELS["llama_16x1024_b16"] = (MODELS["llama_16x1024"][0], MODELS["llama_16x1024"][1], 16, 2048)
TINY: dict[str, tuple[str, dict[str, Any], int, int]] = {
    "gpt2_tiny": (
        "gpt2",
        {"n_layer": 4, "n_embd": 64, "n_head": 4, "n_positions": 64, "vocab_size": 128},
        2,
        64,
    ),
    "llama_tiny": (
        "llama",
        {
            "num_hidden_layers": 4,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 64,
            "vocab_size": 128,
        },
        2,
        64,
    ),
}


def build(family: str, cfg_kwargs: dict[str, Any], device: str) -> torch.nn.Module:
    import transformers

    if family == "gpt2":
        config = transformers.GPT2Config(**cfg_kwargs)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(**cfg_kwargs)
        model = transformers.LlamaForCausalLM(config)
    config.use_cache = (
        False  # training: no KV cache (and no "use_cache=True is incompatible" warning per step)
    )
    return model.to(device).train()


def adopt_our_layer(model: torch.nn.Module) -> int:
    """Re-class every transformers decoder block so that its call goes through our GradientCheckpointingLayer.

    `class OursGPT2Block(GradientCheckpointingLayer, GPT2Block)`: our `__call__` comes first in the MRO and
    calls `nn.Module.__call__` itself, so transformers' `__call__` is never reached and nothing is
    checkpointed twice.
    """
    count = 0
    for module in model.modules():
        cls = type(module)
        if any(
            c.__name__ == "GradientCheckpointingLayer" and c.__module__.startswith("transformers.")
            for c in cls.__mro__
        ):
            module.__class__ = type(f"Ours{cls.__name__}", (GradientCheckpointingLayer, cls), {})
            count += 1
    return count


def snapshot(model: torch.nn.Module) -> list[tuple[torch.nn.Module, bool, Any]]:
    """The checkpointing state of every module that has one, to switch configurations without re-enabling."""
    return [
        (m, m.gradient_checkpointing, getattr(m, "_gradient_checkpointing_func", None))
        for m in model.modules()
        if hasattr(m, "gradient_checkpointing")
    ]


def restore(state: list[tuple[torch.nn.Module, bool, Any]]) -> None:
    for m, flag, func in state:
        m.gradient_checkpointing = flag
        if func is not None:
            m._gradient_checkpointing_func = func


def one_input_grad_hook(model: torch.nn.Module) -> None:
    """Exactly one `enable_input_require_grads` hook (each enable adds one; keep every configuration
    equal)."""
    model.get_input_embeddings()._forward_hooks.clear()
    model.enable_input_require_grads()


def measure_model(
    name: str, spec: tuple[str, dict[str, Any], int, int], device: str, rounds: int, core: bool = False
) -> dict[str, Any]:
    family, cfg_kwargs, batch, seq = spec
    torch.manual_seed(0)
    theirs = build(family, cfg_kwargs, device)
    ours = build(family, cfg_kwargs, device)
    ours.load_state_dict(theirs.state_dict())
    n_adopted = adopt_our_layer(ours)
    num_layers = n_adopted
    vocab = theirs.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16)

    def step(model: torch.nn.Module) -> None:
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()

    configs: dict[str, tuple[torch.nn.Module, list[Any], dict[str, Any]]] = {}

    def add(key: str, model: torch.nn.Module, **meta: Any) -> None:
        configs[key] = (model, snapshot(model), meta)

    theirs.gradient_checkpointing_disable()
    add("none", theirs, who="none", mode=None, k=None, policy=None)
    for mode, reentrant in (("re", True), ("nre", False)):
        for k in (1, 2, 3, 4):
            theirs.gradient_checkpointing_enable({"use_reentrant": reentrant}, every_n_layers=k)
            add(f"hf_{mode}_k{k}", theirs, who="transformers", mode=mode, k=k, policy="full")
            set_gradient_checkpointing(ours, True, {"use_reentrant": reentrant}, every_n_layers=k)
            add(f"ours_{mode}_k{k}", ours, who="ours", mode=mode, k=k, policy="full")
    for mode, reentrant in (("re", True), ("nre", False)):
        set_gradient_checkpointing(ours, True, {"use_reentrant": reentrant}, policy="sqrt")
        add(f"ours_sqrt_{mode}", ours, who="ours", mode=mode, k=1, policy="sqrt")
    for k in () if core else (1, 2):
        set_gradient_checkpointing(ours, True, {"use_reentrant": False}, every_n_layers=k, policy="selective")
        add(f"ours_selective_k{k}", ours, who="ours", mode="nre", k=k, policy="selective")
    if not core:
        set_gradient_checkpointing(ours, True, {"use_reentrant": False}, policy="selective_attention")
        add("ours_selattn_k1", ours, who="ours", mode="nre", k=1, policy="selective_attention")
        set_gradient_checkpointing(ours, True, {"use_reentrant": False, "preserve_rng_state": False})
        add("ours_nre_k1_norng", ours, who="ours", mode="nre", k=1, policy="full (preserve_rng_state=False)")
        set_gradient_checkpointing(ours, True, {"use_reentrant": False, "determinism_check": "none"})
        add("ours_nre_k1_nodet", ours, who="ours", mode="nre", k=1, policy="full (determinism_check='none')")
    for model in (theirs, ours):
        one_input_grad_hook(model)

    def runner(key: str):
        model, state, _ = configs[key]

        def run() -> None:
            restore(state)
            step(model)

        return run

    fns = {key: runner(key) for key in configs}
    # Warm both models once (allocates the gradients, so the peaks below are above model + gradients).
    fns["none"]()
    fns["ours_re_k1"]()
    results: dict[str, dict[str, Any]] = {}
    for key, fn in fns.items():
        peak = _peak_bytes(fn, device)
        _, _, meta = configs[key]
        flags = [bool(m.gradient_checkpointing) for m, _, _ in configs[key][1] if _is_layer(m)]
        results[key] = {**meta, "peak_bytes": peak, "checkpointed_layers": sum(flags)}
    times = side_by_side_seconds(fns, rounds=rounds, warmup=1, desc=name)
    for key, seconds in times.items():
        results[key]["median_s"] = seconds

    # The lower bound: one extra forward of the checkpointed layers (the body's forward, no grad, same
    # autocast).
    restore(configs["none"][1])
    body = theirs.transformer if family == "gpt2" else theirs.model

    def body_forward() -> None:
        with torch.no_grad(), autocast:
            body(input_ids=ids)

    fwd_body = side_by_side_seconds({"body": body_forward}, rounds=rounds, warmup=1, desc=f"{name} forward")[
        "body"
    ]

    base = results["none"]
    for r in results.values():
        r["mem_ratio"] = r["peak_bytes"] / base["peak_bytes"]
        r["time_ratio"] = r["median_s"] / base["median_s"]
        r["lower_bound_s"] = base["median_s"] + fwd_body * r["checkpointed_layers"] / num_layers
    return {
        "family": family,
        "config": cfg_kwargs,
        "batch": batch,
        "seq": seq,
        "num_layers": num_layers,
        "fwd_body_s": fwd_body,
        "results": results,
        "ours_vs_transformers": _ours_vs_theirs(results),
        "front": _front(results),
        "profile": _profile(fns, device) if device == "cuda" and not core else None,
    }


def _is_layer(module: torch.nn.Module) -> bool:
    return any(c.__name__ == "GradientCheckpointingLayer" for c in type(module).__mro__)


def _peak_bytes(fn, device: str) -> int:
    """Peak bytes of one step above what was allocated before it: exact on CPU, the allocator's peak on a
    GPU."""
    if device == "cuda":
        return gpu_peak_memory(fn)
    with PeakMemory() as mem:
        fn()
    return mem.peak_bytes


def _ours_vs_theirs(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for mode in ("re", "nre"):
        for k in (1, 2, 3, 4):
            o, t = results[f"ours_{mode}_k{k}"], results[f"hf_{mode}_k{k}"]
            out[f"{mode}_k{k}"] = {
                "time_ratio": o["median_s"] / t["median_s"],
                "peak_ratio": o["peak_bytes"] / t["peak_bytes"],
            }
    return out


def _front(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """For each transformers point, the points of ours (policies) that beat it: faster at <= memory, or less
    memory
    at <= time. Also the Pareto front of everything measured."""
    theirs = {k: r for k, r in results.items() if r["who"] == "transformers"}
    policies = {
        k: r
        for k, r in results.items()
        if r["who"] == "ours" and not k.startswith(("ours_re_k", "ours_nre_k"))
    }
    beaten_by = {}
    for tk, t in theirs.items():
        beaten_by[tk] = [
            pk
            for pk, p in policies.items()
            if (p["median_s"] < t["median_s"] and p["peak_bytes"] <= t["peak_bytes"])
            or (p["peak_bytes"] < t["peak_bytes"] and p["median_s"] <= t["median_s"])
        ]
    pareto = [
        k
        for k, r in results.items()
        if not any(
            (o["median_s"] <= r["median_s"] and o["peak_bytes"] <= r["peak_bytes"])
            and (o["median_s"] < r["median_s"] or o["peak_bytes"] < r["peak_bytes"])
            for o in results.values()
        )
    ]
    return {
        "transformers_point_beaten_by": beaten_by,
        "pareto": sorted(pareto, key=lambda k: results[k]["peak_bytes"]),
    }


def _profile(fns: dict[str, Any], device: str) -> dict[str, Any]:
    """Kernel time, kernel count and CPU wall of one step in each reentrant mode: where the extra time
    goes."""
    from torch.profiler import ProfilerActivity, profile

    out: dict[str, Any] = {}
    for key in ("hf_re_k1", "hf_nre_k1", "none"):
        fns[key]()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fns[key]()
            torch.cuda.synchronize()
        kernels: dict[str, list[float]] = {}
        for evt in prof.events():
            if evt.device_type == torch.autograd.DeviceType.CUDA:
                k = kernels.setdefault(evt.name[:90], [0, 0.0])
                k[0] += 1
                k[1] += evt.device_time_total / 1e3
        out[key] = {
            "kernel_ms": sum(v[1] for v in kernels.values()),
            "kernels": sum(v[0] for v in kernels.values()),
            "top": sorted(([n, c, round(ms, 3)] for n, (c, ms) in kernels.items()), key=lambda x: -x[2])[:25],
        }
    return out


def print_table(record: dict[str, Any]) -> None:
    for name, m in record["models"].items():
        res = m["results"]
        base = res["none"]
        print(
            f"\n{name}: L={m['num_layers']}, batch {m['batch']} x {m['seq']}, no ckpt "
            f"{base['peak_bytes'] / MiB:.0f} MiB, {base['median_s'] * 1e3:.1f} ms; fwd body "
            f"{m['fwd_body_s'] * 1e3:.1f} ms"
        )
        print(f"{'config':24s} {'peak MiB':>9s} {'mem':>6s} {'ms':>8s} {'time':>6s} {'bound':>6s}")
        for key, r in res.items():
            print(
                f"{key:24s} {r['peak_bytes'] / MiB:9.0f} {r['mem_ratio']:6.3f} {r['median_s'] * 1e3:8.1f} "
                f"{r['time_ratio']:6.3f} {r['lower_bound_s'] / base['median_s']:6.3f}"
            )
        worst = max(v["time_ratio"] for v in m["ours_vs_transformers"].values())
        print(f"ours / transformers step time, worst over modes and k: {worst:.3f}x (target <= 1.02)")
        beaten = {k: v for k, v in m["front"]["transformers_point_beaten_by"].items() if v}
        print(f"transformers points beaten by a policy of ours: {beaten or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--tiny", action="store_true", help="tiny models (a smoke test of the script)")
    parser.add_argument("--models", nargs="*", help="subset of model names")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--core", action="store_true", help="only none, transformers' modes, ours, and sqrt")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    specs = TINY if args.tiny else {k: v for k, v in MODELS.items() if not k.endswith("_b16")}
    if args.models:
        specs = TINY if args.tiny else MODELS
        specs = {k: v for k, v in specs.items() if k in args.models}
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    record: dict[str, Any] = {
        "machine": machine_info(),
        "command": "python benchmarks/bench_checkpointing.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "step": "forward + causal-LM loss + backward, bf16 autocast, fp32 weights, random init from config",
        "peak": "max_memory_allocated during the step minus memory_allocated before it (model + gradients)",
        "target": "ours <= 1.02x transformers' step time in the same mode at the same peak; a policy beating "
        "every transformers point (every_n_layers 1-4, both modes)",
        "models": {},
    }
    for name, spec in specs.items():
        record["models"][name] = measure_model(name, spec, args.device, args.rounds, args.core)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    print_table(record)
    out = (
        args.out
        or ROOT / "benchmarks" / "results" / f"checkpointing_{'gpu' if args.device == 'cuda' else 'cpu'}.json"
    )
    if args.tiny and args.out is None:
        out = Path("/tmp/checkpointing_tiny.json")
    out.write_text(json.dumps(record, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
