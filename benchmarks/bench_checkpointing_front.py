r"""The checkpointing front as the field draws it now: eager, compiled, budgeted, selective and offloaded,
beside transformers' points, on real model shapes.

    python benchmarks/bench_checkpointing_front.py --device cuda --models gpt2_small llama_16x1024 \
        --out part1.json
    python benchmarks/bench_checkpointing_front.py --device cuda --warm-only --models gpt2_small \
        --out cold.json
    python benchmarks/bench_checkpointing_front.py --device cpu --tiny --backend aot_eager   # smoke test

A training step is forward + causal-LM loss + backward under bf16 autocast, fp32 weights, random init from
config (the shapes of bench_checkpointing.py). Every contender of a model is timed interleaved in one run
(`side_by_side_seconds`); memory is the step's peak above what was allocated before it; both are reported
relative to the eager step without checkpointing. Contenders:

- `none`: eager, no checkpointing; `hf_{re,nre}_k{1..4}`: transformers' `gradient_checkpointing_enable` in
  each mode with `every_n_layers` 1 to 4; `hf_offload_re_k1`: transformers' `offload=True` (save_on_cpu around
  each checkpoint);
- ours, eager: `ours_sqrt_{re,nre}` (segments of round(sqrt(L)) layers); `ours_offload_re_k1` and
  `ours_offload_sqrt_re` (`checkpoint_compiled.offload_layer_inputs`: the kept inputs to pinned host memory on
  a side stream, prefetched in backward); `save_on_cpu_all` (every saved tensor to host, no checkpointing);
- compiled (`torch.compile`, inductor): `compiled_b1.0` (no checkpointing, the default partition),
  `compiled_b{b}` (the partitioner under `activation_memory_budget=b`), `compiled_ckpt_k1` (transformers'
  non-reentrant checkpoint of every layer, compiled), `compiled_selective_k1` and `compiled_selattn_k1` (our
  selective policies as selective-checkpoint contexts, compiled).

Compile time (the first step, forward + backward, minus nothing) is reported apart from step time: `compile_s`
in the measuring process, and `compile_s_cold` from a `--warm-only` process that compiled first with empty
caches (merge with `--cold FILE`). For each transformers point the record names the cheapest contender that
dominates it (`reference_impl.workbook.front.dominance`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_checkpointing import (  # noqa: E402
    MODELS,
    TINY,
    _is_layer,
    _peak_bytes,
    adopt_our_layer,
    build,
    one_input_grad_hook,
    restore,
    snapshot,
)

from reference_impl.checkpoint_compiled import (  # noqa: E402
    compile_with_memory_budget,
    offload_layer_inputs,
    saved_for_backward,
    selective_checkpoint_kwargs,
)
from reference_impl.checkpointing import set_gradient_checkpointing  # noqa: E402
from reference_impl.workbook.front import dominance, selective_vs_budget  # noqa: E402
from reference_impl.workbook.measure import machine_info, side_by_side_seconds  # noqa: E402

MiB = 2**20
DEFAULT_BUDGETS = (0.5, 0.2, 0.05)
#: compiled contender -> (checkpointing kwargs or None, label, short note)
COMPILED_CKPT: dict[str, tuple[str | None, str, str]] = {
    "compiled_ckpt_k1": (None, "torch.compile + checkpoint every layer", "every layer"),
    "compiled_selective_k1": (
        "selective",
        "torch.compile + our selective policy (keep matmuls, attention)",
        "keep mm+attn",
    ),
    "compiled_selattn_k1": (
        "selective_attention",
        "torch.compile + our selective policy (keep attention)",
        "keep attn",
    ),
}


#: The compiled contenders measured per model by default: each one is a compilation of its own (tens of
#: seconds on the H200 even with warm caches), so the larger models get fewer, to fit one 10-minute device
#: call.
PLAN: dict[str, tuple[str, ...]] = {
    "gpt2_small": (
        "compiled_b1.0",
        "compiled_b0.2",
        "compiled_b0.05",
        "compiled_ckpt_k1",
        "compiled_selective_k1",
    ),
    "llama_16x1024": ("compiled_b1.0", "compiled_b0.2", "compiled_ckpt_k1", "compiled_selective_k1"),
    "gpt2_medium": ("compiled_b1.0", "compiled_ckpt_k1"),
}
#: Eager contenders left out by default on the larger models (slow, and measured before or on GPT-2 small).
SKIP_UNLESS_SMALL = ("save_on_cpu_all", "ours_sqrt_nre")


def compiled_keys(budgets: tuple[float, ...]) -> list[str]:
    """Every compiled contender for a budget sweep (1.0 and `budgets`)."""
    return ["compiled_b1.0", *(f"compiled_b{b}" for b in budgets), *COMPILED_CKPT]


def setup_compiler() -> None:
    # Each contender is its own compilation of the same classes: lift dynamo's per-code limit, and fail loudly
    # rather than silently run a contender eagerly.
    torch._dynamo.config.recompile_limit = 128
    torch._dynamo.config.accumulated_recompile_limit = 8192
    torch._dynamo.config.fail_on_recompile_limit_hit = True


class Contenders:
    """The step functions of one model's contenders, with what the record says about each."""

    def __init__(
        self, family: str, cfg: dict[str, Any], batch: int, seq: int, device: str, backend: str
    ) -> None:
        torch.manual_seed(0)
        self.family, self.cfg, self.device, self.backend = family, cfg, device, backend
        self.theirs = build(family, cfg, device)
        self.ids = torch.randint(0, self.theirs.config.vocab_size, (batch, seq), device=device)
        self.autocast = torch.autocast(device_type=device, dtype=torch.bfloat16)
        self.fns: dict[str, Callable[[], None]] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}

    def step(self, model: Any) -> None:
        with self.autocast:
            loss = model(input_ids=self.ids, labels=self.ids).loss
        loss.backward()

    def twin(self) -> torch.nn.Module:
        model = build(self.family, self.cfg, self.device)
        model.load_state_dict(self.theirs.state_dict())
        return model

    def add_eager(self, key: str, model: torch.nn.Module, wrap: Any = None, **meta: Any) -> None:
        state = snapshot(model)
        layers = [m for m, _, _ in state if _is_layer(m)]
        meta["checkpointed_layers"] = sum(bool(m.gradient_checkpointing) for m in layers)
        meta["num_layers"] = len(layers)

        def run() -> None:
            restore(state)
            with wrap() if wrap is not None else contextlib.nullcontext():
                self.step(model)

        self.fns[key] = run
        self.meta[key] = meta

    def add_compiled(self, key: str, budget: float, ckpt: str | bool | None, **meta: Any) -> None:
        try:
            self._add_compiled(key, budget, ckpt, **meta)
        except Exception as exc:  # recorded as failed, not measured
            self.failed[key] = f"{type(exc).__name__}: {exc}"[:500]
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _add_compiled(self, key: str, budget: float, ckpt: str | bool | None, **meta: Any) -> None:
        model = self.twin()
        if ckpt is not False:
            kwargs = {"use_reentrant": False} if ckpt is None else selective_checkpoint_kwargs(ckpt)
            model.gradient_checkpointing_enable(kwargs)
        one_input_grad_hook(model)
        compiled = compile_with_memory_budget(model, budget, backend=self.backend)
        counters = torch._dynamo.utils.counters
        graphs_before = counters["stats"]["unique_graphs"]
        breaks_before = sum(counters["graph_break"].values())
        _sync()
        start = time.perf_counter()
        with self.autocast:
            loss = compiled(input_ids=self.ids, labels=self.ids).loss
        saved = saved_for_backward(loss, exclude=model.parameters())
        loss.backward()
        _sync()
        meta.update(
            compile_s=time.perf_counter() - start,
            graphs=counters["stats"]["unique_graphs"] - graphs_before,
            graph_breaks=sum(counters["graph_break"].values()) - breaks_before,
            saved=saved.as_dict(),
            budget=budget,
        )
        self.fns[key] = lambda: self.step(compiled)
        self.meta[key] = meta


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def contenders(
    spec: tuple[str, dict[str, Any], int, int],
    device: str,
    budgets: tuple[float, ...],
    backend: str,
    compiled_only: bool = False,
    compiled: tuple[str, ...] | None = None,
    skip: tuple[str, ...] = (),
) -> Contenders:
    family, cfg, batch, seq = spec
    c = Contenders(family, cfg, batch, seq, device, backend)
    theirs = c.theirs
    if not compiled_only:
        theirs.gradient_checkpointing_disable()
        one_input_grad_hook(theirs)
        c.add_eager("none", theirs, group="none", label="no checkpointing (eager)", short="")
        for mode, reentrant in (("re", True), ("nre", False)):
            for k in (1, 2, 3, 4):
                theirs.gradient_checkpointing_enable({"use_reentrant": reentrant}, every_n_layers=k)
                one_input_grad_hook(theirs)
                words = "reentrant" if reentrant else "non-reentrant"
                c.add_eager(
                    f"hf_{mode}_k{k}",
                    theirs,
                    group=f"transformers_{mode}",
                    label=f"transformers {words}, every_n_layers={k}",
                    short=f"k={k}",
                )
        if device == "cuda":  # transformers 5.22 pins host memory even where there is no accelerator
            theirs.gradient_checkpointing_enable({"use_reentrant": True}, offload=True)
            one_input_grad_hook(theirs)
            c.add_eager(
                "hf_offload_re_k1",
                theirs,
                group="transformers_offload",
                label="transformers reentrant, offload=True",
                short="",
            )
        theirs.gradient_checkpointing_enable({"use_reentrant": True})
        one_input_grad_hook(theirs)
        offload_layer_inputs(theirs)
        c.add_eager(
            "ours_offload_re_k1",
            theirs,
            group="ours_offload",
            label="ours: every layer, inputs to host (side stream)",
            short="every layer",
        )
        theirs.gradient_checkpointing_disable()
        one_input_grad_hook(theirs)

        def save_all() -> Any:
            return torch.autograd.graph.save_on_cpu(pin_memory=device == "cuda")

        c.add_eager(
            "save_on_cpu_all",
            theirs,
            wrap=save_all,
            group="save_on_cpu",
            label="every saved tensor to host (save_on_cpu), no checkpointing",
            short="save_on_cpu",
        )
        ours = c.twin()
        adopt_our_layer(ours)
        for mode, reentrant in (("re", True), ("nre", False)):
            set_gradient_checkpointing(ours, True, {"use_reentrant": reentrant}, policy="sqrt")
            one_input_grad_hook(ours)
            words = "reentrant" if reentrant else "non-reentrant"
            c.add_eager(
                f"ours_sqrt_{mode}",
                ours,
                group="ours_eager",
                label=f"ours: sqrt(L) segments, {words}",
                short=f"sqrt {mode}",
            )
        set_gradient_checkpointing(ours, True, {"use_reentrant": True}, policy="sqrt")
        one_input_grad_hook(ours)
        offload_layer_inputs(ours)
        c.add_eager(
            "ours_offload_sqrt_re",
            ours,
            group="ours_offload",
            label="ours: sqrt(L) segments, inputs to host (side stream)",
            short="sqrt segments",
        )
    for key in compiled_keys(budgets) if compiled is None else compiled:
        if key in COMPILED_CKPT:
            policy, label, short = COMPILED_CKPT[key]
            group = "compiled_ckpt" if policy is None else "compiled_selective"
            c.add_compiled(key, 1.0, policy, group=group, label=label, short=short)
        else:
            b = float(key[len("compiled_b") :])
            label = "torch.compile, no checkpointing" if b == 1.0 else f"torch.compile, memory budget {b}"
            c.add_compiled(key, b, False, group="compiled_budget", label=label, short=f"budget {b}")
    for key in skip:
        c.fns.pop(key, None)
        c.meta.pop(key, None)
    return c


