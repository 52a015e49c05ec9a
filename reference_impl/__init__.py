"""reference_impl: from-scratch re-implementations of the custom layers and utilities inside transformers.

Every name in `TRANSFORMERS_NAMES` is the one transformers uses, so `from transformers.pytorch_utils import
Conv1D` can become `from reference_impl import Conv1D` and the two read side by side. `ADDITIONS` lists what
we add beyond transformers (conversions, probes, policies, readable state); the README's package table lists
both.

Each module mirrors one transformers file or concept; the course machinery (lesson set-up, measuring,
self-checks, student copies, the launcher) lives in `reference_impl.workbook`, which imports these modules and
is never imported by them. Everything here is imported eagerly: the components together cost a few
milliseconds after torch itself.
"""

from __future__ import annotations

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
from reference_impl.checkpoint_compiled import (
    HostOffload,
    activation_memory_budget,
    compile_with_memory_budget,
    offload_layer_inputs,
    saved_for_backward,
    selective_checkpoint_kwargs,
)
from reference_impl.checkpoint_policies import POLICIES
from reference_impl.checkpointing import (
    GradientCheckpointingLayer,
    activation_checkpointing_disable,
    activation_checkpointing_enable,
    gradient_checkpointing_disable,
    gradient_checkpointing_enable,
    is_activation_checkpointing,
    is_checkpointable_layer,
    is_gradient_checkpointing,
    set_gradient_checkpointing,
)
from reference_impl.chunking import ChunkingProbe, apply_chunking_to_forward, probe_chunking_safety
from reference_impl.conv1d import Conv1D, conv1d_to_linear, conv1d_to_nn_conv1d, is_conv1d, linear_to_conv1d
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
    prune_conv1d_layer,
    prune_layer,
    prune_linear_layer,
)
from reference_impl.pruning_heads import load_pruned_model, prune_heads, reapply_pruned_heads
from reference_impl.pruning_importance import gate_heads, head_importance, mask_heads, select_heads_to_prune
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

__version__ = "0.1.0"

#: Names transformers uses (4.57.6 or 5.x), each behaving as transformers' does (the oracle tests prove it).
TRANSFORMERS_NAMES: tuple[str, ...] = (
    # transformers.pytorch_utils (prune_conv1d_layer, prune_layer, find_pruneable_heads_and_indices: 4.x only)
    "Conv1D",
    "apply_chunking_to_forward",
    "find_pruneable_heads_and_indices",
    "prune_conv1d_layer",
    "prune_layer",
    "prune_linear_layer",
    # PreTrainedModel.prune_heads (4.x only), as a function of the model
    "prune_heads",
    # transformers.modeling_layers
    "GradientCheckpointingLayer",
    # PreTrainedModel's checkpointing entry points, as functions of the model (activation_*: 5.23+)
    "activation_checkpointing_disable",
    "activation_checkpointing_enable",
    "gradient_checkpointing_disable",
    "gradient_checkpointing_enable",
    "is_activation_checkpointing",
    "is_gradient_checkpointing",
    # transformers.utils.generic
    "GeneralInterface",
    # transformers.modeling_utils, transformers.integrations.sdpa_attention, models' modeling files
    "ALL_ATTENTION_FUNCTIONS",
    "AttentionInterface",
    "eager_attention_forward",
    "repeat_kv",
    "sdpa_attention_forward",
    # transformers.masking_utils
    "ALL_MASK_ATTENTION_FUNCTIONS",
    "AttentionMaskInterface",
    "and_masks",
    "causal_mask_function",
    "chunked_causal_mask_function",
    "eager_mask",
    "or_masks",
    "packed_sequence_mask_function",
    "padding_mask_function",
    "sdpa_mask",
    "sliding_window_causal_mask_function",
    # transformers.modeling_rope_utils and models/llama/modeling_llama
    "ROPE_INIT_FUNCTIONS",
    "apply_rotary_pos_emb",
    "dynamic_rope_update",
    "rotate_half",
)

#: Our additions beyond transformers, each documented in its module and in the README's package table.
ADDITIONS: tuple[str, ...] = (
    # conv1d
    "conv1d_to_linear",
    "conv1d_to_nn_conv1d",
    "is_conv1d",
    "linear_to_conv1d",
    # chunking
    "ChunkingProbe",
    "probe_chunking_safety",
    # checkpointing
    "POLICIES",
    "is_checkpointable_layer",
    "set_gradient_checkpointing",
    # checkpointing under torch.compile, and host offload
    "HostOffload",
    "activation_memory_budget",
    "compile_with_memory_budget",
    "offload_layer_inputs",
    "saved_for_backward",
    "selective_checkpoint_kwargs",
    # pruning
    "gate_heads",
    "head_importance",
    "load_pruned_model",
    "mask_heads",
    "reapply_pruned_heads",
    "select_heads_to_prune",
    # attention and masks
    "AttentionEntropyRecorder",
    "checked_attention",
    "chunked_overlay",
    "mask_picture",
    "registered_in_transformers",
    "scoped_registration",
    "sliding_window_overlay",
    # rope
    "RopeState",
    "RotaryEmbedding",
    "read_rope_config",
)

__all__ = ["__version__", *TRANSFORMERS_NAMES, *ADDITIONS]
