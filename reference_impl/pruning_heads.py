"""Model-level head pruning for GPT-2, BERT and Llama, in transformers 4.x and 5.x, and saving / loading a
pruned model.

Mirrors `PreTrainedModel.prune_heads` with `GPT2Attention.prune_heads` and `BertAttention.prune_heads` of
transformers 4.57.6, which transformers 5 removed (PR #41417). Taught in lessons/05_head_pruning.ipynb. Llama
(transformers never had pruning for it) is our addition, for multi-head attention only (H_kv = H); it also
serves any model laid out like `LlamaForCausalLM` (`base_model.layers[i].self_attn.{q,k,v,o}_proj`,
config.model_type "llama"), such as the capstone's (lessons/08_capstone.ipynb).

    prune_heads(model, {0: [1, 3], 2: [0]})   # heads 1 and 3 of layer 0, head 0 of layer 2, gone for good

Heads are always named by their *original* number, however many were pruned before, as in transformers.

# NOTE [ Where the state lives ]
# Two places, the same ones transformers 4.x used, so a model pruned here and one pruned by 4.x's method
# agree:
# - `attn.pruned_heads` (a set of original head numbers) on each layer's attention module: `block.attn`
#   (GPT2Attention), `layer.attention` (BertAttention) or `layer.self_attn` (LlamaAttention). 5.x has no such
#   attribute; we add it.
# - `model.config.pruned_heads` ({layer: sorted list of heads}), which `save_pretrained` writes to config.json
#   (JSON turns the keys into strings; we read both).
# The head counts the forward pass uses are updated in place: GPT-2 `num_heads` and `split_size`, BERT
# `num_attention_heads` and `all_head_size`, Llama `num_heads` where the module has one (transformers' has
# none). All three reshape with `view(..., -1, head_dim)`, so nothing else needs to change.

# NOTE [ Saving and loading a pruned model ]
# transformers 4.x re-applied `config.pruned_heads` when it built a model, so `from_pretrained` just worked.
# transformers 5.x builds the full-size model and then finds checkpoint tensors of the wrong shape. So:
#   model.save_pretrained(path)                        # both lines: config.json records the pruned heads
#   model = load_pruned_model(GPT2LMHeadModel, path)   # both: build, prune from the config, load weights
# `reapply_pruned_heads(model)` is the middle step on its own (a no-op on 4.x, where the constructor did it).

# NOTE [ Pruning every head of a layer ]
# We refuse it with a ValueError before touching the model. transformers 4.x accepted it and then failed deep
# inside attention at the next forward (`view(..., -1, head_dim)` of an empty tensor; issue #17475). A layer
# without attention is a different model (the residual stream passes through); build that one on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from reference_impl.pruning import find_pruneable_heads_and_indices, prune_conv1d_layer, prune_linear_layer

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "attention_modules",
    "head_counts",
    "load_pruned_model",
    "output_projection",
    "prune_heads",
    "pruned_heads_of",
    "reapply_pruned_heads",
]

#: `config.model_type` values `prune_heads` knows how to edit.
SUPPORTED_MODEL_TYPES = ("bert", "gpt2", "llama")

M = TypeVar("M", bound=nn.Module)


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str) or model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model_type={model_type!r} ({type(model).__name__}) is not supported for head pruning; "
            f"supported: {list(SUPPORTED_MODEL_TYPES)} (GPT-2, BERT and Llama-shaped models)"
        )
    return model_type


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every layer: GPT2Attention (`block.attn`), BertAttention
    (`layer.attention`) or LlamaAttention (`layer.self_attn`).

    Works on a bare model (`GPT2Model`, `BertModel`, `LlamaModel`) or one with a head (`GPT2LMHeadModel`,
    `BertForMaskedLM`, `LlamaForCausalLM`), through `model.base_model`. Cross-attention modules are not
    included (and never pruned).
    """
    model_type = _model_type(model)
    # transformers' modules, read by attribute: torch's stubs would type each attribute `Tensor | Module`.
    base: Any = model.base_model
    if model_type == "gpt2":
        return [block.attn for block in base.h]
    if model_type == "llama":
        return [layer.self_attn for layer in base.layers]
    return [layer.attention for layer in base.encoder.layer]


