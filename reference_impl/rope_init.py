r"""RoPE's inverse frequencies and how every long-context scaling rule stretches them.

Mirrors the init functions of transformers.modeling_rope_utils (`ROPE_INIT_FUNCTIONS`, transformers 5.22,
checked against 4.57 too) plus the models' `compute_default_rope_parameters`. Taught in
lessons/04_rope_scaling_plots.ipynb. `reference_impl.rope` re-exports everything a reader needs (`from
reference_impl.rope import ROPE_INIT_FUNCTIONS`).

Notation: b base (`rope_theta`), d rotary dim, i = 0 .. d/2 - 1 the index of a rotated pair, s the scaling
    factor,
L0 the original (pre-training) context, L the current sequence length.

    default     θ_i = b^(-2i/d)                                   (Su et al. 2021, RoFormer, arXiv:2104.09864)
    linear      θ_i / s                             (Chen et al. 2023, Position Interpolation, 2306.15595)
    dynamic     b' = b · (s·L/L_max − (s − 1))^(d/(d−2)),  θ_i = b'^(-2i/d)   (bloc97 / emozilla NTK, 2023)
    yarn        θ_i/s · (1 − w_i) + θ_i · w_i, w_i a ramp over pairs; cos/sin × (0.1 ln s + 1)
                                                                              (Peng et al. 2309.00071)
    longrope    θ_i / λ_i, λ = long_factor if L > L0 else short_factor; × sqrt(1 + ln s / ln L0)
                                                                              (Ding 2402.13753)
    llama3      keep θ_i if 2π/θ_i < L0/high_freq_factor, θ_i/s if > L0/low_freq_factor, blend in between
                                                                              (Llama 3.1)

Every function has the signature `(config, device=None, seq_len=None, layer_type=None) -> (inv_freq,
attention_factor)` with `inv_freq` a float32 tensor of shape (d/2,). The arithmetic follows transformers' op
order, so the results are bitwise equal to theirs.

# NOTE [ Reading a config: v5 `rope_parameters`, v4 `rope_scaling`, plain dicts ]
# `read_rope_config` is the one place a config is read. It accepts
#   - a transformers 5.x config: `config.rope_parameters = {"rope_type", "rope_theta", "factor", ...}`,
#     possibly nested per layer type (`{"full_attention": {...}, "sliding_attention": {...}}`, pick one with
#     `layer_type`);
#   - a transformers 4.x config: `config.rope_scaling = {"rope_type" | "type", "factor", ...}` (None when
#     unscaled) with `config.rope_theta` and `config.partial_rotary_factor` at top level;
#   - a plain dict with the same keys as config.json (`{"head_dim": 128, "max_position_embeddings": 4096,
#     "rope_parameters": {...}}`).
# It never mutates the config (transformers' `standardize_rope_params` does).
# `original_max_position_embeddings` is looked up as transformers 5 standardises it: a top-level attribute
# first (Phi-3 keeps it there), then the rope dict, then `max_position_embeddings`.

# NOTE [ Where we raise and transformers only warns ]
# transformers' `validate_rope` logs a warning for a factor below 1 and for LongRoPE lists of the wrong
# length, then computes anyway: a factor of 0.125 (a typo for 8) silently makes every frequency 8 times
# *faster*, i.e. squeezes the trained positions instead of stretching them, and a wrong-length list fails
# later with a broadcasting error that names no key. Both are always mistakes, so we raise ValueError naming
# the key, its value and what was expected. An odd rotary dim raises ValueError in both (transformers lets
# head_dim <= 4 through for its test fixtures, and rounds an odd *partial* rotary dim up; we refuse both: RoPE
# rotates pairs). Unknown rope types and missing keys raise KeyError, as transformers' registry lookup and key
# check do. The same goes for Llama 3's `low_freq_factor >= high_freq_factor` and YaRN's
# `beta_fast <= beta_slow` (transformers warns, then computes a reversed or empty band), for
# `rope_theta <= 0`, `partial_rotary_factor` outside (0, 1], and for a config whose `rope_parameters` and
# `rope_scaling` / top-level `rope_theta` disagree (see `_rope_dict`). A 0 is a value, never "absent": no
# `a or b or default` chains, so `rope_theta=0` is refused, not replaced by 10000.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "DEFAULT_ROPE_THETA",
    "REQUIRED_KEYS",
    "ROPE_INIT_FUNCTIONS",
    "RopeConfig",
    "get_rope_init_function",
    "read_rope_config",
]

#: transformers' `RotaryEmbeddingConfigMixin.default_theta`: the base when a config names none.
DEFAULT_ROPE_THETA = 10_000.0

#: Keys each rope type needs in its rope dict (transformers' `_validate_<type>_rope_parameters` required keys,
#: less those we fill in: `rope_type`, `rope_theta` and `original_max_position_embeddings`).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor",),
    "longrope": ("short_factor", "long_factor"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
}


@dataclass(frozen=True)
class RopeConfig:
    """Everything an init function reads, resolved from any config format (see `read_rope_config`).

    Attributes:
        rope_type: "default", "linear", "dynamic", "yarn", "longrope" or "llama3".
        base: b, the config's `rope_theta`.
        head_dim: D, the attention head size.
        dim: d = int(head_dim * partial_rotary_factor), the rotated part of each head (even).
        max_position_embeddings: L_max, the config's context length (the scaled one for yarn/longrope/llama3).
        original_max_position_embeddings: L0, the pre-training context.
        params: the rope dict itself (`factor`, `beta_fast`, `long_factor`, ...), unmodified.
        source: where params came from, "rope_parameters" or "rope_scaling", for error messages.
    """

    rope_type: str
    base: float
    head_dim: int
    dim: int
    max_position_embeddings: int
    original_max_position_embeddings: int
    params: Mapping[str, Any]
    source: str

    def key(self, name: str) -> str:
        """How a reader finds `name` in their config, e.g. "rope_parameters['factor']"."""
        return f"{self.source}[{name!r}]"


def _get(config: Any, name: str) -> Any:
    """`config.name` for config objects, `config[name]` for plain dicts; None when absent."""
    if isinstance(config, Mapping):
        return config.get(name)
    return getattr(config, name, None)


def _first_present(*values: Any) -> Any:
    """The first value that is not None: 0 and 0.0 are values here, not "absent" (no `a or b or default`)."""
    return next((v for v in values if v is not None), None)


def _rope_dict(config: Any) -> tuple[Mapping[str, Any], str]:
    """The rope dict and its name: `rope_parameters` (5.x), else `rope_scaling` (4.x, None when unscaled).

    A config carrying both, with `rope_scaling` saying something `rope_parameters` does not, is refused: which
    one wins differs between readers (transformers 5.22 lets `rope_scaling` replace `rope_parameters` when
    both are passed), so any choice would be silently wrong for someone. transformers 5.x config objects
    expose `rope_scaling` as the very same dict, which agrees.
    """
    params, scaling = _get(config, "rope_parameters"), _get(config, "rope_scaling")
    if not params:
        return scaling or {}, "rope_scaling"
    if scaling is not None and scaling is not params:
        norm = {("rope_type" if k == "type" else k): v for k, v in params.items()}
        differ = {
            k: v
            for k, v in scaling.items()
            if ("rope_type" if k == "type" else k) not in norm or norm["rope_type" if k == "type" else k] != v
        }
        if differ:
            raise ValueError(
                f"config has both rope_parameters={dict(params)} and rope_scaling={dict(scaling)}, which "
                f"disagree on {differ}; expected one of the two (rope_parameters in transformers 5.x, "
                f"rope_scaling with a top-level rope_theta in 4.x), or both saying the same"
            )
    return params, "rope_parameters"


def _agreeing(config: Any, params: Mapping[str, Any], source: str, name: str) -> Any:
    """`params[name]` or the top-level `config.name`; refused when both are given and differ."""
    inner, top = params.get(name), _get(config, name)
    if inner is not None and top is not None and inner != top:
        raise ValueError(
            f"{source}[{name!r}]={inner!r} disagrees with the top-level {name}={top!r}; expected one of the "
            f"two, or both equal"
        )
    return _first_present(inner, top)


def read_rope_config(config: Any, layer_type: str | None = None) -> RopeConfig:
    """Resolve a transformers 5.x or 4.x config object, or a plain dict, into a validated `RopeConfig`.

    Raises:
        KeyError: unknown rope type; a key the type requires is missing; no way to find head_dim or L_max.
        ValueError: `rope_parameters` and `rope_scaling` / top-level `rope_theta`, `partial_rotary_factor` or
            `original_max_position_embeddings` that disagree; rope_theta <= 0; partial_rotary_factor outside
            (0, 1]; head_dim <= 0; odd rotary dim; a factor below 1; LongRoPE lists whose length is not d/2;
            Llama 3 low_freq_factor >= high_freq_factor; YaRN beta_fast <= beta_slow.
    """
    params, source = _rope_dict(config)
    if layer_type is not None:
        if layer_type not in params:
            raise KeyError(f"layer_type={layer_type!r} is not a key of {source}; keys: {sorted(params)}")
        params, source = params[layer_type], f"{source}[{layer_type!r}]"
    elif params and all(isinstance(v, Mapping) for v in params.values()):
        raise KeyError(f"{source} is nested per layer type ({sorted(params)}); pass layer_type= to pick one")

    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise KeyError(
            f"{source}['rope_type']={rope_type!r} is not a known rope type; known: "
            f"{sorted(ROPE_INIT_FUNCTIONS)}"
        )
    base = _first_present(_agreeing(config, params, source, "rope_theta"), DEFAULT_ROPE_THETA)
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0:
        raise ValueError(
            f"rope_theta={base!r} (from {source} or the config); expected a base > 0, e.g. 10000.0"
        )
    partial = _first_present(_agreeing(config, params, source, "partial_rotary_factor"), 1.0)
    if isinstance(partial, bool) or not isinstance(partial, (int, float)) or not 0 < partial <= 1:
        raise ValueError(
            f"partial_rotary_factor={partial!r}; expected 0 < partial_rotary_factor <= 1, the share of each "
            f"head's dims that is rotated (1 = all)"
        )

    head_dim = _get(config, "head_dim")
    if head_dim is None:
        hidden, heads = _get(config, "hidden_size"), _get(config, "num_attention_heads")
        if not (hidden and heads):
            raise KeyError(
                f"config has no 'head_dim' and no 'hidden_size'/'num_attention_heads' (got {hidden=}, "
                f"{heads=}); expected one of the two to size the rotary embedding"
            )
        head_dim = hidden // heads
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim < 1:
        raise ValueError(f"head_dim={head_dim!r}; expected a positive int, each head's size")
    dim = int(head_dim * partial)
    if dim % 2 or dim == 0:
        raise ValueError(
            f"rotary dim = int(head_dim={head_dim} * partial_rotary_factor={partial}) = {dim} is "
            f"{'odd; expected an even number' if dim % 2 else 'zero; expected a positive even number'}, "
            f"because RoPE rotates pairs of dimensions"
        )
    max_pos = _get(config, "max_position_embeddings")
    if max_pos is None:
        raise KeyError(
            "config has no 'max_position_embeddings'; expected the model's context length (an int)"
        )
    original = _first_present(_agreeing(config, params, source, "original_max_position_embeddings"), max_pos)
    rc = RopeConfig(rope_type, float(base), int(head_dim), dim, int(max_pos), int(original), params, source)
    _validate(rc)
    return rc


def _validate(rc: RopeConfig) -> None:
    """Required keys present, factor >= 1, ordered Llama 3 / YaRN bands, LongRoPE lists of length d/2.

    See NOTE [ Where we raise and transformers only warns ].
    """
    for name in REQUIRED_KEYS.get(rc.rope_type, ()):
        if name not in rc.params:
            raise KeyError(
                f"{rc.key(name)} is missing; rope_type={rc.rope_type!r} requires "
                f"{list(REQUIRED_KEYS[rc.rope_type])}"
            )
    factor = rc.params.get("factor")
    if factor is not None and factor < 1:
        raise ValueError(
            f"{rc.key('factor')}={factor} is below 1; expected factor >= 1, the ratio of the new context to "
            "the original one (e.g. 8 to stretch 8k positions to 64k, not 1/8). transformers only warns "
            "here."
        )
    if rc.rope_type == "llama3":
        low, high = rc.params["low_freq_factor"], rc.params["high_freq_factor"]
        if not low < high:
            raise ValueError(
                f"{rc.key('low_freq_factor')}={low} >= {rc.key('high_freq_factor')}={high}; expected "
                "low_freq_factor < high_freq_factor (the blend band between them would be empty or "
                "reversed). transformers only warns here."
            )
    if rc.rope_type == "yarn":
        beta_fast, beta_slow = _yarn_betas(rc)
        if not beta_fast > beta_slow:
            raise ValueError(
                f"{rc.key('beta_fast')}={beta_fast} <= {rc.key('beta_slow')}={beta_slow}; expected "
                "beta_fast > beta_slow (defaults 32 and 1): pairs turning more than beta_fast times are "
                "kept, fewer than beta_slow times interpolated. transformers only warns here."
            )
    if rc.rope_type == "longrope":
        for name in ("short_factor", "long_factor"):
            n = len(rc.params[name])
            if n != rc.dim // 2:
                raise ValueError(
                    f"{rc.key(name)} has length {n}; expected dim // 2 = {rc.dim // 2}, one factor per "
                    f"rotated pair (dim = {rc.dim})"
                )


def _pair_exponents(d: int, device: torch.device | str | None) -> torch.Tensor:
    """2i/d for i = 0 .. d/2 - 1, as transformers computes it: an int64 arange cast to float32, then
    divided."""
    return torch.arange(0, d, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / d  # (d/2,)


def _compute_default_rope_parameters(
    config: Any,
    device: torch.device | str | None = None,
    seq_len: int | None = None,
    layer_type: str | None = None,
) -> tuple[torch.Tensor, float]:
    r"""Plain RoPE (RoFormer): θ_i = 1 / b^(2i/d); attention factor 1.

    In transformers 5.x this lives on each model (`LlamaRotaryEmbedding.compute_default_rope_parameters`,
    which ignores `partial_rotary_factor`; Phi-3's and 4.x's honour it, as we do); 4.x had it in the table as
    "default".
    """
    rc = read_rope_config(config, layer_type)
    inv_freq = 1.0 / (rc.base ** _pair_exponents(rc.dim, device))  # (d/2,)
    return inv_freq, 1.0


def _compute_linear_scaling_rope_parameters(
    config: Any,
    device: torch.device | str | None = None,
    seq_len: int | None = None,
    layer_type: str | None = None,
) -> tuple[torch.Tensor, float]:
    r"""Linear scaling, Position Interpolation (Chen et al. 2023; kaiokendev): θ_i' = θ_i / s.

    Position m then turns by m·θ_i/s, exactly as if it were position m/s: the s·L0 new positions are squeezed
    into the L0 the model was trained on. Dividing the frequencies, not multiplying, is the whole trick.
    """
    rc = read_rope_config(config, layer_type)
    inv_freq, attention_factor = _compute_default_rope_parameters(config, device, seq_len, layer_type)
    inv_freq /= rc.params["factor"]
    return inv_freq, attention_factor


def _compute_dynamic_ntk_parameters(
    config: Any,
    device: torch.device | str | None = None,
    seq_len: int | torch.Tensor | None = None,
    layer_type: str | None = None,
) -> tuple[torch.Tensor, float]:
    r"""Dynamic NTK (bloc97, emozilla 2023): b' = b · (s·L/L_max − (s − 1))^(d/(d−2)); θ_i = b'^(-2i/d).

    L = max(seq_len, L_max) with L_max = `max_position_embeddings`, so up to L_max this is plain RoPE, and
    beyond it the base grows with the length: with α = s·L/L_max − (s − 1), the slowest pair i = d/2 − 1 turns
    exactly α times slower (b'^(−(d−2)/d) = b^(−(d−2)/d) / α: that is what the exponent d/(d−2) is for) while
    the fastest (i = 0, θ_0 = 1 whatever the base) stays put. A tensor `seq_len` (what `dynamic_rope_update`
    passes) is kept a tensor, as transformers does, so the base is computed in float32 there and in float64
    for a Python int.
    """
    rc = read_rope_config(config, layer_type)
    b, d, s, L_max = rc.base, rc.dim, rc.params["factor"], rc.max_position_embeddings
    if seq_len is None:
        L: int | torch.Tensor = L_max
    elif isinstance(seq_len, torch.Tensor):
        L = torch.maximum(seq_len, torch.tensor(L_max, dtype=seq_len.dtype, device=seq_len.device))
    else:
        L = max(seq_len, L_max)
    b_new = b * ((s * L / L_max) - (s - 1)) ** (d / (d - 2))
    inv_freq = 1.0 / (b_new ** _pair_exponents(d, device))  # (d/2,)
    return inv_freq, 1.0


def _yarn_mscale(s: float, mscale: float = 1.0) -> float:
    """YaRN's temperature: sqrt(1/t) = 0.1 · mscale · ln s + 1 for s > 1, else 1."""
    if s <= 1:
        return 1.0
    return 0.1 * mscale * math.log(s) + 1.0


def _yarn_betas(rc: RopeConfig) -> tuple[float, float]:
    """(beta_fast, beta_slow), 32 and 1 when absent (None); a given 0 is a value, refused by `_validate`."""
    return _first_present(rc.params.get("beta_fast"), 32), _first_present(rc.params.get("beta_slow"), 1)


def yarn_correction_range(rc: RopeConfig) -> tuple[float, float]:
    r"""The pair indices where YaRN's ramp starts and ends: `(low, high)`.

    The pair that turns r times over L0 positions has index i(r) = d · ln(L0 / (2π r)) / (2 ln b). Pairs
    turning more than β_fast = 32 times are kept (extrapolated), fewer than β_slow = 1 time are interpolated.
    `low` is floored and `high` ceiled unless `truncate=False`, and both are clamped to [0, d − 1] — dimension
    units, while the ramp runs over d/2 pairs: a quirk inherited from the YaRN reference code, kept for
    equality.
    """
    b, d, L0 = rc.base, rc.dim, rc.original_max_position_embeddings
    beta_fast, beta_slow = _yarn_betas(rc)

    def pair_index(rotations: float) -> float:
        return (d * math.log(L0 / (rotations * 2 * math.pi))) / (2 * math.log(b))

    low, high = pair_index(beta_fast), pair_index(beta_slow)
    if rc.params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, d - 1)