def measure_model(
    spec: tuple[str, dict[str, Any], int, int],
    device: str,
    rounds: int,
    budgets: tuple[float, ...],
    backend: str,
    compiled: tuple[str, ...] | None = None,
    skip: tuple[str, ...] = (),
) -> dict[str, Any]:
    family, cfg, batch, seq = spec
    c = contenders(spec, device, budgets, backend, compiled=compiled, skip=skip)
    c.fns["none"]()  # allocates the gradients, so the peaks below are above model + gradients
    results: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = dict(c.failed)
    for key, fn in list(c.fns.items()):
        try:
            results[key] = {**c.meta[key], "peak_bytes": _peak_bytes(fn, device)}
        except Exception as exc:  # one broken contender must not cost the others their measurement
            failed[key] = f"{type(exc).__name__}: {exc}"[:500]
            del c.fns[key]
    for key, seconds in side_by_side_seconds(c.fns, rounds=rounds, warmup=1).items():
        results[key]["median_s"] = seconds
    # One extra forward of every layer: the body's forward under no_grad and the same autocast.
    c.theirs.gradient_checkpointing_disable()
    body = c.theirs.transformer if family == "gpt2" else c.theirs.model

    def body_forward() -> None:
        with torch.no_grad(), c.autocast:
            body(input_ids=c.ids)

    fwd_body = side_by_side_seconds({"body": body_forward}, rounds=rounds, warmup=1)["body"]
    base = results["none"]
    for r in results.values():
        r["mem_ratio"] = r["peak_bytes"] / base["peak_bytes"]
        r["time_ratio"] = r["median_s"] / base["median_s"]
    return {
        "family": family,
        "config": cfg,
        "batch": batch,
        "seq": seq,
        "num_layers": base["num_layers"],
        "fwd_body_s": fwd_body,
        "one_extra_forward_ratio": 1 + fwd_body / base["median_s"],
        "results": results,
        "dominance": dominance(results),
        "selective_vs_budget": selective_vs_budget(results),
        "failed": failed,
    }