def _heads_and_size(attn: Any) -> tuple[int, int]:
    """(H heads the module holds now, D units per head)."""
    if hasattr(attn, "c_attn"):  # GPT2Attention
        return attn.num_heads, attn.head_dim
    if hasattr(attn, "q_proj"):  # LlamaAttention: the count is the projection's, whatever attributes it keeps
        return attn.q_proj.out_features // attn.head_dim, attn.head_dim
    return attn.self.num_attention_heads, attn.self.attention_head_size  # BertAttention


def output_projection(attn: nn.Module) -> nn.Module:
    """The layer that reads the concatenated head outputs (B, T, H·D): GPT-2 `c_proj`, BERT `output.dense`,
    Llama `o_proj`."""
    module: Any = attn  # read by attribute: torch's stubs type a Module's attribute `Tensor | Module`
    if hasattr(module, "c_attn"):
        return module.c_proj
    return module.o_proj if hasattr(module, "o_proj") else module.output.dense


def head_counts(model: nn.Module) -> list[int]:
    """Heads each layer holds now, e.g. `[4, 2, 3]` after pruning two heads of layer 1 and one of layer 2."""
    return [_heads_and_size(attn)[0] for attn in attention_modules(model)]


def pruned_heads_of(model: nn.Module) -> dict[int, list[int]]:
    """The heads pruned so far, per layer, as recorded on the modules: `{layer: sorted original head
    numbers}`."""
    found: dict[int, list[int]] = {}
    for layer, attn in enumerate(attention_modules(model)):
        pruned: set[int] = getattr(attn, "pruned_heads", set())
        if pruned:
            found[layer] = sorted(pruned)
    return found


def _prune_gpt2_attention(attn: Any, index: torch.Tensor, n_removed: int) -> None:
    # c_attn computes q, k and v side by side: (B, T, C) -> (B, T, 3·H·D); a head owns the same units in each
    # third.
    split = attn.split_size  # H·D
    index_qkv = torch.cat([index, index + split, index + 2 * split])
    attn.c_attn = prune_conv1d_layer(attn.c_attn, index_qkv, dim=1)  # (C, 3·H·D) -> (C, 3·H'·D)
    attn.c_proj = prune_conv1d_layer(attn.c_proj, index, dim=0)  # (H·D, C) -> (H'·D, C)
    attn.num_heads -= n_removed
    attn.split_size = attn.num_heads * attn.head_dim


def _prune_bert_attention(attn: Any, index: torch.Tensor, n_removed: int) -> None:
    attention = attn.self
    attention.query = prune_linear_layer(attention.query, index)  # (H·D, C) -> (H'·D, C)
    attention.key = prune_linear_layer(attention.key, index)
    attention.value = prune_linear_layer(attention.value, index)
    attn.output.dense = prune_linear_layer(attn.output.dense, index, dim=1)  # (C, H·D) -> (C, H'·D)
    attention.num_attention_heads -= n_removed
    attention.all_head_size = attention.num_attention_heads * attention.attention_head_size


def _prune_llama_attention(attn: Any, index: torch.Tensor, n_removed: int) -> None:
    attn.q_proj = prune_linear_layer(attn.q_proj, index)  # (H·D, C) -> (H'·D, C)
    attn.k_proj = prune_linear_layer(attn.k_proj, index)  # H_kv = H: each head owns its own keys and values
    attn.v_proj = prune_linear_layer(attn.v_proj, index)
    attn.o_proj = prune_linear_layer(attn.o_proj, index, dim=1)  # (C, H·D) -> (C, H'·D)
    if hasattr(attn, "num_heads"):
        attn.num_heads -= n_removed


def _check_no_grouped_query(model: nn.Module) -> None:
    """Llama with H_kv < H shares a key/value head among several query heads: no head can go on its own."""
    config: Any = model.config
    n_kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    if n_kv != config.num_attention_heads:
        raise ValueError(
            f"num_key_value_heads={n_kv} != num_attention_heads={config.num_attention_heads}: grouped-query "
            "attention shares each key/value head among several query heads, so heads cannot be pruned one "
            "by one; only plain multi-head attention (num_key_value_heads == num_attention_heads) is "
            "supported"
        )


