"""The checkpointing front on a GPU: which contender dominates each of transformers' points, and the figure.

Not a re-implementation of anything in transformers: these read a record written by
benchmarks/bench_checkpointing_front.py (`benchmarks/results/checkpointing_front_gpu.json`). Used by that
script, by benchmarks/summarize.py (the generated table) and by the GPU section of
lessons/01_checkpointing_tradeoffs.ipynb.

A record's model entry holds `results`: contender key -> {"group", "label", "mem_ratio", "time_ratio", ...},
both ratios relative to the eager step without checkpointing. A contender *dominates* a point when it needs no
more memory and no more time; the *cheapest* dominating contender is the fastest of them (ties: the smaller
memory).
"""

from __future__ import annotations

import itertools
from typing import Any

__all__ = [
    "GROUPS",
    "dominance",
    "plot_front",
    "selective_vs_budget",
]

#: Group key -> (legend label in words, marker, colour); the order is the legend's.
GROUPS: dict[str, tuple[str, str, str]] = {
    "none": ("no checkpointing (eager)", "*", "black"),
    "transformers_re": ("transformers, reentrant, every k-th layer", "o", "tab:blue"),
    "transformers_nre": ("transformers, non-reentrant, every k-th layer", "s", "tab:cyan"),
    "transformers_offload": ("transformers, offload=True (every layer)", "v", "tab:gray"),
    "ours_eager": ("ours, eager: sqrt(L) segments", "D", "tab:orange"),
    "ours_offload": ("ours, eager: layer inputs to host, side stream", "<", "tab:brown"),
    "save_on_cpu": ("every saved tensor to host (save_on_cpu)", "x", "tab:red"),
    "compiled_budget": ("torch.compile, memory budget sweep", "P", "tab:green"),
    "compiled_ckpt": ("torch.compile + checkpoint every layer", "h", "tab:olive"),
    "compiled_selective": ("torch.compile + our selective policy", "^", "tab:purple"),
}


def _dominates(p: dict[str, Any], t: dict[str, Any]) -> bool:
    return p["mem_ratio"] <= t["mem_ratio"] and p["time_ratio"] <= t["time_ratio"]


