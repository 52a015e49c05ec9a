"""Write benchmarks/README.md's headline table from the recorded JSON results: no figure typed by hand.

    python benchmarks/summarize.py          # print the table
    python benchmarks/summarize.py --write  # rewrite the table between the markers in benchmarks/README.md

tests/test_benchmarks.py fails if the README's table differs from what this script makes of the results.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- BEGIN GENERATED TABLE -->", "<!-- END GENERATED TABLE -->"

Row = tuple[str, str, str, str]  # (what, measured, target, met?)


def _on(record: dict[str, Any]) -> str:
    m = record["machine"]
    device = m.get("gpu") or f"{m.get('processor')} ({m.get('torch_threads')} thread(s))"
    return f"{device}; torch {m['torch']}, transformers {m['transformers']}; {m['date_utc'][:10]}"


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _conv1d(r: dict[str, Any]) -> list[Row]:
    s = r["summary"]
    return [
        (
            "Conv1D fwd+bwd, ours / transformers (geomean over GPT-2 small+medium projections)",
            f"{s['ours/transformers_geomean']:.3f} (single sizes up to {s['ours/transformers_worst']:.2f}; "
            f"identical-layer noise {s['noise_floor_max_abs']:.0%})",
            "<= 1.03",
            _verdict(s["target_met_geomean"]),
        )
    ]


def _chunking(r: dict[str, Any]) -> list[Row]:
    rows, shape, target = r["rows"], r["shape"], r["target"]
    ours_c = target.get(
        "ours_chunk", max(r["chunk_sizes"])
    )  # older records measured ours at their largest chunk
    ref_c = target.get("reference_chunk", max(r["chunk_sizes"]))
    ours, theirs, none = rows[f"ours c={ours_c}"], rows[f"transformers c={ref_c}"], rows["unchunked"]
    model = (
        "BERT-base-shaped"
        if shape["layers"] == 12
        else f"tiny BERT ({shape['layers']} layers, C={shape['hidden']})"
    )
    return [
        (
            f"{model} inference {shape['batch']}x{shape['seq']}: peak MiB unchunked -> transformers "
            f"c={ref_c} -> ours c={ours_c}; time / unchunked",
            f"{none['peak_mib']:.5g} -> {theirs['peak_mib']:.5g} -> {ours['peak_mib']:.5g}; "
            f"ours {ours['time_vs_unchunked']:.3f}x (transformers c={ref_c}: "
            f"{theirs['time_vs_unchunked']:.3f}x)",
            "same peak as transformers, <= 1.04x time",
            _verdict(bool(target["met"])),
        )
    ]


def _checkpointing(r: dict[str, Any]) -> list[Row]:
    out = []
    run = r.get("core", r)  # checkpointing_gpu.json holds two runs ("full", "core"); later records one
    rounds = run["command"].split("--rounds ")[1].split()[0]
    for name, m in run["models"].items():
        res = m["results"]
        worst = 0.0
        same_peak = True
        for key, ours in res.items():
            if not key.startswith("ours_") or ours.get("policy") != "full":
                continue
            theirs = res.get("hf_" + key[len("ours_") :])
            if theirs is None:
                continue
            same_peak &= ours["peak_bytes"] == theirs["peak_bytes"]
            worst = max(worst, ours["median_s"] / theirs["median_s"])
        out.append(
            (
                f"checkpointing step, {name} {m['batch']}x{m['seq']}, {rounds} rounds: ours / transformers, "
                "same mode and every_n_layers",
                f"peaks {'identical' if same_peak else 'DIFFER'}; worst time ratio {worst:.3f}",
                "same peak, <= 1.02x",
                _verdict(same_peak and worst <= 1.02),
            )
        )
    return out


def _checkpointing_front(r: dict[str, Any]) -> list[Row]:
    """Per model and per transformers point: the cheapest contender that dominates it, or "none" and why."""
    out: list[Row] = []
    for name, m in r["models"].items():
        res = m["results"]
        shape = f"{name} {m['batch']}x{m['seq']}"
        for tk, d in m["dominance"].items():
            t = res[tk]
            if d["by"] is not None:
                b = res[d["by"]]
                compile_note = (
                    f"; compile {b['compile_s']:.0f} s, {b['compile_s_cold']:.0f} s cold"
                    if "compile_s" in b
                    else ""
                )
                measured = f"dominated by {d['why']}{compile_note}"
            else:
                measured = d["why"]
            out.append(
                (
                    f"checkpointing front, {shape}: {t['label']} ({t['mem_ratio']:.3f} mem, "
                    f"{t['time_ratio']:.2f}x)",
                    measured,
                    "a contender with no more memory and no more time",
                    _verdict(d["by"] is not None),
                )
            )
        for sk, d in m["selective_vs_budget"].items():
            note = ", beyond the sweep's memory range" if d["extrapolated"] else ""
            out.append(
                (
                    f"checkpointing front, {shape}: {res[sk]['label']}, time / budget sweep's at equal "
                    f"memory",
                    f"{d['time_vs_budget']:.3f} ({res[sk]['mem_ratio']:.3f} mem at "
                    f"{res[sk]['time_ratio']:.2f}x; sweep {d['budget_time_ratio']:.2f}x{note})",
                    "<= 1.05",
                    _verdict(d["time_vs_budget"] <= 1.05),
                )
            )
    for name, why in r.get("not_measured", {}).items():
        out.append((f"checkpointing front, {name}", f"not measured: {why}", "measured", "**no**"))
    return out


def _rope(r: dict[str, Any]) -> list[Row]:
    return [
        (
            f"rotary cos/sin + apply to q, k ({r['shape']['tokens']} tokens, "
            f"{r['shape']['heads']}x{r['shape']['head_dim']}): "
            "ours / transformers",
            f"{r['ratio_ours_over_transformers']:.3f} (ours vs itself: "
            f"{r['ratio_ours_again_over_ours']:.3f})",
            f"<= {r['target_ratio_at_most']}",
            _verdict(r["within_target"]),
        )
    ]


def _attention(r: dict[str, Any]) -> list[Row]:
    ratios = r["ratios"]
    s = r["shape"]
    return [
        (
            f"eager attention {s['tokens']} tokens, {s['heads']}x{s['head_dim']}: ours / transformers' eager",
            f"{ratios['ours_eager / transformers_eager']:.3f} (sdpa / eager: "
            f"{ratios['transformers_sdpa / transformers_eager']:.3f})",
            "<= 1.05",
            _verdict(r["meets_target"]),
        )
    ]


def _pruning(r: dict[str, Any]) -> list[Row]:
    out = []
    for name, m in r["models"].items():
        rows = m["rows"]
        exact = all(row["parameters"] == row["parameters_predicted"] for row in rows)
        ratios = ", ".join(
            f"{row['fraction_pruned']:.0%}: {row['parameters'] / rows[0]['parameters']:.3f} params, "
            f"{row['forward_ratio']:.2f} time (ideal {row['forward_ratio_predicted']:.2f})"
            for row in rows[1:]
        )
        out.append(
            (
                f"head pruning, {name}, {m['batch']}x{m['tokens']} tokens: parameters and forward time after "
                "pruning",
                ratios,
                "parameters = prediction; time reported beside the FLOP-proportional ideal",
                _verdict(exact),
            )
        )
    return out


def _distributed(r: dict[str, Any]) -> list[Row]:
    rows = {row["scenario"]["name"]: row["per_rank"] for row in r["scenarios"]}
    n, layers = r["world_size"], r["spec"]["num_layers"]
    where = f"{r['world_size']} {r['backend']} ranks, Llama L={layers} C={r['spec']['hidden_size']}"
    none, call, fwd = (
        rows["FSDP2, no checkpointing"],
        rows["FSDP2, checkpoint wraps __call__"],
        rows["FSDP2, checkpoint wraps forward"],
    )
    fixes = [name for name in rows if name.startswith("DDP, ") and "no checkpointing" not in name]
    failed = [name for name in fixes if rows[name][0]["error"]]
    worked = [rows[name][0] for name in fixes if not rows[name][0]["error"]]
    shard_ok = all(rank["param_bytes"] == r["predicted"]["param_bytes_per_rank_fsdp"] for rank in none)
    return [
        (
            f"FSDP2 checkpointing, {where}: hook calls / all-gathers per step, __call__ vs forward",
            f"{call[0]['hook_calls']} / {call[0]['all_gathers']} vs "
            f"{fwd[0]['hook_calls']} / {fwd[0]['all_gathers']}",
            "forward: hooks once per layer (L)",
            _verdict(fwd[0]["hook_calls"] == layers and call[0]["hook_calls"] == 2 * layers),
        ),
        (
            f"FSDP2 per-rank memory, {where}: parameters held; exact step peak KiB, none -> checkpointed",
            f"{none[0]['param_bytes'] / 1024:.1f} KiB (1/{n}); {none[0]['peak_bytes'] / 1024:.1f} -> "
            f"{fwd[0]['peak_bytes'] / 1024:.1f}",
            "parameters = ceil(rows / N) prediction; peak lower with checkpointing",
            _verdict(shard_ok and fwd[0]["peak_bytes"] < none[0]["peak_bytes"]),
        ),
        (
            f"DDP + checkpointing, {where}: configurations that fail / run (max grad gap to one process)",
            f"{len(failed)} fail ({'; '.join(failed)}) / {len(worked)} run "
            f"({max(w['max_grad_diff'] for w in worked):.1e})",
            "only reentrant + find_unused_parameters fails; grads within 1e-6",
            _verdict(
                failed == ["DDP, reentrant + find_unused_parameters"]
                and max(w["max_grad_diff"] for w in worked) <= 1e-6
            ),
        ),
    ]


EXTRACTORS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "conv1d": _conv1d,
    "chunking": _chunking,
    "checkpointing": _checkpointing,
    "checkpointing_front": _checkpointing_front,
    "rope": _rope,
    "attention": _attention,
    "pruning": _pruning,
    "distributed": _distributed,
}


def extractor_for(stem: str) -> Callable[[dict[str, Any]], list[Row]] | None:
    """The extractor whose key is the longest prefix of `stem` ending at an underscore (or all of it)."""
    for key in sorted(EXTRACTORS, key=len, reverse=True):
        if stem == key or stem.startswith(key + "_"):
            return EXTRACTORS[key]
    return None


def table() -> str:
    lines = [
        "| record | what | measured | target | met | measured on |",
        "|---|---|---|---|---|---|",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        extract = extractor_for(path.stem)
        record = json.loads(path.read_text())
        if extract is None:
            lines.append(f"| `{path.name}` | see its own page | | | | {_on(record)} |")
            continue
        for what, measured, target, met in extract(record):
            lines.append(f"| `{path.name}` | {what} | {measured} | {target} | {met} | {_on(record)} |")
    return "\n".join(lines)


def render_readme(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the table in benchmarks/README.md")
    args = parser.parse_args()
    if args.write:
        README.write_text(render_readme(README.read_text()))
    else:
        print(table())


if __name__ == "__main__":
    main()
