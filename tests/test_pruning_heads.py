"""Model-level head pruning of GPT-2 and BERT (reference_impl.pruning_heads), on transformers 4.x and 5.x.

The reference that holds in both lines: a pruned model gives the outputs of the unpruned model with those
heads' outputs set to zero (`mask_heads`, a hook on the output projection's input). On 4.x, also transformers'
own `PreTrainedModel.prune_heads`, bitwise.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import transformers
from packaging.version import Version
from torch import nn
from transformers import (
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXModel,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.modeling_utils import PreTrainedModel

from reference_impl.pruning_heads import (
    attention_modules,
    head_counts,
    load_pruned_model,
    prune_heads,
    pruned_heads_of,
    reapply_pruned_heads,
)
from reference_impl.pruning_importance import mask_heads
from reference_impl.workbook.tiny import tiny_bert_config, tiny_gpt2_config

TRANSFORMERS_4 = Version(transformers.__version__) < Version("5")
needs_4 = pytest.mark.skipif(not TRANSFORMERS_4, reason="transformers 5 removed PreTrainedModel.prune_heads")
ATOL = 1e-6  # pruned vs masked: the same products, summed over fewer (zero) terms; fp32 rounding at most


def tiny_gpt2(attn_implementation: str = "eager") -> GPT2LMHeadModel:
    config = tiny_gpt2_config(n_layer=3, n_embd=16, vocab_size=40, attn_implementation=attn_implementation)
    return GPT2LMHeadModel(config).eval()


def tiny_bert(attn_implementation: str = "eager") -> BertForMaskedLM:
    config = tiny_bert_config(
        num_hidden_layers=3,
        hidden_size=16,
        intermediate_size=32,
        vocab_size=40,
        max_position_embeddings=16,
        attn_implementation=attn_implementation,
    )
    return BertForMaskedLM(config).eval()


def tiny_llama(attn_implementation: str = "eager", num_key_value_heads: int = 4) -> LlamaForCausalLM:
    config = LlamaConfig(
        num_hidden_layers=3,
        hidden_size=16,
        num_attention_heads=4,
        num_key_value_heads=num_key_value_heads,
        intermediate_size=32,
        vocab_size=40,
        max_position_embeddings=16,
        attn_implementation=attn_implementation,
    )
    return LlamaForCausalLM(config).eval()


BUILDERS = {"gpt2": tiny_gpt2, "bert": tiny_bert, "llama": tiny_llama}


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=x).logits


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 40, (2, 9))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_pruned_model_equals_unpruned_model_with_those_heads_zeroed(
    kind, attn_implementation, tokens
) -> None:
    model = BUILDERS[kind](attn_implementation)
    heads = {0: [1, 3], 2: [0]}
    with mask_heads(model, heads):
        expected = _logits(model, tokens)
    pruned = copy.deepcopy(model)
    prune_heads(pruned, heads)
    assert head_counts(pruned) == [2, 4, 3]
    torch.testing.assert_close(_logits(pruned, tokens), expected, rtol=1e-6, atol=ATOL)
    # and pruning really changed the function (the check above is not vacuous)
    assert not torch.allclose(_logits(model, tokens), expected, atol=1e-4)


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_pruning_in_two_steps_equals_pruning_at_once(kind, tokens) -> None:
    model = BUILDERS[kind]()
    once, twice = copy.deepcopy(model), copy.deepcopy(model)
    prune_heads(once, {1: [1, 3], 2: [2]})
    prune_heads(twice, {1: [1]})
    prune_heads(twice, {1: [3, 1], 2: [2]})  # head 1 again: skipped; head 3 named by its original number
    assert once.config.pruned_heads == twice.config.pruned_heads == {1: [1, 3], 2: [2]}
    assert pruned_heads_of(twice) == {1: [1, 3], 2: [2]}
    for (name, a), (_, b) in zip(once.state_dict().items(), twice.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(_logits(once, tokens), _logits(twice, tokens), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_pruned_weights_have_the_expected_shapes(kind) -> None:
    model = BUILDERS[kind]()
    prune_heads(model, {0: [0, 2, 3]})  # 1 of 4 heads of size 4 left
    attn = attention_modules(model)[0]
    if kind == "llama":
        shapes = [tuple(getattr(attn, p).weight.shape) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
        assert shapes == [(4, 16), (4, 16), (4, 16), (16, 4)]
    elif kind == "gpt2":
        assert tuple(attn.c_attn.weight.shape) == (16, 3 * 4) and tuple(attn.c_proj.weight.shape) == (4, 16)
        assert (attn.num_heads, attn.split_size) == (1, 4)
    else:
        assert tuple(attn.self.query.weight.shape) == (4, 16) and tuple(attn.output.dense.weight.shape) == (
            16,
            4,
        )
        assert (attn.self.num_attention_heads, attn.self.all_head_size) == (1, 4)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_pruned_model_still_trains(kind, tokens) -> None:
    model = BUILDERS[kind]().train()
    prune_heads(model, {0: [1]})
    loss = model(input_ids=tokens, labels=tokens).loss
    loss.backward()
    grad = attention_modules(model)[0]
    grad = grad.c_attn.weight.grad if kind == "gpt2" else grad.self.query.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_save_and_load_round_trip_restores_pruning(kind, tokens, tmp_path: Path) -> None:
    model = BUILDERS[kind]()
    prune_heads(model, {0: [1, 3], 2: [0]})
    model.save_pretrained(tmp_path)
    loaded = load_pruned_model(type(model), tmp_path)
    assert head_counts(loaded) == [2, 4, 3]
    assert loaded.config.pruned_heads == {0: [1, 3], 2: [0]}
    assert not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, model.state_dict()[name], rtol=0, atol=0, msg=name)
    # (not bitwise: config.json does not carry the attention implementation, so the loaded model uses sdpa)
    torch.testing.assert_close(_logits(loaded, tokens), _logits(model, tokens), rtol=1e-6, atol=ATOL)
    # pruning further after loading still works, with original head numbers
    prune_heads(loaded, {0: [2]})
    assert head_counts(loaded) == [1, 4, 3] and pruned_heads_of(loaded)[0] == [1, 2, 3]


class UntiedAtBuild(GPT2LMHeadModel):
    """A GPT-2 whose constructor leaves lm_head untied: only `load_pruned_model`'s tie_weights() ties it."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.lm_head.weight = nn.Parameter(self.lm_head.weight.detach().clone())