def dominance(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each transformers point: the cheapest contender that dominates it, or None and why.

    Contenders are every result that is not transformers' own and not the no-checkpoint step.

    Returns:
        transformers key -> {"by": key or None, "why": words}; "why" names the dominating point's figures, or
        the nearest miss (the fastest contender within the memory, or the leanest one if none gets that low).
    """
    theirs = {k: r for k, r in results.items() if r["group"].startswith("transformers")}
    ours = {
        k: r for k, r in results.items() if not r["group"].startswith("transformers") and r["group"] != "none"
    }
    out: dict[str, dict[str, Any]] = {}
    for tk, t in theirs.items():
        beating = sorted(
            (k for k, p in ours.items() if _dominates(p, t)),
            key=lambda k: (ours[k]["time_ratio"], ours[k]["mem_ratio"]),
        )
        if beating:
            b = ours[beating[0]]
            out[tk] = {
                "by": beating[0],
                "why": f"{b['label']}: {b['mem_ratio']:.3f} mem at {b['time_ratio']:.2f}x "
                f"(against {t['mem_ratio']:.3f} at {t['time_ratio']:.2f}x)",
            }
            continue
        lean_enough = [k for k, p in ours.items() if p["mem_ratio"] <= t["mem_ratio"]]
        if lean_enough:
            k = min(lean_enough, key=lambda k: ours[k]["time_ratio"])
            why = (
                f"none: the fastest contender within {t['mem_ratio']:.3f} mem, {ours[k]['label']}, takes "
                f"{ours[k]['time_ratio']:.2f}x against {t['time_ratio']:.2f}x"
            )
        elif ours:
            k = min(ours, key=lambda k: ours[k]["mem_ratio"])
            why = (
                f"none: no contender gets down to {t['mem_ratio']:.3f} mem; the leanest, {ours[k]['label']}, "
                f"needs {ours[k]['mem_ratio']:.3f}"
            )
        else:
            why = "none: no contender was measured"
        out[tk] = {"by": None, "why": why}
    return out


def selective_vs_budget(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each compiled selective point's time against the budget sweep's time at the same memory.

    The sweep's time at a memory is interpolated linearly between its two neighbouring points in memory; a
    selective point outside the sweep's memory range is compared with the sweep's nearest end
    (`"extrapolated"`).

    Returns:
        selective key -> {"budget_time_ratio", "time_vs_budget", "extrapolated"}.
    """
    sweep = sorted(
        (r["mem_ratio"], r["time_ratio"]) for r in results.values() if r["group"] == "compiled_budget"
    )
    out: dict[str, dict[str, Any]] = {}
    if not sweep:
        return out
    for key, r in results.items():
        if r["group"] != "compiled_selective":
            continue
        m = r["mem_ratio"]
        extrapolated = m < sweep[0][0] or m > sweep[-1][0]
        if m <= sweep[0][0]:
            t = sweep[0][1]
        elif m >= sweep[-1][0]:
            t = sweep[-1][1]
        else:
            (m0, t0), (m1, t1) = next((a, b) for a, b in itertools.pairwise(sweep) if a[0] <= m <= b[0])
            t = t0 if m1 == m0 else t0 + (t1 - t0) * (m - m0) / (m1 - m0)
        out[key] = {
            "budget_time_ratio": t,
            "time_vs_budget": r["time_ratio"] / t,
            "extrapolated": extrapolated,
        }
    return out


def plot_front(
    model: dict[str, Any], title: str | None = None, ax: Any = None, time_limit: float = 2.6
) -> Any:
    """Draw one model's front: step time against activation peak, both relative to the eager step without
    checkpointing, every contender labelled in words, the budget sweep joined by a line, and the
    one-extra-forward estimate (the lower bound of eager checkpointing of every layer) drawn as a dashed line.

    Points slower than `time_limit` are drawn at the top edge with their time written beside them.

    Args:
        model: one entry of a front record's `"models"`.
        title: the axes' title (default: none).
        ax: a matplotlib Axes to draw on (default: a new figure's).

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(11, 5.5))
    else:
        fig = ax.figure
    results = model["results"]
    for group, (label, marker, colour) in GROUPS.items():
        members = [(k, r) for k, r in results.items() if r["group"] == group]
        if not members:
            continue
        if group == "compiled_budget":
            members.sort(key=lambda kr: kr[1]["mem_ratio"])
        xs = [r["mem_ratio"] for _, r in members]
        ys = [min(r["time_ratio"], time_limit) for _, r in members]
        ax.plot(
            xs,
            ys,
            marker=marker,
            color=colour,
            label=label,
            markersize=9 if group == "none" else 7,
            linestyle="-" if group == "compiled_budget" else "none",
        )
        for (_, r), x, y in zip(members, xs, ys, strict=True):
            note = r.get("short", "")
            if r["time_ratio"] > time_limit:
                note = f"{note} {r['time_ratio']:.1f}x, off the chart".strip()
            if note:
                ax.annotate(note, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=colour)
    bound = model.get("one_extra_forward_ratio")
    if bound is not None:
        ax.axhline(bound, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            "eager step + one extra forward of every layer",
            (0.02, bound),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(0, 3),
            fontsize=8,
            color="grey",
        )
    ax.axhline(1.0, color="black", linestyle=":", linewidth=0.8)
    ax.set_xlabel("activation peak (fraction of the eager step without checkpointing)")
    ax.set_ylabel("step time (x the eager step without checkpointing)")
    ax.set_ylim(0, time_limit * 1.05)
    ax.set_xlim(0, max(1.05, max(r["mem_ratio"] for r in results.values()) * 1.05))
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