def warm(
    specs: dict[str, Any], device: str, budgets: tuple[float, ...], backend: str, compiled: Any
) -> dict[str, Any]:
    """Compile every compiled contender once (cold caches): the compile times a first user pays."""
    out = {}
    for name, spec in specs.items():
        c = contenders(spec, device, budgets, backend, compiled_only=True, compiled=compiled(name))
        out[name] = {k: m["compile_s"] for k, m in c.meta.items()}
        out[name].update({k: f"failed: {e}" for k, e in c.failed.items()})
        del c
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


def print_table(record: dict[str, Any]) -> None:
    for name, m in record["models"].items():
        res = m["results"]
        base = res["none"]
        print(
            f"\n{name}: batch {m['batch']}x{m['seq']}, no ckpt {base['peak_bytes'] / MiB:.0f} MiB "
            f"{base['median_s'] * 1e3:.1f} ms; one extra forward -> {m['one_extra_forward_ratio']:.2f}x"
        )
        print(
            f"{'contender':24s} {'mem':>6s} {'time':>6s} {'compile s':>10s} {'cold s':>7s} {'saved MiB':>9s}"
        )
        for key, r in res.items():
            saved = r.get("saved", {}).get("bytes")
            print(
                f"{key:24s} {r['mem_ratio']:6.3f} {r['time_ratio']:6.2f} {r.get('compile_s', 0):10.1f} "
                f"{r.get('compile_s_cold') or 0:7.1f} {saved / MiB if saved else 0:9.0f}"
            )
        for fk, err in m["failed"].items():
            print(f"  FAILED {fk}: {err[:200]}")
        for tk, d in m["dominance"].items():
            print(f"  {tk:18s} -> {d['by'] + ': ' if d['by'] else ''}{d['why']}")
        for sk, d in m["selective_vs_budget"].items():
            print(
                f"  {sk} vs budget sweep at equal memory: {d['time_vs_budget']:.3f}x"
                f"{' (extrapolated)' if d['extrapolated'] else ''}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--tiny", action="store_true", help="tiny models (a smoke test of the script)")
    parser.add_argument("--models", nargs="*", help="subset of model names")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budgets", type=float, nargs="*", default=list(DEFAULT_BUDGETS))
    parser.add_argument(
        "--backend", default="inductor", help="torch.compile backend (aot_eager for a CPU smoke test)"
    )
    parser.add_argument(
        "--warm-only", action="store_true", help="compile the compiled contenders once, record times"
    )
    parser.add_argument("--cold", type=Path, nargs="*", default=[], help="--warm-only outputs to merge")
    parser.add_argument(
        "--compiled",
        nargs="*",
        help="compiled contender keys (default: PLAN per model, every key for --tiny)",
    )
    parser.add_argument("--all-eager", action="store_true", help=f"also {SKIP_UNLESS_SMALL} on every model")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    specs = TINY if args.tiny else {k: v for k, v in MODELS.items() if not k.endswith("_b16")}
    if args.models:  # in the order given: the most wanted first, in case the run is cut short
        specs = {k: specs[k] for k in args.models if k in specs}
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    setup_compiler()
    budgets = tuple(b for b in args.budgets if b != 1.0)

    def compiled(name: str) -> tuple[str, ...] | None:
        if args.compiled is not None:
            return tuple(args.compiled)
        return None if args.tiny else PLAN.get(name)

    def skip(name: str) -> tuple[str, ...]:
        return () if args.tiny or args.all_eager or name == "gpt2_small" else SKIP_UNLESS_SMALL

    command = "python benchmarks/bench_checkpointing_front.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    if args.warm_only:
        cold = {
            "machine": machine_info(),
            "command": command,
            "compile_s_cold": warm(specs, args.device, budgets, args.backend, compiled),
        }
        args.out.write_text(json.dumps(cold, indent=1))
        print(json.dumps(cold["compile_s_cold"], indent=1))
        return 0
    record: dict[str, Any] = {
        "machine": machine_info(),
        "command": command,
        "step": "forward + causal-LM loss + backward, bf16 autocast, fp32 weights, random init from config",
        "peak": "max_memory_allocated during the step minus memory_allocated before it (model + gradients)",
        "ratios": "mem_ratio and time_ratio are relative to the eager step without checkpointing ('none')",
        "compile": "compile_s: the first step of a compiled contender in the measuring process (inductor's "
        "caches warm if a --warm-only process ran before); compile_s_cold: that first step in the "
        "--warm-only process",
        "target": "every transformers point dominated (no more memory, no more time); compiled selective "
        "within 1.05x of the budget sweep's time at equal memory",
        "backend": args.backend,
        "compiled_plan": {name: list(compiled(name) or compiled_keys(budgets)) for name in specs},
        "models": {},
    }
    cold: dict[str, dict[str, float]] = {}
    for path in args.cold:
        cold_record = json.loads(path.read_text())
        for name, times in cold_record["compile_s_cold"].items():
            cold.setdefault(name, {}).update(times)
        record.setdefault("cold_runs", []).append(
            {"command": cold_record["command"], "machine": cold_record["machine"]}
        )
    for name, spec in specs.items():
        print(f"measuring {name}", flush=True)
        m = measure_model(spec, args.device, args.rounds, budgets, args.backend, compiled(name), skip(name))
        for key, seconds in cold.get(name, {}).items():
            if key in m["results"] and isinstance(seconds, (int, float)):
                m["results"][key]["compile_s_cold"] = seconds
        m["eager_left_out"] = list(skip(name))
        record["models"][name] = m
        args.out.write_text(json.dumps(record, indent=1, default=str))  # each model as soon as it is done
        if args.device == "cuda":
            torch.cuda.empty_cache()
    print_table(record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