def test_load_pruned_model_ties_lm_head_to_the_loaded_embeddings(tokens, tmp_path: Path) -> None:
    model = tiny_gpt2()
    assert model.config.tie_word_embeddings
    prune_heads(model, {1: [0, 2]})
    model.save_pretrained(tmp_path)  # the tied lm_head.weight is stored once, as transformer.wte.weight
    untied = UntiedAtBuild(model.config)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    loaded = load_pruned_model(UntiedAtBuild, tmp_path)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    torch.testing.assert_close(loaded.lm_head.weight, model.transformer.wte.weight, rtol=0, atol=0)
    torch.testing.assert_close(_logits(loaded, tokens), _logits(model, tokens), rtol=1e-6, atol=ATOL)


def test_reapply_pruned_heads_prunes_a_full_size_model_built_from_a_pruned_config() -> None:
    model = tiny_gpt2()
    prune_heads(model, {1: [0, 2]})
    config = GPT2Config.from_dict(json.loads(model.config.to_json_string()))  # as config.json gives it back
    rebuilt = GPT2LMHeadModel(config)  # 4.x prunes here already, 5.x does not
    reapply_pruned_heads(rebuilt)
    assert head_counts(rebuilt) == [4, 2, 4]
    reapply_pruned_heads(rebuilt)  # idempotent
    assert head_counts(rebuilt) == [4, 2, 4]


@pytest.mark.oracle
def test_version_guard_from_pretrained_reapplies_pruning_only_in_transformers_4(tmp_path: Path) -> None:
    model = tiny_gpt2()
    prune_heads(model, {0: [1]})
    model.save_pretrained(tmp_path)
    if TRANSFORMERS_4:
        assert head_counts(GPT2LMHeadModel.from_pretrained(tmp_path)) == [3, 4, 4]
    else:
        with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
            GPT2LMHeadModel.from_pretrained(tmp_path)


@pytest.mark.oracle
def test_version_guard_model_level_pruning_exists_only_in_transformers_4() -> None:
    assert hasattr(PreTrainedModel, "prune_heads") == TRANSFORMERS_4, (
        f"transformers {transformers.__version__}: PreTrainedModel.prune_heads "
        f"present={hasattr(PreTrainedModel, 'prune_heads')}; we teach that 4.x has it and 5.x removed it (PR "
        "#41417): update reference_impl/pruning_heads.py and lesson 05"
    )