_PRUNERS = {"gpt2": _prune_gpt2_attention, "bert": _prune_bert_attention, "llama": _prune_llama_attention}


def _config_pruned_heads(config: Any) -> dict[int, list[int]]:
    """`config.pruned_heads` with int keys (JSON makes them strings), or {} when the config has none (5.x)."""
    recorded = getattr(config, "pruned_heads", None) or {}
    return {int(layer): sorted(int(h) for h in heads) for layer, heads in recorded.items()}


def _check_layer(layer: object, n_layers: int) -> None:
    """The one rule for a layer number in `prune_heads`, `mask_heads` and `gate_heads`: an int in [0, L).

    Negative numbers are refused, not counted from the end: `{-1: [0]}` is far more often a bug than a wish.
    """
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"layer {layer!r} must be an integer layer number")
    if not 0 <= layer < n_layers:
        raise IndexError(
            f"layer {layer} does not exist: the model has {n_layers} layers (0 ... {n_layers - 1})"
        )


def _validated(model: nn.Module, heads_to_prune: Mapping[int, Iterable[int]]) -> dict[int, set[int]]:
    """Check every layer and head before anything is changed, so a bad request leaves the model as it was."""
    modules = attention_modules(model)
    if _model_type(model) == "llama":
        _check_no_grouped_query(model)
    config: Any = model.config
    n_original: int = config.num_attention_heads
    plan: dict[int, set[int]] = {}
    for layer, heads in heads_to_prune.items():
        _check_layer(layer, len(modules))
        heads = list(heads)
        for head in heads:
            if isinstance(head, bool) or not isinstance(head, int):
                raise TypeError(f"head {head!r} of layer {layer} must be an integer head number")
            if not 0 <= head < n_original:
                raise IndexError(
                    f"head {head} of layer {layer} does not exist: layers have {n_original} heads (0 ... "
                    f"{n_original - 1})"
                )
        if len(set(heads)) != len(heads):
            twice = sorted({h for h in heads if heads.count(h) > 1})
            raise ValueError(f"heads {heads} for layer {layer} list {twice} more than once")
        already = set(getattr(modules[layer], "pruned_heads", set()))
        if already | set(heads) >= set(range(n_original)):
            raise ValueError(
                f"pruning heads {sorted(heads)} of layer {layer} would leave none of its {n_original} heads "
                f"(already pruned: {sorted(already)}); keep at least one head per layer "
                f"(see NOTE [ Pruning every head of a layer ] in reference_impl/pruning_heads.py)"
            )
        plan[layer] = set(heads)
    return plan


def _refuse_distributed(model: nn.Module) -> None:
    """Raise TypeError for a model wrapped by DDP or sharded by FSDP: its heads must be pruned before
    wrapping.

    `DistributedDataParallel` registered every parameter in its gradient buckets, and `fully_shard` replaced
    them by flat shards (DTensors) spread over the ranks; cutting rows out of them afterwards would leave
    those holding the old parameters. Taught in lessons/07_distributed_checkpointing.ipynb.
    """
    if not torch.distributed.is_available():
        return
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        inner, wrapper = type(model.module), "DistributedDataParallel"
    elif any(isinstance(m, FSDPModule) for m in model.modules()) or any(
        isinstance(p, DTensor) for p in model.parameters()
    ):
        # fully_shard swaps the class for a subclass named FSDP<class>; name the model's own class
        inner = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
        wrapper = "FSDP (fully_shard: FSDPModule / DTensor parameters)"
    else:
        return
    raise TypeError(
        f"prune_heads got a {inner.__name__} wrapped by {wrapper}: its parameters are already bucketed or "
        "sharded across processes, so pruning now would leave the wrapper holding the old ones. "
        "Prune the plain model first, on every rank, then wrap it: prune_heads(model, heads); "
        "model = DistributedDataParallel(model) "
        "(or fully_shard(model))"
    )


