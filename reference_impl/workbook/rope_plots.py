r"""The figures of the RoPE lesson, and its widget panel: frequencies, bands, score decay, interpolation vs
extrapolation.

Not a re-implementation of transformers: the lesson's drawing code, kept here so it is tested
(tests/workbook/test_rope_plots.py) and the notebook only calls it. Taught in
lessons/04_rope_scaling_plots.ipynb. Every number plotted comes from `reference_impl.rope`'s init functions;
every function that draws takes a matplotlib Axes (or makes a Figure) and returns it, so a test can read back
the lines it drew.

Notation of the lesson: b base, d rotary dim, i pair index, θ_i frequency, s scaling factor, S0 the trained
(original) context, S the current sequence length, Δ = m − n the distance between two positions. (The code of
`reference_impl.rope_init` names S0 `L0`; the workbook keeps the letter L for layers.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from reference_impl.rope_init import (
    ROPE_INIT_FUNCTIONS,
    llama3_wavelength_bands,
    read_rope_config,
    yarn_correction_range,
    yarn_ramp,
)

__all__ = [
    "RULE_NAMES",
    "SCALING_TYPES",
    "RopePanel",
    "attention_score_vs_distance",
    "draw_panel_figure",
    "example_config",
    "fit_and_extrapolate",
    "inverse_frequencies",
    "plot_attention_decay",
    "plot_clock_hands",
    "plot_frequency_ratios",
    "plot_interpolation_vs_extrapolation",
    "plot_llama3_bands",
    "plot_wavelengths",
    "plot_yarn_ramp",
    "rope_panel",
]

#: The rope types the lesson draws, in the order of the legend.
SCALING_TYPES: tuple[str, ...] = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


def example_config(
    rope_type: str,
    factor: float = 4.0,
    *,
    head_dim: int = 128,
    base: float = 10_000.0,
    original_max_position_embeddings: int = 4096,
) -> dict[str, Any]:
    """A plain-dict config for `rope_type`, stretching L0 positions `factor` times (what the plots compare).

    dynamic keeps `max_position_embeddings = L0` (it scales at run time, past L0); yarn, longrope and llama3
    get `max_position_embeddings = factor · L0` as their real configs do. llama3 uses Llama 3.1's bands (1,
    4). LongRoPE's `long_factor` is *illustrative*, a geometric ramp from 1 (fastest pair) to `factor`
    (slowest): the real lists (Phi-3) come from an evolutionary search and are not smooth.
    """
    L0 = original_max_position_embeddings
    params: dict[str, Any] = {"rope_type": rope_type, "rope_theta": base}
    max_pos = L0
    if rope_type != "default":
        params["factor"] = float(factor)
    if rope_type in ("yarn", "longrope", "llama3"):
        params["original_max_position_embeddings"] = L0
        max_pos = int(factor * L0)
    if rope_type == "llama3":
        params.update(low_freq_factor=1.0, high_freq_factor=4.0)
    if rope_type == "longrope":
        n = head_dim // 2
        params["short_factor"] = [1.0] * n
        params["long_factor"] = [float(factor) ** (i / (n - 1)) for i in range(n)]
    return {"head_dim": head_dim, "max_position_embeddings": max_pos, "rope_parameters": params}


def inverse_frequencies(config: Any, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """`ROPE_INIT_FUNCTIONS[type](config, seq_len=seq_len)`: θ' (d/2,) and the attention factor, for any
    config."""
    rope_type = read_rope_config(config).rope_type
    return ROPE_INIT_FUNCTIONS[rope_type](config, seq_len=seq_len)


def attention_score_vs_distance(
    inv_freq: torch.Tensor, distances: torch.Tensor, attention_factor: float = 1.0
) -> torch.Tensor:
    r"""<R_m q, R_0 k> / d for q = k = (1, ..., 1): a² · mean_i cos(m θ_i), the long-distance decay of RoPE.

    Each pair (1, 1) turned by m θ_i has dot product 2 cos(m θ_i) with (1, 1); summing over d/2 pairs and
    dividing by d gives the mean cosine. It is 1 at m = 0 and decays (with ripples) as the fast pairs dephase:
    the RoFormer paper's "long-term decay". Scaling cos and sin by a scales every score by a².

    Args:
        inv_freq: θ (d/2,).
        distances: m (N,), relative positions.
    Returns:
        (N,) float64 scores.
    """
    angles = distances.double()[:, None] * inv_freq.double()[None, :]  # (N, d/2)
    return attention_factor**2 * angles.cos().mean(dim=-1)


def _color(rope_type: str) -> str:
    """One colour per rope type in every figure (matplotlib's cycle, in the order of SCALING_TYPES)."""
    return f"C{SCALING_TYPES.index(rope_type)}"


#: What a legend calls each rope type (the config keys are not words a reader knows).
RULE_NAMES: dict[str, str] = {
    "default": "plain RoPE",
    "linear": "linear (PI)",
    "dynamic": "dynamic NTK",
    "yarn": "YaRN",
    "longrope": "LongRoPE",
    "llama3": "Llama 3",
}


def _legend_label(rope_type: str, attention_factor: float = 1.0) -> str:
    name = RULE_NAMES[rope_type]
    return name if attention_factor == 1.0 else f"{name}, attention factor {attention_factor:.3f}"


def plot_wavelengths(ax: Any, factor: float = 4.0, seq_len: int | None = None, **config_kw: Any) -> Any:
    """Wavelength 2π/θ_i' per pair, one line per scaling type, log scale, with L0 and s·L0 marked."""
    L0 = config_kw.get("original_max_position_embeddings", 4096)
    for rope_type in SCALING_TYPES:
        inv_freq, _ = inverse_frequencies(example_config(rope_type, factor, **config_kw), seq_len)
        ax.plot((2 * math.pi / inv_freq).numpy(), label=_legend_label(rope_type), color=_color(rope_type))
    ax.axhline(L0, color="black", linestyle=":", linewidth=1, label=f"trained length S0 = {L0}")
    ax.axhline(factor * L0, color="gray", linestyle="--", linewidth=1, label=f"s·S0 = {int(factor * L0)}")
    ax.set_yscale("log")
    ax.set_xlabel("pair index i")
    ax.set_ylabel("wavelength 2π/θ (tokens)")
    ax.set_title(f"wavelength per pair, s = {factor:g}")
    ax.legend(fontsize=7)
    return ax


def plot_frequency_ratios(ax: Any, factor: float = 4.0, seq_len: int | None = None, **config_kw: Any) -> Any:
    """θ_i' / θ_i per pair for every scaling type: 1 = untouched (extrapolate), 1/s = interpolated."""
    default, _ = inverse_frequencies(example_config("default", factor, **config_kw))
    for rope_type in SCALING_TYPES[1:]:
        inv_freq, a = inverse_frequencies(example_config(rope_type, factor, **config_kw), seq_len)
        ax.plot((inv_freq / default).numpy(), label=_legend_label(rope_type, a), color=_color(rope_type))
    ax.axhline(1 / factor, color="gray", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("pair index i (fast → slow)")
    ax.set_ylabel("θ'/θ")
    title = f"how each rule scales each frequency, s = {factor:g}"
    ax.set_title(title if seq_len is None else f"{title}, S = {seq_len}")
    ax.legend(fontsize=7)
    return ax


def plot_llama3_bands(ax: Any, config: Any) -> Any:
    """θ'/θ for a llama3 config against the wavelength, with the keep / blend / divide bands shaded."""
    rc = read_rope_config(config)
    default, _ = ROPE_INIT_FUNCTIONS["default"](config)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config)
    wavelen = 2 * math.pi / default
    high_wl, low_wl = llama3_wavelength_bands(rc)
    ax.plot(wavelen.numpy(), (scaled / default).numpy(), "o-", markersize=3, label="θ'/θ")
    ax.axvspan(wavelen.min().item(), high_wl, color="tab:green", alpha=0.15, label="kept: λ < S0/high")
    ax.axvspan(high_wl, low_wl, color="tab:orange", alpha=0.2, label="blended")
    ax.axvspan(low_wl, wavelen.max().item(), color="tab:red", alpha=0.12, label="divided by s: λ > S0/low")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("original wavelength λ = 2π/θ (tokens)")
    ax.set_ylabel("θ'/θ")
    ax.set_title(f"Llama 3: bands at {high_wl:g} and {low_wl:g} tokens")
    ax.legend(fontsize=7)
    return ax


def plot_yarn_ramp(ax: Any, config: Any) -> Any:
    """YaRN's ramp over pair indices (0 keeps θ_i, 1 divides by s) with `low` and `high` marked."""
    rc = read_rope_config(config)
    low, high = yarn_correction_range(rc)
    ramp = yarn_ramp(low, high, rc.dim // 2)
    ax.plot(ramp.numpy(), "o-", markersize=3, label="ramp (1 − w)")
    ax.axvline(low, color="tab:green", linestyle=":", label=f"low = {low}")
    ax.axvline(high, color="tab:red", linestyle=":", label=f"high = {high}")
    ax.set_xlabel("pair index i")
    ax.set_ylabel("share of θ_i/s")
    ax.set_title("YaRN: extrapolate fast pairs, interpolate slow ones")
    ax.legend(fontsize=7)
    return ax


def plot_attention_decay(
    ax: Any,
    factor: float = 4.0,
    length: int = 16384,
    types: tuple[str, ...] = SCALING_TYPES,
    **config_kw: Any,
) -> Any:
    """`attention_score_vs_distance` up to `length` for each type (frequencies as used at that length)."""
    distances = torch.logspace(
        0, math.log10(length), 400
    )  # log-spaced: the decay is over orders of magnitude
    for rope_type in types:
        inv_freq, a = inverse_frequencies(example_config(rope_type, factor, **config_kw), seq_len=length)
        ax.plot(
            distances.numpy(),
            attention_score_vs_distance(inv_freq, distances, a).numpy(),
            label=_legend_label(rope_type, a),
            linewidth=1,
            color=_color(rope_type),
        )
    ax.set_xscale("log")
    ax.set_xlabel("distance Δ = m − n (tokens)")
    ax.set_ylabel("score of q = k = 1, / d")
    ax.set_title(f"long-distance decay, S = {length}")
    ax.legend(fontsize=7)
    return ax


def plot_clock_hands(
    ax: Any,
    inv_freq: torch.Tensor,
    position: int,
    pairs: tuple[int, ...] = (0, 8, 16, 24),
    title: str = "",
) -> Any:
    r"""RoPE pairs as the hands of one clock: pair i's hand points at angle m·θ_i for the token at `position`
    m.

    The fastest pair is the longest hand (a second hand), slower pairs are shorter (minute, hour hands), as on
    a real clock: reading all the hands together tells the position apart, the fast ones between neighbours,
    the slow ones across long distances. Drawing the same position with scaled frequencies shows what a rule
    did: linear scaling slows every hand, YaRN and Llama 3 leave the fast hands where they were.

    Args:
        ax: a matplotlib Axes (drawn as a clock face, no ticks).
        inv_freq: θ (d/2,), as returned by an init function.
        position: m, the token position drawn.
        pairs: which pairs get a hand, fastest first.
        title: the Axes title (e.g. the rule's name).
    Returns:
        `ax`; its lines are the face (first) and then one hand per pair, from the centre to
        (r·cos(mθ_i), r·sin(mθ_i)), labelled "pair i: t turns".
    """
    circle = torch.linspace(0, 2 * math.pi, 200)
    ax.plot(circle.cos().numpy(), circle.sin().numpy(), color="lightgray", linewidth=1)
    for k, i in enumerate(pairs):
        angle = position * float(inv_freq[i])
        radius = 1.0 - 0.6 * k / max(len(pairs) - 1, 1)  # fastest pair = longest hand
        ax.plot(
            [0.0, radius * math.cos(angle)],
            [0.0, radius * math.sin(angle)],
            linewidth=3 - 1.5 * k / max(len(pairs) - 1, 1),
            color=f"C{k}",
            label=f"pair {i}: {angle / (2 * math.pi):.2f} turns",
        )
    ax.set_xlim(-1.15, 1.15)
    ax.set_ylim(-1.15, 1.15)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, -0.42))
    return ax


