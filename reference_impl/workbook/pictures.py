r"""Concept pictures shared by the lessons: what lives when under checkpointing, where each projection sits in
a GPT-2 and a Llama block, and chunks over T.

Not a re-implementation of transformers: drawings for lessons/01_checkpointing_tradeoffs.ipynb,
02_conv1d_vs_linear.ipynb and 03_chunking_equivalence.ipynb (and 05, 08, which meet the same blocks). Each
picture is two functions: one that computes what is drawn as plain data (tested in
tests/workbook/test_pictures.py against the thing it depicts: the bytes a checkpointed stack keeps, the module
names of a real GPT-2 and Llama layer, `apply_chunking_to_forward`'s slices), and one that draws that data and
returns the matplotlib Figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "BLOCK_FAMILIES",
    "BlockStep",
    "TimelineStep",
    "block_layout",
    "checkpoint_timeline",
    "chunk_bounds",
    "draw_blocks",
    "draw_checkpoint_timeline",
    "draw_chunks_over_t",
]

# --- the checkpointing timeline -----------------------------------------------------------------------------

#: What a layer holds for backward at one moment of a training step.
NOTHING, INPUT_ONLY, EVERYTHING = 0, 1, 2


@dataclass(frozen=True)
class TimelineStep:
    """One moment of a training step: what runs (`kind`, `layer`) and what each layer holds right after it.

    `held[i]` is NOTHING (0), INPUT_ONLY (1: the layer's input, kept by its checkpoint) or EVERYTHING (2:
    every tensor its backward needs, `per_layer` units in all).
    """

    kind: str  # "forward", "recompute" or "backward"
    layer: int
    held: tuple[int, ...]

    def units(self, per_layer: float) -> float:
        """Units held at this moment, counting a layer's input as 1 and its full activations as
        `per_layer`."""
        return sum(per_layer if h == EVERYTHING else float(h == INPUT_ONLY) for h in self.held)


def checkpoint_timeline(num_layers: int, checkpointed: bool) -> list[TimelineStep]:
    """The moments of one forward + backward through `num_layers` layers, with or without checkpointing each
    layer.

    Without checkpointing, forward step i leaves layer i holding everything until its backward. With it, a
    layer keeps only its input after the forward; just before its backward it runs its forward again (a
    "recompute" step), which brings back everything, and its backward frees it.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers={num_layers} must be at least 1")
    kept = INPUT_ONLY if checkpointed else EVERYTHING
    held = [NOTHING] * num_layers
    steps = []
    for i in range(num_layers):
        held[i] = kept
        steps.append(TimelineStep("forward", i, tuple(held)))
    for i in reversed(range(num_layers)):
        if checkpointed:
            held[i] = EVERYTHING
            steps.append(TimelineStep("recompute", i, tuple(held)))
        held[i] = NOTHING
        steps.append(TimelineStep("backward", i, tuple(held)))
    return steps


