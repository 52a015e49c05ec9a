"""Tiny transformers configs for tests, benchmarks and lessons: the real config classes at toy sizes.

Each helper returns transformers' own config, so a model built from it is the real architecture, small enough
to run in milliseconds on a CPU. The sizes below are defaults; a caller overrides any of them by keyword
(`tiny_gpt2_config(n_layer=4)`), and everything else is transformers' default. transformers is imported when a
helper is called: it is the `lessons` extra, not a dependency of the package.

    from transformers import GPT2LMHeadModel
    from reference_impl.workbook.tiny import tiny_gpt2_config

    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config(n_layer=3)).eval()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import BertConfig, GPT2Config, LlamaConfig

__all__ = ["rope_config_kwargs", "tiny_bert_config", "tiny_gpt2_config", "tiny_llama_config"]

#: GPT-2 at toy size. Its default token ids (50256) lie outside a small vocabulary, so they are 0 here (GPT-2
#: has no padding row, so the ids change no weight).
GPT2_SIZES: dict[str, Any] = {
    "n_layer": 2,
    "n_embd": 32,
    "n_head": 4,
    "n_positions": 16,
    "vocab_size": 64,
    "bos_token_id": 0,
    "eos_token_id": 0,
}

#: Llama at toy size, with grouped-query attention (4 query heads share 2 key/value heads).
LLAMA_SIZES: dict[str, Any] = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
    "vocab_size": 64,
}

#: BERT at toy size (intermediate 4C, as BERT-base).
BERT_SIZES: dict[str, Any] = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 32,
    "vocab_size": 64,
}


def tiny_gpt2_config(**overrides: Any) -> GPT2Config:
    """`transformers.GPT2Config` with `GPT2_SIZES`, then `overrides`."""
    from transformers import GPT2Config

    return GPT2Config(**{**GPT2_SIZES, **overrides})


def tiny_llama_config(**overrides: Any) -> LlamaConfig:
    """`transformers.LlamaConfig` with `LLAMA_SIZES`, then `overrides` (RoPE: see `rope_config_kwargs`)."""
    from transformers import LlamaConfig

    return LlamaConfig(**{**LLAMA_SIZES, **overrides})


def tiny_bert_config(**overrides: Any) -> BertConfig:
    """`transformers.BertConfig` with `BERT_SIZES`, then `overrides`."""
    from transformers import BertConfig

    return BertConfig(**{**BERT_SIZES, **overrides})


def rope_config_kwargs(rope: Mapping[str, Any], theta: float, *, model_type: str = "llama") -> dict[str, Any]:
    """Config keywords for RoPE in the installed transformers' format.

    5.x: `rope_parameters={**rope, "rope_theta": theta}`. 4.x: `rope_scaling=rope` (None for the default type)
    and `rope_theta=theta`; a 4.x Phi-3 config wants the key `type` instead of `rope_type`.

    Args:
        rope: `{"rope_type": ..., "factor": ..., ...}` as in a 5.x config.json.
        theta: the RoPE base b.
        model_type: "llama" or "phi3" (only the 4.x Phi-3 spelling differs).
    """
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__).major >= 5:
        return {"rope_parameters": {**rope, "rope_theta": theta}}
    scaling = None if rope.get("rope_type", "default") == "default" else dict(rope)
    if scaling is not None and model_type == "phi3":
        scaling["type"] = scaling.pop("rope_type")
    return {"rope_scaling": scaling, "rope_theta": theta}
