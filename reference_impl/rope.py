r"""Rotary position embeddings (RoPE): the rotary module, the rotation itself, and run-time rescaling.

Mirrors transformers.models.llama.modeling_llama (`LlamaRotaryEmbedding`, `rotate_half`,
`apply_rotary_pos_emb`) and transformers.modeling_rope_utils (`dynamic_rope_update`, `ROPE_INIT_FUNCTIONS`),
transformers 5.22, checked against 4.57 too. Taught in lessons/04_rope_scaling_plots.ipynb. The init functions
(one per scaling rule, with their formulas) live in `reference_impl.rope_init` and are re-exported here.

RoPE (Su et al. 2021, arXiv:2104.09864) turns each pair of a query or key at position m by the angle m·θ_i,
θ_i = b^(-2i/d). A rotation R_m keeps norms, and <R_m q, R_n k> = <q, R_(n−m) k> depends only on n − m: the
attention score sees relative positions. transformers pairs dimension i with i + d/2 ("rotate half", the
GPT-NeoX layout), not 2i with 2i + 1 (the interleaved GPT-J / original Meta layout):

    q_rot = q · cos(mθ) + rotate_half(q) · sin(mθ),   rotate_half([x1, x2]) = [−x2, x1]

with cos/sin of shape (B, T, d), each frequency appearing twice (`cat(freqs, freqs)`).

# NOTE [ Where the run-time state lives ]
# `dynamic_rope_update` must decorate transformers' own rotary modules too (a drop-in promise), so it reads
# and writes the attributes they have, under their names: `rope_type` (a dict keyed by layer type in Gemma 3),
# `inv_freq`, `original_inv_freq`, `max_seq_len_cached`, `original_max_seq_len`, `attention_scaling`,
# `config`, and, for the layer type passed as `forward(x, position_ids, layer_type)`, the same names prefixed
# with `"{layer_type}_"`. `RotaryEmbedding.rope_state` is a printable snapshot of those attributes (a
# `RopeState`) plus the last decision, so the state still reads in one place; the decorator does not need it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from reference_impl.rope_init import (
    REQUIRED_KEYS,
    ROPE_INIT_FUNCTIONS,
    RopeConfig,
    get_rope_init_function,
    read_rope_config,
)

__all__ = [
    "REQUIRED_KEYS",
    "ROPE_INIT_FUNCTIONS",
    "RopeConfig",
    "RopeState",
    "RotaryEmbedding",
    "apply_rotary_pos_emb",
    "dynamic_rope_update",
    "get_rope_init_function",
    "read_rope_config",
    "rotate_half",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class RopeState:
    """A snapshot of what `dynamic_rope_update` decides from, and what it did last
    (`RotaryEmbedding.rope_state`).

    Attributes:
        rope_type: the config's rope type; only "dynamic" (any type containing it) and "longrope" ever change.
        original_max_seq_len: L_max, `config.max_position_embeddings`; dynamic NTK resets below it.
        max_seq_len_cached: the length the live `inv_freq` was computed for (dynamic NTK); starts at L_max.
        original_max_position_embeddings: L0; LongRoPE uses its long factors above it.
        attention_scaling: the factor cos and sin are multiplied by (scores by its square).
        last_update: what the last call did: "init", "keep", "grow", "reset" (dynamic), "short" or "long"
            (longrope).
    """

    rope_type: str
    original_max_seq_len: int
    max_seq_len_cached: int
    original_max_position_embeddings: int
    attention_scaling: float
    last_update: str = "init"


def _config_layer_type(module: nn.Module, layer_type: str | None) -> str | None:
    """Which entry of a per-layer-type config to read: the call's layer type, else the one the module was
    built for."""
    return layer_type if layer_type is not None else getattr(module, "layer_type", None)


def _dynamic_update(
    module: nn.Module, seq_len: torch.Tensor, device: torch.device, layer_type: str | None = None
) -> str:
    """Dynamic NTK: grow past the cached length, keep in between, reset to the original base below L_max."""
    # Read by attribute (transformers' names): torch's stubs type a Module's attribute `Tensor | Module`.
    rotary: Any = module
    prefix = "" if layer_type is None else f"{layer_type}_"  # transformers' per-layer-type attribute names
    rope_type = rotary.rope_type if layer_type is None else rotary.rope_type[layer_type]
    cached = getattr(rotary, f"{prefix}max_seq_len_cached", rotary.max_seq_len_cached)
    if seq_len > cached:  # growth: recompute the base for this longer length
        init_fn = get_rope_init_function(rope_type)
        inv_freq, attention_scaling = init_fn(
            rotary.config, device, seq_len=seq_len, layer_type=_config_layer_type(rotary, layer_type)
        )
        rotary.register_buffer(f"{prefix}inv_freq", inv_freq, persistent=False)
        setattr(rotary, f"{prefix}attention_scaling", attention_scaling)
        setattr(rotary, f"{prefix}max_seq_len_cached", int(seq_len))
        return "grow"
    if seq_len < rotary.original_max_seq_len < cached:  # reset: short inputs get plain RoPE back
        # .to(device): the buffer followed a `model.to(...)`, a plain-attribute copy would not have
        original_inv_freq = getattr(rotary, f"{prefix}original_inv_freq").to(device)
        rotary.register_buffer(f"{prefix}inv_freq", original_inv_freq, persistent=False)
        setattr(rotary, f"{prefix}original_inv_freq", original_inv_freq)
        setattr(rotary, f"{prefix}max_seq_len_cached", rotary.original_max_seq_len)
        return "reset"
    return "keep"


def _longrope_update(
    module: nn.Module, seq_len: torch.Tensor, device: torch.device, layer_type: str | None = None
) -> str:
    """LongRoPE: the long factors above L0, the short ones otherwise (the attention factor never changes)."""
    prefix = "" if layer_type is None else f"{layer_type}_"
    config_layer_type = _config_layer_type(module, layer_type)
    L0 = read_rope_config(module.config, config_layer_type).original_max_position_embeddings
    long_inv_freq = getattr(module, f"{prefix}long_inv_freq", None)
    if long_inv_freq is None:  # computed once, on first use, as transformers does
        long_inv_freq, _ = get_rope_init_function("longrope")(
            module.config, device, seq_len=L0 + 1, layer_type=config_layer_type
        )
    long_inv_freq = long_inv_freq.to(device)
    original_inv_freq = getattr(module, f"{prefix}original_inv_freq").to(device)
    setattr(module, f"{prefix}long_inv_freq", long_inv_freq)
    use_long = seq_len > L0  # a 0-d bool tensor: one set for all positions
    inv_freq = torch.where(use_long, long_inv_freq, original_inv_freq)
    module.register_buffer(f"{prefix}inv_freq", inv_freq, persistent=False)
    return "long" if use_long else "short"


def dynamic_rope_update(rope_forward: F) -> F:
    """Decorate `forward(self, x, position_ids[, layer_type])` of a rotary module so its frequencies follow
    the input.

    Before each call, with seq_len = max(position_ids) + 1:
      - "dynamic" types: if seq_len > max_seq_len_cached, recompute `inv_freq` for seq_len (grow); else if
        seq_len < L_max while the cache is larger, restore the original `inv_freq` (reset); otherwise keep.
        So growth is monotone until the input drops *below* L_max. Keys already in a KV cache keep the base
        they were rotated with (transformers issue #25104), exactly as in transformers.
      - "longrope": `long_inv_freq` if seq_len > L0, else the short `original_inv_freq`.
      - any other type: nothing.

    Works on any module written the transformers way (see NOTE [ Where the run-time state lives ]): ours,
    `LlamaRotaryEmbedding`, and per-layer-type modules such as Gemma 3's, whose forward takes `layer_type` and
    keeps `{layer_type}_inv_freq` etc. Differences from transformers' decorator, on purpose:
    `max_seq_len_cached` is stored as a Python int (theirs, the 0-d `seq_len` tensor), and a per-layer-type
    growth sets `{layer_type}_attention_scaling` (theirs sets the shared `attention_scaling`, which their
    forward never reads there). A `RotaryEmbedding` also records the decision in `last_update` (see its
    `rope_state`).
    """

    @functools.wraps(rope_forward)
    def wrapper(
        self: nn.Module, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str | None = None
    ) -> Any:
        # A str, or a dict keyed by layer type (Gemma 3); torch's stubs type it `Tensor | Module`.
        rope_types: Any = self.rope_type
        rope_type = rope_types if layer_type is None else rope_types[layer_type]
        kwargs = {} if layer_type is None else {"layer_type": layer_type}
        decision = None
        if "dynamic" in rope_type:
            decision = _dynamic_update(self, torch.max(position_ids) + 1, x.device, layer_type)
        elif rope_type == "longrope":
            decision = _longrope_update(self, torch.max(position_ids) + 1, x.device, layer_type)
        if decision is not None and isinstance(self, RotaryEmbedding):
            self.last_update = decision
        return rope_forward(self, x, position_ids, **kwargs)

    return wrapper  # type: ignore[return-value]


class RotaryEmbedding(nn.Module):
    r"""cos and sin of m·θ_i for every position, computed from any supported config; `LlamaRotaryEmbedding`'s
    twin.

    forward(x, position_ids) -> (cos, sin):
        freqs = position_ids ⊗ inv_freq        (B, T) x (d/2,) -> (B, T, d/2), float32
        emb   = cat(freqs, freqs)               (B, T, d)
        cos, sin = cos(emb)·a, sin(emb)·a       a = attention_scaling, cast to x.dtype

    Args:
        config: a transformers config (5.x `rope_parameters` or 4.x `rope_scaling` + `rope_theta`) or a plain
            dict with config.json's keys (see `reference_impl.rope_init.read_rope_config`).
        device: where to build the frequencies.
        layer_type: which entry of a per-layer-type `rope_parameters` to use (transformers passes it per
            call).
    """

    inv_freq: torch.Tensor
    original_inv_freq: torch.Tensor
    long_inv_freq: torch.Tensor  # LongRoPE only

    def __init__(
        self, config: Any, device: torch.device | str | None = None, layer_type: str | None = None
    ) -> None:
        super().__init__()
        rc: RopeConfig = read_rope_config(config, layer_type)
        self.config = config
        self.layer_type = layer_type
        self.rope_type = rc.rope_type
        inv_freq, attention_scaling = get_rope_init_function(rc.rope_type)(
            config, device, layer_type=layer_type
        )
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)
        if (
            rc.rope_type == "longrope"
        ):  # the long set, chosen above L0 (transformers computes it on first use)
            long_inv_freq, _ = get_rope_init_function("longrope")(
                config, device, seq_len=rc.original_max_position_embeddings + 1, layer_type=layer_type
            )
            self.register_buffer("long_inv_freq", long_inv_freq, persistent=False)
        # transformers' attribute names, which `dynamic_rope_update` reads and writes
        self.attention_scaling = float(attention_scaling)
        self.max_seq_len_cached = rc.max_position_embeddings
        self.original_max_seq_len = rc.max_position_embeddings
        self.original_max_position_embeddings = rc.original_max_position_embeddings
        self.last_update = "init"

    @property
    def rope_state(self) -> RopeState:
        """A snapshot of the run-time state and the last decision, in one printable place."""
        return RopeState(
            rope_type=self.rope_type,
            original_max_seq_len=self.original_max_seq_len,
            max_seq_len_cached=self.max_seq_len_cached,
            original_max_position_embeddings=self.original_max_position_embeddings,
            attention_scaling=float(self.attention_scaling),
            last_update=self.last_update,
        )

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x (any shape; only its dtype and device are used), position_ids (B, T). Returns cos, sin (B,
        T, d)."""
        freqs = position_ids[..., None].float() * self.inv_freq.to(
            device=x.device, dtype=torch.float
        )  # (B, T, d/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, d): pair i and i + d/2 share a frequency
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)

    def extra_repr(self) -> str:
        return f"dim={2 * self.inv_freq.numel()}, state={self.rope_state}"


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [−x2, x1] over the last dim, split in halves: pair i is (x[i], x[i + d/2]).

    Correct (transformers' layout):  rotate_half([1, 2, 3, 4]) = [−3, −4, 1, 2]
    Incorrect (interleaved, GPT-J):  [−2, 1, −4, 3] pairs (x[0], x[1]), (x[2], x[3]); it needs checkpoints
    whose q/k projection rows were permuted for it, so mixing the two layouts silently changes every attention
    score.
    """
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rotate queries and keys: x·cos + rotate_half(x)·sin, on the first d = cos.shape[-1] dims of each head.

    Args:
        q: (B, H, T, D) queries (or (B, T, H, D) with unsqueeze_dim=2).
        k: (B, H_kv, T, D) keys.
        cos, sin: (B, T, d) from `RotaryEmbedding`; d == D for Llama, d < D for partial rotary models.
        unsqueeze_dim: where to insert the heads axis into cos and sin so they broadcast against q and k.

    Returns:
        (q_embed, k_embed), same shapes as q and k. Their dtype follows torch's type promotion of q (or k)
        with cos and sin, exactly as in transformers: `RotaryEmbedding` returns cos and sin in `x.dtype`, so
        float16 or bfloat16 q and k stay in their dtype there, but float16/bfloat16 q and k with float32 cos
        and sin come back in float32 (no cast back is made, here or in transformers).

    When d < D (partial_rotary_factor < 1) the last D − d dims pass through unrotated, as in transformers'
    Phi-3 / GPT-NeoX versions; Llama's version requires d == D.
    """
    cos = cos.unsqueeze(unsqueeze_dim)  # (B, T, d) -> (B, 1, T, d)
    sin = sin.unsqueeze(unsqueeze_dim)
    d = cos.shape[-1]
    if d == q.shape[-1]:
        q_embed = (q * cos) + (rotate_half(q) * sin)
        k_embed = (k * cos) + (rotate_half(k) * sin)
        return q_embed, k_embed
    if d > q.shape[-1]:
        raise ValueError(
            f"cos.shape[-1]={d} is larger than the head dim q.shape[-1]={q.shape[-1]}; expected <="
        )
    q_rot, q_pass = q[..., :d], q[..., d:]
    k_rot, k_pass = k[..., :d], k[..., d:]
    q_embed = torch.cat([(q_rot * cos) + (rotate_half(q_rot) * sin), q_pass], dim=-1)
    k_embed = torch.cat([(k_rot * cos) + (rotate_half(k_rot) * sin), k_pass], dim=-1)
    return q_embed, k_embed