def yarn_ramp(low: float, high: float, n_pairs: int) -> torch.Tensor:
    """clamp((i − low) / (high − low), 0, 1) for i = 0 .. n_pairs − 1: 0 keeps θ_i, 1 divides it by s.
    (n_pairs,)"""
    if low == high:
        high += 0.001  # avoid dividing by zero, as transformers does
    return torch.clamp((torch.arange(n_pairs, dtype=torch.float32) - low) / (high - low), 0, 1)


def _compute_yarn_parameters(
    config: Any,
    device: torch.device | str | None = None,
    seq_len: int | None = None,
    layer_type: str | None = None,
) -> tuple[torch.Tensor, float]:
    r"""YaRN, "NTK-by-parts" plus a temperature (Peng et al. 2023, arXiv:2309.00071).

        θ_i' = θ_i / s · (1 − w_i) + θ_i · w_i,  w_i = 1 − ramp_i  (see `yarn_correction_range`, `yarn_ramp`)
        attention_factor = `attention_factor` if given, else mscale(s, mscale) / mscale(s, mscale_all_dim)
        when both are set (DeepSeek), else 0.1 · ln s + 1.

    Fast pairs (many turns within L0) keep their frequency, slow pairs are interpolated like linear scaling, a
    linear ramp joins them. `factor=None` means L_max / L0 (DeepSeek-V3's configs).
    """
    rc = read_rope_config(config, layer_type)
    b, d = rc.base, rc.dim
    s = rc.params["factor"]
    if s is None:
        s = rc.max_position_embeddings / rc.original_max_position_embeddings
    attention_factor = rc.params.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = rc.params.get("mscale"), rc.params.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = float(_yarn_mscale(s, mscale) / _yarn_mscale(s, mscale_all_dim))
        else:
            attention_factor = _yarn_mscale(s)

    pos_freqs = b ** (torch.arange(0, d, 2).to(device=device, dtype=torch.float) / d)  # b^(2i/d), (d/2,)
    theta_extrapolated = 1.0 / pos_freqs  # θ_i, what the model was trained with
    theta_interpolated = 1.0 / (s * pos_freqs)  # θ_i / s, Position Interpolation
    low, high = yarn_correction_range(rc)
    w = 1 - yarn_ramp(low, high, d // 2).to(device=device, dtype=torch.float)  # 1 = keep θ_i, 0 = θ_i / s
    inv_freq = theta_interpolated * (1 - w) + theta_extrapolated * w
    return inv_freq, attention_factor


def _compute_longrope_parameters(
    config: Any,
    device: torch.device | str | None = None,
    seq_len: int | torch.Tensor | None = None,
    layer_type: str | None = None,
) -> tuple[torch.Tensor, float]:
    r"""LongRoPE (Ding et al. 2024, arXiv:2402.13753; Phi-3): θ_i' = 1 / (λ_i · b^(2i/d)).

    λ = `long_factor` when seq_len > L0, else `short_factor` (searched per pair, one list entry per pair).
    attention_factor = `attention_factor` if given, else sqrt(1 + ln s / ln L0) for s > 1 (1 otherwise), with
    s = `factor` if given, else L_max / L0.
    """
    rc = read_rope_config(config, layer_type)
    b, d, L0 = rc.base, rc.dim, rc.original_max_position_embeddings
    s = rc.params.get("factor")
    if s is None:
        s = rc.max_position_embeddings / L0
    attention_factor = rc.params.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if s <= 1.0 else math.sqrt(1 + math.log(s) / math.log(L0))

    use_long = bool(seq_len and seq_len > L0)
    lam = torch.tensor(
        rc.params["long_factor" if use_long else "short_factor"], dtype=torch.float32, device=device
    )
    exponents = torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d  # 2i/d, (d/2,)
    inv_freq = 1.0 / (lam * b**exponents)
    return inv_freq, attention_factor


def llama3_wavelength_bands(rc: RopeConfig) -> tuple[float, float]:
    """Llama 3's two wavelength thresholds `(L0 / high_freq_factor, L0 / low_freq_factor)` (2048, 8192 for
    3.1)."""
    L0 = rc.original_max_position_embeddings
    return L0 / rc.params["high_freq_factor"], L0 / rc.params["low_freq_factor"]


def _compute_llama3_parameters(
    config: Any,
    device: torch.device | str | None = None,
    seq_len: int | None = None,
    layer_type: str | None = None,
) -> tuple[torch.Tensor, float]:
    r"""Llama 3.1's three bands over the wavelength λ_i = 2π / θ_i (Meta 2024):

        λ_i < L0 / high_freq_factor   →  θ_i            (fast pairs: many turns within L0, keep)
        λ_i > L0 / low_freq_factor    →  θ_i / s        (slow pairs: interpolate, as linear scaling)
        otherwise                     →  (1 − γ_i) · θ_i / s + γ_i · θ_i,
                                         γ_i = (L0 / λ_i − low) / (high − low)

    With Llama 3.1's numbers (b = 500000, d = 128, s = 8, low = 1, high = 4, L0 = 8192): 29 pairs kept, 6
    blended, 29 divided by 8. Attention factor 1.
    """
    rc = read_rope_config(config, layer_type)
    inv_freq, attention_factor = _compute_default_rope_parameters(config, device, seq_len, layer_type)
    s, low, high = rc.params["factor"], rc.params["low_freq_factor"], rc.params["high_freq_factor"]
    L0 = rc.original_max_position_embeddings
    high_freq_wavelen, low_freq_wavelen = llama3_wavelength_bands(rc)

    wavelen = 2 * math.pi / inv_freq  # λ_i, (d/2,)
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / s, inv_freq)
    gamma = (L0 / wavelen - low) / (high - low)
    smoothed = (1 - gamma) * inv_freq_llama / s + gamma * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    inv_freq_llama = torch.where(is_medium, smoothed, inv_freq_llama)
    return inv_freq_llama, attention_factor


#: rope type -> init function `(config, device=None, seq_len=None, layer_type=None) -> (inv_freq,
#: attention_factor)`.
#: Unlike transformers 5.x, "default" stays in the table (5.x moved it onto each model).
ROPE_INIT_FUNCTIONS: dict[str, Callable[..., tuple[torch.Tensor, float]]] = {
    "default": _compute_default_rope_parameters,
    "linear": _compute_linear_scaling_rope_parameters,
    "dynamic": _compute_dynamic_ntk_parameters,
    "yarn": _compute_yarn_parameters,
    "longrope": _compute_longrope_parameters,
    "llama3": _compute_llama3_parameters,
}


def get_rope_init_function(rope_type: str) -> Callable[..., tuple[torch.Tensor, float]]:
    """`ROPE_INIT_FUNCTIONS[rope_type]`, with a KeyError that lists the known types."""
    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise KeyError(
            f"rope_type={rope_type!r} is not in ROPE_INIT_FUNCTIONS; known: {sorted(ROPE_INIT_FUNCTIONS)}"
        )
    return ROPE_INIT_FUNCTIONS[rope_type]