def draw_checkpoint_timeline(num_layers: int = 4, per_layer: float = 3.0) -> Any:
    """Two timelines, without and with checkpointing every layer: layers down, moments across, units held
    below.

    Cells are white (nothing held), light (the input only) or dark (everything its backward needs); recompute
    moments are outlined in orange. The bottom row prints the units held, so the two peaks can be read off:
    `per_layer · L` without checkpointing, `L - 1 + per_layer` with it.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    colours = ListedColormap(["white", "#9ecae1", "#08519c"])
    timelines = [checkpoint_timeline(num_layers, c) for c in (False, True)]
    width = len(timelines[1])
    fig, axes = plt.subplots(2, 1, figsize=(9.0, 1.1 + 1.05 * num_layers), sharex=True)
    for ax, steps, title in zip(axes, timelines, ("no checkpointing", "checkpoint every layer"), strict=True):
        grid = [[s.held[i] for s in steps] + [0] * (width - len(steps)) for i in range(num_layers)]
        ax.imshow(grid, cmap=colours, vmin=0, vmax=2, aspect="auto")
        for t, s in enumerate(steps):
            short = {"forward": "F", "recompute": "R", "backward": "B"}[s.kind]
            ax.text(t, -0.75, f"{short}{s.layer}", ha="center", va="bottom", fontsize=8)
            ax.text(t, num_layers - 0.3, f"{s.units(per_layer):g}", ha="center", va="top", fontsize=8)
            if s.kind == "recompute":
                ax.add_patch(Rectangle((t - 0.5, -0.5), 1, num_layers, fill=False, ec="tab:orange", lw=2))
        peak = max(s.units(per_layer) for s in steps)
        ax.set_yticks(range(num_layers), [f"layer {i}" for i in range(num_layers)])
        ax.set_ylim(num_layers + 0.4, -1.0)
        ax.set_xticks([])
        ax.set_ylabel(f"{title}\npeak {peak:g} units", fontsize=9)
        ax.grid(False)
    axes[-1].set_xlabel(
        "moments of one training step: F = forward, R = recompute, B = backward of layer i; "
        "numbers below: units held"
    )
    axes[0].legend(
        handles=[
            Patch(fc="#9ecae1", label="input kept (1 unit)"),
            Patch(fc="#08519c", label=f"everything kept ({per_layer:g} units)"),
            Patch(fc="white", ec="tab:orange", lw=2, label="recompute"),
        ],
        loc="upper right",
        fontsize=8,
        ncol=3,
        bbox_to_anchor=(1.0, 1.45),
    )
    fig.tight_layout()
    return fig


# --- where the projections sit in a block -------------------------------------------------------------------


@dataclass(frozen=True)
class BlockStep:
    """One box of a block diagram: the module's name inside the layer (or "" for an op), what it does, its
    shape."""

    name: str
    role: str
    shape: str
    projection: bool


#: The two block families drawn, by the name transformers gives the layer class.
BLOCK_FAMILIES = ("GPT2Block", "LlamaDecoderLayer")

_LAYOUTS: dict[str, tuple[BlockStep, ...]] = {
    "GPT2Block": (
        BlockStep("ln_1", "LayerNorm", "", False),
        BlockStep("attn.c_attn", "q, k, v fused (Conv1D)", "C -> 3C", True),
        BlockStep("", "attention over S keys", "(B, H, T, D)", False),
        BlockStep("attn.c_proj", "attention output (Conv1D)", "C -> C", True),
        BlockStep("", "+ residual", "", False),
        BlockStep("ln_2", "LayerNorm", "", False),
        BlockStep("mlp.c_fc", "MLP up (Conv1D)", "C -> 4C", True),
        BlockStep("", "GELU", "", False),
        BlockStep("mlp.c_proj", "MLP down (Conv1D)", "4C -> C", True),
        BlockStep("", "+ residual", "", False),
    ),
    "LlamaDecoderLayer": (
        BlockStep("input_layernorm", "RMSNorm", "", False),
        BlockStep("self_attn.q_proj", "queries (Linear)", "C -> H·D", True),
        BlockStep("self_attn.k_proj", "keys (Linear)", "C -> H_kv·D", True),
        BlockStep("self_attn.v_proj", "values (Linear)", "C -> H_kv·D", True),
        BlockStep("", "RoPE on q, k; attention", "(B, H, T, D)", False),
        BlockStep("self_attn.o_proj", "attention output (Linear)", "H·D -> C", True),
        BlockStep("", "+ residual", "", False),
        BlockStep("post_attention_layernorm", "RMSNorm", "", False),
        BlockStep("mlp.gate_proj", "MLP gate (Linear)", "C -> I", True),
        BlockStep("mlp.up_proj", "MLP up (Linear)", "C -> I", True),
        BlockStep("", "SiLU(gate) * up", "", False),
        BlockStep("mlp.down_proj", "MLP down (Linear)", "I -> C", True),
        BlockStep("", "+ residual", "", False),
    ),
}


def block_layout(family: str) -> tuple[BlockStep, ...]:
    """The boxes of a `GPT2Block` or `LlamaDecoderLayer`, top to bottom, as the layer's forward calls them."""
    if family not in _LAYOUTS:
        raise KeyError(f"family={family!r} is not drawn; expected one of {list(BLOCK_FAMILIES)}")
    return _LAYOUTS[family]