def _score_basis(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """[cos(sθ_j), sin(sθ_j)] for every position s: the functions a RoPE attention score is a sum of. (N,
    d)"""
    angles = positions.double()[:, None] * inv_freq.double()[None, :]  # (N, d/2)
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def fit_and_extrapolate(
    trained_length: int = 2048,
    head_dim: int = 128,
    base: float = 10_000.0,
    n_points: int = 400,
    seed: int = 0,
) -> dict[str, Any]:
    r"""Position Interpolation's Figure 2: a score bounded on [0, S0] can explode beyond S0, but not between
    integers.

    A RoPE attention score is f(Δ) = Σ_j u_j cos(Δθ_j) + v_j sin(Δθ_j) in the distance Δ (Chen et al. 2023,
    eq. 3, who write a(s)). Fit (u, v) by least squares (a 1e-6 ridge for numerical stability) to `n_points`
    random targets in [−1, 1] at random Δ in [0, S0]; then evaluate it on [S0, 2·S0] (extrapolation: what an
    unscaled model sees past its context) and on a fine grid inside [0, S0] (interpolation: what a model with
    positions divided by 2 sees). The keys keep the names "s_..." and "a_..." of the paper.

    Returns:
        dict with the fitting points ("s_fit", "y_fit"), the curves ("s_inside", "a_inside", "s_beyond",
        "a_beyond"), and "max_inside", "max_beyond" (max |a| on each), all float64 tensors / floats.
    """
    g = torch.Generator().manual_seed(seed)
    L = trained_length
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # θ_j, (d/2,)
    s_fit = torch.sort(torch.rand(n_points, generator=g, dtype=torch.float64) * L).values
    y_fit = torch.rand(n_points, generator=g, dtype=torch.float64) * 2 - 1
    A = _score_basis(s_fit, inv_freq)  # (n_points, d)
    coef = torch.linalg.solve(A.T @ A + 1e-6 * torch.eye(head_dim, dtype=torch.float64), A.T @ y_fit)  # (d,)
    s_inside = torch.linspace(0, L, 4 * L + 1, dtype=torch.float64)  # quarter steps: interpolation
    s_beyond = torch.linspace(L, 2 * L, 4 * L + 1, dtype=torch.float64)  # unseen: extrapolation
    a_inside = _score_basis(s_inside, inv_freq) @ coef
    a_beyond = _score_basis(s_beyond, inv_freq) @ coef
    return {
        "s_fit": s_fit,
        "y_fit": y_fit,
        "s_inside": s_inside,
        "a_inside": a_inside,
        "s_beyond": s_beyond,
        "a_beyond": a_beyond,
        "max_inside": float(a_inside.abs().max()),
        "max_beyond": float(a_beyond.abs().max()),
    }


def plot_interpolation_vs_extrapolation(axes: Any, result: dict[str, Any]) -> Any:
    """Two panels from `fit_and_extrapolate`: the fit on [0, 2L] (extrapolation) and a zoom inside [0, L]."""
    left, right = axes
    L = float(result["s_beyond"][0])
    left.plot(
        result["s_inside"].numpy(), result["a_inside"].numpy(), color="tab:red", linewidth=0.8, label="inside"
    )
    left.plot(
        result["s_beyond"].numpy(),
        result["a_beyond"].numpy(),
        color="tab:purple",
        linewidth=0.8,
        label="beyond",
    )
    left.axvline(L, color="black", linestyle=":", label="trained length")
    left.legend(fontsize=7)
    left.set_title(
        f"max |f|: {result['max_inside']:.1f} inside, {result['max_beyond']:.0f} beyond the trained length"
    )
    left.set_xlabel("distance Δ (tokens)")
    left.set_ylabel("fitted score f(Δ)")
    zoom = result["s_inside"] <= 40
    right.plot(result["s_inside"][zoom].numpy(), result["a_inside"][zoom].numpy(), color="tab:red")
    integers = result["s_inside"][zoom][::4]  # the grid has quarter steps: every 4th point is an integer
    right.plot(
        integers.numpy(),
        result["a_inside"][zoom][::4].numpy(),
        "o",
        markersize=3,
        color="tab:blue",
        label="integer distances",
    )
    right.set_title("inside the trained length: smooth between integers")
    right.legend(fontsize=7)
    right.set_xlabel("distance Δ (tokens)")
    return axes


def draw_panel_figure(rope_type: str = "yarn", factor: float = 4.0, length: int = 16384) -> Any:
    """The widget panel's figure: θ'/θ per pair (left) and the score decay up to `length` (right), ours vs
    default.

    The frequencies are those used at sequence length `length` (it matters for dynamic and longrope).
    """
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    config = example_config(rope_type, factor)
    default, _ = inverse_frequencies(example_config("default", factor))
    inv_freq, a = inverse_frequencies(config, seq_len=length)
    left.plot((inv_freq / default).numpy(), label=_legend_label(rope_type, a), color=_color(rope_type))
    left.axhline(1 / factor, color="gray", linestyle="--", linewidth=1, label="1/s")
    left.set_yscale("log")
    left.set_xlabel("pair index i")
    left.set_ylabel("θ'/θ")
    left.set_title(f"{RULE_NAMES[rope_type]}, s = {factor:g}, S = {length}")
    left.legend(fontsize=7)
    plot_attention_decay(
        right, factor, length, types=("default", rope_type) if rope_type != "default" else ("default",)
    )
    fig.tight_layout()
    return fig


@dataclass
class RopePanel:
    """An ipywidgets panel (type, factor, length) that redraws `draw_panel_figure` whenever a control moves.

    Attributes:
        widget: the panel to display (controls above, plot below).
        controls: {"rope_type": Dropdown, "factor": FloatSlider, "length": IntSlider}.
        output: the Output widget the figure is drawn into.
        figure: the last figure drawn (a test or a lesson reads its lines).
        draws: how many times the figure has been drawn.
    """

    widget: Any
    controls: dict[str, Any]
    output: Any
    figure: Any = None
    draws: int = 0
    history: list[tuple[str, float, int]] = field(default_factory=list)

    def update(self, rope_type: str, factor: float, length: int) -> Any:
        """Redraw for these settings (what the sliders call) and return the new figure."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        if self.figure is not None:
            plt.close(self.figure)
        self.figure = draw_panel_figure(rope_type, factor, length)
        self.draws += 1
        self.history.append((rope_type, factor, length))
        # interactive_output captures what is displayed here into the panel's Output widget
        display(self.figure)
        plt.close(self.figure)
        return self.figure


def rope_panel(rope_type: str = "yarn", factor: float = 4.0, length: int = 16384) -> RopePanel:
    """Build the panel: a Dropdown `rope_type`, a FloatSlider "factor" (1-16) and an IntSlider "length".

    Built with `ipywidgets.interactive_output`, so moving any control calls `RopePanel.update` and replaces
    the image in the Output widget.
    """
    import ipywidgets as widgets

    controls = {
        "rope_type": widgets.Dropdown(options=list(SCALING_TYPES), value=rope_type, description="type"),
        "factor": widgets.FloatSlider(
            value=factor, min=1.0, max=16.0, step=0.5, description="factor", continuous_update=False
        ),
        "length": widgets.IntSlider(
            value=length, min=1024, max=65536, step=1024, description="length", continuous_update=False
        ),
    }
    panel = RopePanel(widget=None, controls=controls, output=None)
    panel.output = widgets.interactive_output(panel.update, controls)
    panel.widget = widgets.VBox([widgets.HBox(list(controls.values())), panel.output])
    return panel
