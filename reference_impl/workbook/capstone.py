r"""The capstone model: a tiny Llama-shaped decoder assembled from every component of `reference_impl`.

Taught in lessons/08_capstone.ipynb. Each part comes from the package, none is retyped here:

    rotary embeddings       reference_impl.rope.RotaryEmbedding (any scaling rule of ROPE_INIT_FUNCTIONS,
                            `dynamic_rope_update` on its forward) and apply_rotary_pos_emb
    attention               reference_impl.attention.ALL_ATTENTION_FUNCTIONS[config.attn_implementation]
    its mask                reference_impl.masking.ALL_MASK_ATTENTION_FUNCTIONS[config.attn_implementation]
    feed-forward            reference_impl.chunking.apply_chunking_to_forward (chunks of positions)
    layers                  reference_impl.checkpointing.GradientCheckpointingLayer, switched on with
                            set_gradient_checkpointing(model, policy=...)
    head pruning            reference_impl.pruning_heads.prune_heads (model_type "llama"), by importance from
                            reference_impl.pruning_importance.head_importance

The parameter names are those of transformers' `LlamaForCausalLM` (`model.layers.0.self_attn.q_proj.weight`,
...), so a state dict loads both ways, and with the same weights the two give the same logits (tests/workbook/
test_capstone.py). Shape letters: B batch, T positions, H heads, D head dim, C hidden, L layers, V vocabulary.

    x -> embed_tokens -> L x [ x + attn(norm(x)),  x + mlp(norm(x)) ] -> norm -> lm_head -> logits (B, T, V)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from reference_impl.attention import ALL_ATTENTION_FUNCTIONS
from reference_impl.checkpointing import GradientCheckpointingLayer
from reference_impl.chunking import apply_chunking_to_forward
from reference_impl.masking import ALL_MASK_ATTENTION_FUNCTIONS, causal_mask_function
from reference_impl.rope import RotaryEmbedding, apply_rotary_pos_emb

__all__ = [
    "CapstoneAttention",
    "CapstoneConfig",
    "CapstoneDecoderLayer",
    "CapstoneForCausalLM",
    "CapstoneMLP",
    "CapstoneModel",
    "RMSNorm",
    "to_llama_config",
]


@dataclass
class CapstoneConfig:
    """The few numbers that size the model, under the names of transformers' `LlamaConfig`.

    `rope_parameters` is read by `RotaryEmbedding` exactly as a transformers 5.x config's would be, e.g.
    `{"rope_type": "yarn", "rope_theta": 100.0, "factor": 4.0, "original_max_position_embeddings": 64}`.
    `attn_implementation` names the attention function and the mask builder (both registries must know it).
    `chunk_size_feed_forward` > 0 runs each layer's feed-forward on that many positions at a time.
    """

    vocab_size: int = 32
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 64
    rope_parameters: dict[str, Any] = field(
        default_factory=lambda: {"rope_type": "default", "rope_theta": 100.0}
    )
    rms_norm_eps: float = 1e-6
    attn_implementation: str = "sdpa"
    chunk_size_feed_forward: int = 0
    initializer_range: float = 0.02
    #: The layout the parameters follow; `reference_impl.pruning_heads` reads it.
    model_type: str = "llama"
    #: `{layer: [original head numbers]}` removed so far (kept up to date by `prune_heads`).
    pruned_heads: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.chunk_size_feed_forward < 0:
            raise ValueError(
                f"chunk_size_feed_forward={self.chunk_size_feed_forward} must be >= 0 (0 = no chunks)"
            )

    @property
    def head_dim(self) -> int:
        """D = C / H."""
        return self.hidden_size // self.num_attention_heads

    @property
    def num_key_value_heads(self) -> int:
        """Plain multi-head attention (H_kv = H): every head owns its own keys, so heads prune one by one."""
        return self.num_attention_heads


def to_llama_config(config: CapstoneConfig, **overrides: Any) -> Any:
    """The transformers `LlamaConfig` of the same shape (imports transformers; for proofs and exercises)."""
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        use_cache=False,
    )
    import transformers

    rope = dict(config.rope_parameters)
    if int(transformers.__version__.split(".")[0]) >= 5:
        kwargs["rope_parameters"] = rope
    else:  # 4.x: the scaling dict and the base at top level (None when unscaled)
        kwargs["rope_theta"] = rope.pop("rope_theta", 10_000.0)
        kwargs["rope_scaling"] = rope if rope.get("rope_type", "default") != "default" else None
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


class RMSNorm(nn.Module):
    r"""x / sqrt(mean(x²) + eps) · w, in float32, in the op order of transformers' `LlamaRMSNorm`."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)  # (B, T, C) -> (B, T, 1)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class CapstoneAttention(nn.Module):
    """Multi-head self-attention whose score function is looked up by name at every call.

    `ALL_ATTENTION_FUNCTIONS[config.attn_implementation]`: "sdpa", "eager", or anything registered later (the
    lesson registers its own). Heads can be pruned (`reference_impl.pruning_heads.prune_heads`): the forward
    reads the head count from the projections' shapes (`view(B, T, -1, D)`), so nothing else has to change.
    """

    is_causal = True

    def __init__(self, config: CapstoneConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads  # H held now (fewer after pruning)
        self.scaling = self.head_dim**-0.5
        self.pruned_heads: set[int] = set()
        C, HD = config.hidden_size, config.num_attention_heads * config.head_dim
        self.q_proj = nn.Linear(C, HD, bias=False)
        self.k_proj = nn.Linear(C, HD, bias=False)
        self.v_proj = nn.Linear(C, HD, bias=False)
        self.o_proj = nn.Linear(HD, C, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = hidden_states.shape
        shape = (B, T, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)  # (B, T, C) -> (B, H, T, D)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        cos, sin = position_embeddings  # (B, T, D) each
        query, key = apply_rotary_pos_emb(query, key, cos, sin)  # rotate by position, shapes unchanged

        attention = ALL_ATTENTION_FUNCTIONS[self.config.attn_implementation]
        attn_output, attn_weights = attention(
            self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling
        )  # (B, T, H, D), (B, H, T, S) or None
        attn_output = attn_output.reshape(B, T, -1).contiguous()  # (B, T, H, D) -> (B, T, H·D)
        return self.o_proj(attn_output), attn_weights  # (B, T, C)


class CapstoneMLP(nn.Module):
    """Llama's gated feed-forward: down(silu(gate(x)) · up(x)), position by position."""

    def __init__(self, config: CapstoneConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, C) -> (B, T, I) -> (B, T, C), I = intermediate_size
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class CapstoneDecoderLayer(GradientCheckpointingLayer):
    """x + attn(norm(x)), then x + mlp(norm(x)); checkpointable, its feed-forward chunkable over positions.

    Call it with the hidden states positional (they are the checkpoint's input) and the rest by keyword.
    """

    def __init__(self, config: CapstoneConfig, layer_idx: int) -> None:
        super().__init__()
        self.chunk_size_feed_forward = config.chunk_size_feed_forward
        self.seq_len_dim = 1  # chunk along T: the feed-forward treats every position alone
        self.self_attn = CapstoneAttention(config, layer_idx)
        self.mlp = CapstoneMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def feed_forward_chunk(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """norm then MLP on (B, t, C), t = T or one chunk of it: position-wise, so chunks give the same
        result."""
        return self.mlp(self.post_attention_layernorm(hidden_states))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if position_embeddings is None:
            raise ValueError("position_embeddings=None: pass the (cos, sin) of the model's rotary_emb")
        attn_output, _ = self.self_attn(
            self.input_layernorm(hidden_states), position_embeddings, attention_mask
        )
        hidden_states = hidden_states + attn_output  # (B, T, C)
        ff_output = apply_chunking_to_forward(
            self.feed_forward_chunk, self.chunk_size_feed_forward, self.seq_len_dim, hidden_states
        )
        return hidden_states + ff_output  # (B, T, C)


class CapstoneModel(nn.Module):
    """Embeddings, L decoder layers sharing one rotary embedding and one mask, a final norm."""

    def __init__(self, config: CapstoneConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(CapstoneDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T), attention_mask (B, T) with 1 = real token (None: all real). Returns (B, T, C)."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected (B, T)")
        B, T = input_ids.shape
        hidden_states = self.embed_tokens(input_ids)  # (B, T) -> (B, T, C)
        position_ids = torch.arange(T, device=input_ids.device)[None, :]  # (1, T)
        position_embeddings = self.rotary_emb(hidden_states, position_ids)  # cos, sin: (1, T, D)
        name = self.config.attn_implementation
        if name not in ALL_MASK_ATTENTION_FUNCTIONS:
            # transformers passes attention_mask=None here, and padding (or causality) silently goes; we
            # refuse.
            raise KeyError(
                f"attn_implementation={name!r} has no mask builder; register one under the same name, e.g. "
                f"ALL_MASK_ATTENTION_FUNCTIONS.register({name!r}, eager_mask); registered: "
                f"{sorted(ALL_MASK_ATTENTION_FUNCTIONS)}"
            )
        mask = ALL_MASK_ATTENTION_FUNCTIONS[name](
            batch_size=B,
            q_length=T,
            kv_length=T,
            q_offset=0,
            kv_offset=0,
            mask_function=causal_mask_function,
            attention_mask=attention_mask,
            allow_is_causal_skip=True,
            dtype=hidden_states.dtype,
            config=self.config,
            use_vmap=False,
            device=input_ids.device,
        )  # (B, 1, T, T) or None (causal: the attention function knows)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=mask, position_embeddings=position_embeddings)
        return self.norm(hidden_states)


class CapstoneForCausalLM(nn.Module):
    """`CapstoneModel` plus an untied output projection: input_ids (B, T) -> logits (B, T, V)."""

    def __init__(self, config: CapstoneConfig) -> None:
        super().__init__()
        self.config = config
        self.model = CapstoneModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)

    @property
    def base_model(self) -> CapstoneModel:
        """The model without its head, under transformers' name (`reference_impl.pruning_heads` finds layers
        there)."""
        return self.model

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) for projections and embeddings, as transformers' Llama initialises."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(self.model(input_ids, attention_mask))  # (B, T, C) -> (B, T, V)