def draw_blocks() -> Any:
    """A GPT-2 block beside a Llama block, each projection a coloured box named as in the state dict.

    GPT-2's four projections are `Conv1D` (weight stored in × out, lesson 02); Llama's seven are `nn.Linear`
    (out × in). Head pruning (lesson 05) cuts the columns of `c_attn`/q, k, v that belong to a head and the
    rows of `c_proj`/`o_proj` that read it; chunking (lesson 03) cuts the MLP along T.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    rows = max(len(v) for v in _LAYOUTS.values())
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 0.5 * rows + 0.8))
    titles = {
        "GPT2Block": "GPT-2 block (Conv1D: weight is in × out)",
        "LlamaDecoderLayer": "Llama block (nn.Linear: out × in)",
    }
    for ax, family in zip(axes, BLOCK_FAMILIES, strict=True):
        steps = block_layout(family)
        for row, step in enumerate(steps):
            y = rows - row
            face = "#fdd0a2" if step.projection else "#f0f0f0"
            ax.add_patch(
                FancyBboxPatch((0.05, y - 0.38), 0.9, 0.76, boxstyle="round,pad=0.02", fc=face, ec="gray")
            )
            label = f"{step.name}: {step.role}" if step.name else step.role
            ax.text(0.08, y, label, va="center", fontsize=8.5, family="monospace" if step.name else None)
            if step.shape:
                ax.text(0.92, y, step.shape, va="center", ha="right", fontsize=8.5)
            if row:
                ax.annotate(
                    "", (0.5, y + 0.38), (0.5, y + 0.62), arrowprops={"arrowstyle": "->", "color": "gray"}
                )
        ax.set_xlim(0, 1)
        ax.set_ylim(rows - len(steps) + 0.4, rows + 0.6)
        ax.set_title(titles[family], fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return fig


# --- chunks over T ------------------------------------------------------------------------------------------


def chunk_bounds(length: int, chunk_size: int) -> list[tuple[int, int]]:
    """The `(start, stop)` of each chunk `apply_chunking_to_forward` makes along a dimension of `length`."""
    if chunk_size < 1 or length % chunk_size:
        raise ValueError(f"chunk_size={chunk_size} must be a positive divisor of length={length}")
    return [(k, k + chunk_size) for k in range(0, length, chunk_size)]


def draw_chunks_over_t(T: int = 12, chunk_size: int = 4, current: int = 1) -> Any:
    """The hidden state `(T, C)` cut into chunks along T, the FFN's `4C` hidden layer alive for one chunk
    only.

    Top: the input, one column per position, coloured by chunk. Middle: the `4C`-wide hidden layer, drawn only
    for chunk `current` (the others are done, or not started). Bottom: the outputs glued along T.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    bounds = chunk_bounds(T, chunk_size)
    if not 0 <= current < len(bounds):
        raise ValueError(
            f"current={current} must name one of the {len(bounds)} chunks (0..{len(bounds) - 1})"
        )
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(8.0, 3.2))
    for k, (start, stop) in enumerate(bounds):
        colour = cmap(k)
        for t in range(start, stop):
            ax.add_patch(Rectangle((t, 5.2), 0.9, 1.0, fc=colour, alpha=0.6))  # input (T, C)
            done = k <= current
            ax.add_patch(Rectangle((t, 0.0), 0.9, 1.0, fc=colour if done else "white", ec=colour, alpha=0.6))
        if k == current:
            ax.add_patch(Rectangle((start, 1.6), stop - start - 0.1, 3.0, fc=colour, alpha=0.35))
            ax.text(
                (start + stop) / 2,
                3.1,
                "4C hidden\nof this\nchunk only",
                ha="center",
                va="center",
                fontsize=8,
            )
        ax.text((start + stop) / 2 - 0.05, 6.5, f"chunk {k}", ha="center", fontsize=8)
    ax.text(-0.3, 5.7, "input (T, C)", ha="right", va="center", fontsize=9)
    ax.text(-0.3, 3.1, "FFN (4C wide)", ha="right", va="center", fontsize=9)
    ax.text(-0.3, 0.5, "output, glued", ha="right", va="center", fontsize=9)
    ax.set_xlim(-4.0, T + 0.2)
    ax.set_ylim(-0.9, 7.2)
    ax.set_xticks([t + 0.45 for t in range(T)], [str(t) for t in range(T)], fontsize=7)
    ax.set_xlabel(f"position t along T (T = {T}, chunk size {chunk_size})")
    ax.set_yticks([])
    ax.grid(False)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig
