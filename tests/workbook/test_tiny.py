"""The tiny configs: transformers' own classes at toy sizes, overridable, and RoPE in the installed format."""

from __future__ import annotations

import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from reference_impl.rope import read_rope_config  # noqa: E402
from reference_impl.workbook.tiny import (  # noqa: E402
    BERT_SIZES,
    GPT2_SIZES,
    LLAMA_SIZES,
    rope_config_kwargs,
    tiny_bert_config,
    tiny_gpt2_config,
    tiny_llama_config,
)

HELPERS = [
    (tiny_gpt2_config, transformers.GPT2Config, GPT2_SIZES, "n_layer", transformers.GPT2LMHeadModel),
    (
        tiny_llama_config,
        transformers.LlamaConfig,
        LLAMA_SIZES,
        "num_hidden_layers",
        transformers.LlamaForCausalLM,
    ),
    (
        tiny_bert_config,
        transformers.BertConfig,
        BERT_SIZES,
        "num_hidden_layers",
        transformers.BertForMaskedLM,
    ),
]


@pytest.mark.parametrize(
    ("helper", "cls", "sizes", "layers_key", "model_cls"), HELPERS, ids=["gpt2", "llama", "bert"]
)
def test_each_helper_gives_the_real_config_at_its_sizes(helper, cls, sizes, layers_key, model_cls) -> None:
    config = helper()
    assert type(config) is cls
    assert {key: getattr(config, key) for key in sizes} == sizes


@pytest.mark.parametrize(
    ("helper", "cls", "sizes", "layers_key", "model_cls"), HELPERS, ids=["gpt2", "llama", "bert"]
)
def test_overrides_win_and_the_model_runs(helper, cls, sizes, layers_key, model_cls) -> None:
    config = helper(**{layers_key: 3})
    assert getattr(config, layers_key) == 3
    model = model_cls(config).eval()
    ids = torch.randint(0, config.vocab_size, (2, 5))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (2, 5, config.vocab_size)


def test_gpt2_token_ids_fit_the_small_vocabulary() -> None:
    config = tiny_gpt2_config()
    assert config.bos_token_id < config.vocab_size and config.eos_token_id < config.vocab_size


def test_rope_kwargs_are_read_back_as_given() -> None:
    rope = {"rope_type": "linear", "factor": 4.0}
    kwargs = rope_config_kwargs(rope, 5_000.0)
    assert rope == {"rope_type": "linear", "factor": 4.0}, "the caller's dict must not be changed"
    read = read_rope_config(transformers.LlamaConfig(hidden_size=64, num_attention_heads=2, **kwargs))
    assert (read.rope_type, read.base, read.params["factor"]) == ("linear", 5_000.0, 4.0)


@pytest.mark.parametrize(
    ("version", "model_type", "expected"),
    [
        ("5.22.2", "llama", {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 5e3}}),
        ("4.57.6", "llama", {"rope_scaling": {"rope_type": "linear", "factor": 4.0}, "rope_theta": 5e3}),
        ("4.57.6", "phi3", {"rope_scaling": {"type": "linear", "factor": 4.0}, "rope_theta": 5e3}),
    ],
)
def test_rope_kwargs_follow_the_installed_release(
    monkeypatch: pytest.MonkeyPatch, version: str, model_type: str, expected: dict
) -> None:
    # The module `import transformers` gives now (another test may have re-imported it since collection).
    monkeypatch.setattr(sys.modules["transformers"], "__version__", version)
    assert rope_config_kwargs({"rope_type": "linear", "factor": 4.0}, 5e3, model_type=model_type) == expected


def test_default_rope_is_no_scaling() -> None:
    kwargs = rope_config_kwargs({"rope_type": "default"}, 10_000.0)
    read = read_rope_config(transformers.LlamaConfig(hidden_size=64, num_attention_heads=2, **kwargs))
    assert (read.rope_type, read.base) == ("default", 10_000.0)