# ---------------------------------------------------------------- refusing bad requests


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_pruning_every_head_of_a_layer_is_refused_and_leaves_the_model_untouched(kind) -> None:
    model = BUILDERS[kind]()
    prune_heads(model, {1: [0, 1]})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"heads \[2, 3\] of layer 1 would leave none of its 4 heads"):
        prune_heads(model, {0: [0], 1: [2, 3]})
    assert head_counts(model) == [4, 2, 4]  # layer 0 was not pruned either
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("heads", "error", "message"),
    [
        ({3: [0]}, IndexError, r"layer 3 does not exist: the model has 3 layers \(0 \.\.\. 2\)"),
        ({-1: [0]}, IndexError, r"layer -1 does not exist"),
        ({0: [4]}, IndexError, r"head 4 of layer 0 does not exist: layers have 4 heads \(0 \.\.\. 3\)"),
        ({0: [-1]}, IndexError, r"head -1 of layer 0 does not exist"),
        ({0: [1.0]}, TypeError, r"head 1.0 of layer 0 must be an integer"),
        ({"0": [1]}, TypeError, r"layer '0' must be an integer"),
        ({0: [1, 2, 1]}, ValueError, r"heads \[1, 2, 1\] for layer 0 list \[1\] more than once"),
    ],
)
def test_bad_layer_or_head_is_refused_with_a_message_naming_it(heads, error, message) -> None:
    model = tiny_gpt2()
    with pytest.raises(error, match=message):
        prune_heads(model, heads)
    assert head_counts(model) == [4, 4, 4]


def test_unsupported_architecture_is_refused_naming_what_is_supported() -> None:
    neox = GPTNeoXModel(
        GPTNeoXConfig(
            num_hidden_layers=1, hidden_size=16, num_attention_heads=4, intermediate_size=32, vocab_size=40
        )
    )
    with pytest.raises(
        ValueError,
        match=r"model_type='gpt_neox' \(GPTNeoXModel\) is not supported .* \['bert', 'gpt2', 'llama'\]",
    ):
        prune_heads(neox, {0: [1]})
    with pytest.raises(ValueError, match=r"model_type=None \(Linear\) is not supported"):
        prune_heads(nn.Linear(2, 2), {0: [1]})


def test_grouped_query_llama_is_refused_and_left_untouched() -> None:
    model = tiny_llama(num_key_value_heads=2)
    with pytest.raises(ValueError, match=r"num_key_value_heads=2 != num_attention_heads=4: grouped-query"):
        prune_heads(model, {0: [1]})
    assert head_counts(model) == [4, 4, 4]


# ---------------------------------------------------------------- transformers 4.x as the oracle


@pytest.mark.oracle
@needs_4
@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_prune_heads_equals_transformers_4_prune_heads(kind, tokens) -> None:
    model = BUILDERS[kind]()
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    prune_heads(ours, {0: [1, 3], 2: [0]})
    theirs.prune_heads({0: [1, 3], 2: [0]})
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for name, tensor in ours.state_dict().items():
        torch.testing.assert_close(tensor, theirs.state_dict()[name], rtol=0, atol=0, msg=name)
    assert {k: sorted(v) for k, v in theirs.config.pruned_heads.items()} == ours.config.pruned_heads
    assert pruned_heads_of(ours) == pruned_heads_of(theirs)
    torch.testing.assert_close(_logits(ours, tokens), _logits(theirs, tokens), rtol=0, atol=0)


@pytest.mark.oracle
@needs_4
def test_pruning_further_a_model_pruned_by_transformers_4_uses_its_bookkeeping(tokens) -> None:
    model = tiny_bert()
    mixed, ours = copy.deepcopy(model), copy.deepcopy(model)
    mixed.prune_heads({0: [1]})  # transformers' method
    prune_heads(mixed, {0: [1, 2]})  # ours: head 1 is already gone, head 2 is shifted by one
    prune_heads(ours, {0: [1, 2]})
    torch.testing.assert_close(_logits(mixed, tokens), _logits(ours, tokens), rtol=0, atol=0)


@pytest.mark.oracle
@needs_4
def test_mask_heads_equals_transformers_4_head_mask(tokens) -> None:
    model = tiny_gpt2()
    head_mask = torch.ones(3, 4)
    head_mask[0, 1] = head_mask[0, 3] = head_mask[2, 0] = 0
    with torch.no_grad():
        theirs = model(input_ids=tokens, head_mask=head_mask).logits
    with mask_heads(model, {0: [1, 3], 2: [0]}):
        ours = _logits(model, tokens)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=ATOL)


@pytest.mark.oracle
@needs_4
@pytest.mark.xfail(
    strict=True,
    raises=(RuntimeError, ValueError),
    reason="transformers 4.x accepts pruning every head of a layer "
    "and then fails inside attention (issue #17475); ours refuses up front",
)
@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_transformers_4_model_with_a_layer_pruned_to_no_heads_runs(kind, tokens) -> None:
    model = BUILDERS[kind]()
    model.prune_heads({0: [0, 1, 2, 3]})
    _logits(model, tokens)
