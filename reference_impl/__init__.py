"""reference_impl: from-scratch re-implementations of the custom layers and utilities inside transformers.

Every public name is the one transformers uses, so `from transformers.pytorch_utils import Conv1D` can be swapped
for `from reference_impl import Conv1D` and the two read side by side. Names are imported lazily (on first use),
so `import reference_impl` stays fast and a lesson only pays for the component it teaches.

Where each name lives, and the transformers module it mirrors, is the table `_EXPORTS` below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module of reference_impl that defines it (mirrored transformers module in the comment)
_EXPORTS: dict[str, str] = {
    # transformers.pytorch_utils
    "Conv1D": "conv1d",
    "conv1d_to_linear": "conv1d",
    "linear_to_conv1d": "conv1d",
    "conv1d_to_nn_conv1d": "conv1d",
    "apply_chunking_to_forward": "chunking",
    "probe_chunking_safety": "chunking",
    "ChunkingProbe": "chunking",
    "prune_linear_layer": "pruning",
    "prune_conv1d_layer": "pruning",
    "prune_layer": "pruning",
    "find_pruneable_heads_and_indices": "pruning",
    "prune_heads": "pruning",
    "reapply_pruned_heads": "pruning",
    "load_pruned_model": "pruning",
    "mask_heads": "pruning",
    "gate_heads": "pruning",
    "select_heads_to_prune": "pruning",
    # transformers.modeling_layers / modeling_utils
    "GradientCheckpointingLayer": "checkpointing",
    "set_gradient_checkpointing": "checkpointing",
    "is_checkpointable_layer": "checkpointing",
    "GatedBlock": "checkpointing",
    "POLICIES": "checkpoint_policies",
    # transformers.modeling_utils (attention registry) and integrations.sdpa_attention
    "AttentionInterface": "attention",
    "ALL_ATTENTION_FUNCTIONS": "attention",
    "eager_attention_forward": "attention",
    "sdpa_attention_forward": "attention",
    "repeat_kv": "attention",
    # ours, beyond transformers: registry base, scoped registration, attention tools
    "GeneralInterface": "registry",
    "scoped_registration": "registry",
    "registered_in_transformers": "attention",
    "checked_attention": "attention",
    "AttentionEntropyRecorder": "attention",
    # transformers.masking_utils
    "AttentionMaskInterface": "masking",
    "ALL_MASK_ATTENTION_FUNCTIONS": "masking",
    "causal_mask_function": "masking",
    "sliding_window_causal_mask_function": "masking",
    "chunked_causal_mask_function": "masking",
    "padding_mask_function": "masking",
    "packed_sequence_mask_function": "masking",
    "and_masks": "masking",
    "or_masks": "masking",
    "sdpa_mask": "masking",
    "eager_mask": "masking",
    "sliding_window_overlay": "masking",
    "chunked_overlay": "masking",
    "mask_picture": "masking",
    # transformers.modeling_rope_utils and models/llama/modeling_llama
    "ROPE_INIT_FUNCTIONS": "rope",
    "dynamic_rope_update": "rope",
    "RotaryEmbedding": "rope",
    "rotate_half": "rope",
    "apply_rotary_pos_emb": "rope",
    "RopeState": "rope",
    "read_rope_config": "rope",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'reference_impl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"reference_impl.{module}"), name)
    globals()[name] = value  # cache: the next lookup is a plain attribute read
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from reference_impl.attention import (
        ALL_ATTENTION_FUNCTIONS,
        AttentionEntropyRecorder,
        AttentionInterface,
        checked_attention,
        eager_attention_forward,
        registered_in_transformers,
        repeat_kv,
        sdpa_attention_forward,
    )
    from reference_impl.checkpoint_policies import POLICIES
    from reference_impl.checkpointing import (
        GatedBlock,
        GradientCheckpointingLayer,
        is_checkpointable_layer,
        set_gradient_checkpointing,
    )
    from reference_impl.chunking import ChunkingProbe, apply_chunking_to_forward, probe_chunking_safety
    from reference_impl.conv1d import Conv1D, conv1d_to_linear, conv1d_to_nn_conv1d, linear_to_conv1d
    from reference_impl.masking import (
        ALL_MASK_ATTENTION_FUNCTIONS,
        AttentionMaskInterface,
        and_masks,
        causal_mask_function,
        chunked_causal_mask_function,
        chunked_overlay,
        eager_mask,
        mask_picture,
        or_masks,
        packed_sequence_mask_function,
        padding_mask_function,
        sdpa_mask,
        sliding_window_causal_mask_function,
        sliding_window_overlay,
    )
    from reference_impl.pruning import (
        find_pruneable_heads_and_indices,
        gate_heads,
        load_pruned_model,
        mask_heads,
        prune_conv1d_layer,
        prune_heads,
        prune_layer,
        prune_linear_layer,
        reapply_pruned_heads,
        select_heads_to_prune,
    )
    from reference_impl.registry import GeneralInterface, scoped_registration
    from reference_impl.rope import (
        ROPE_INIT_FUNCTIONS,
        RopeState,
        RotaryEmbedding,
        apply_rotary_pos_emb,
        dynamic_rope_update,
        read_rope_config,
        rotate_half,
    )