def prune_heads(model: nn.Module, heads_to_prune: Mapping[int, Iterable[int]]) -> None:
    """Remove attention heads from a GPT-2, BERT or (multi-head) Llama model of transformers 4.x or 5.x, in
    place.

    For each layer, the rows of q, k and v and the columns of the output projection that the heads own are cut
    out (`find_pruneable_heads_and_indices`, then `prune_conv1d_layer` / `prune_linear_layer`), and the head
    counts are updated, so the model runs as before with fewer heads. The result equals the unpruned model
    with those heads' outputs set to zero (tests/test_pruning_heads.py proves it). Heads already pruned are
    skipped, so pruning in two steps equals pruning at once. The heads are recorded in `attn.pruned_heads` and
    `model.config.pruned_heads` (see NOTE [ Where the state lives ]).

    Args:
        model: a transformers GPT-2, BERT or Llama model, bare or with a head (or a model laid out as one).
        heads_to_prune: `{layer: [original head numbers]}`, e.g. `{0: [1, 3], 2: [0]}`.

    Raises:
        ValueError: unsupported architecture; grouped-query Llama; a head listed twice; every head of a layer
            would go.
        IndexError: a layer or head number out of range (negative included).
        TypeError: a layer or head that is not an int; a model wrapped by DistributedDataParallel or
            sharded by FSDP (prune before wrapping; ours only, transformers 4.x fails with an AttributeError
            on the wrapper).
    """
    _refuse_distributed(model)
    plan = _validated(model, heads_to_prune)
    modules = attention_modules(model)
    prune_one = _PRUNERS[_model_type(model)]
    config: Any = model.config
    recorded = _config_pruned_heads(config)
    for layer, heads in plan.items():
        attn: Any = modules[layer]
        already = set(getattr(attn, "pruned_heads", set()))
        n_heads, head_size = _heads_and_size(attn)
        new_heads, index = find_pruneable_heads_and_indices(heads, n_heads, head_size, already)
        if new_heads:
            prune_one(attn, index, len(new_heads))
        attn.pruned_heads = already | new_heads
        recorded[layer] = sorted(set(recorded.get(layer, [])) | attn.pruned_heads)
    config.pruned_heads = {layer: recorded[layer] for layer in sorted(recorded) if recorded[layer]}


def reapply_pruned_heads(model: nn.Module) -> None:
    """Prune a freshly built model to match its `config.pruned_heads`; heads already pruned are skipped.

    Needed on transformers 5.x after building a model from a pruned model's config (4.x did it in
    `post_init`, so there it changes nothing). `load_pruned_model` calls it for you.
    """
    prune_heads(model, _config_pruned_heads(model.config))


def load_pruned_model(model_class: type[M], path: str | Path) -> M:
    """Load a model saved with `save_pretrained` after head pruning, on transformers 4.x or 5.x.

    Builds `model_class` from the saved config, prunes it to the recorded heads (`reapply_pruned_heads`),
    loads the weights from `model.safetensors` (or `pytorch_model.bin`) and ties the tied ones; returns it in
    eval mode, as `from_pretrained` does. A single-file checkpoint only; a sharded one raises
    FileNotFoundError. See NOTE [ Saving and loading a pruned model ].
    """
    path = Path(path)
    # A transformers PreTrainedModel class (config_class, tie_weights), which torch's stubs cannot see.
    pretrained: Any = model_class
    config = pretrained.config_class.from_pretrained(path)
    config.pruned_heads = _config_pruned_heads(config)
    model: Any = model_class(config)
    reapply_pruned_heads(model)
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(path / "model.safetensors")
    elif (path / "pytorch_model.bin").is_file():
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(
            f"no model.safetensors or pytorch_model.bin in {str(path)!r} (sharded checkpoints are not "
            "supported)"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise RuntimeError(
            f"the checkpoint in {str(path)!r} has weights {model_class.__name__} does not: {unexpected}"
        )
    model.tie_weights()
    loaded = {t.data_ptr() for name, t in model.state_dict().items() if name in state}
    untied = [name for name in missing if model.state_dict()[name].data_ptr() not in loaded]
    if untied:
        raise RuntimeError(f"the checkpoint in {str(path)!r} lacks weights {untied}")
    return model.eval()
