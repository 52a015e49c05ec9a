"""The capstone model (reference_impl/workbook/capstone.py) against transformers' LlamaForCausalLM, and its
parts.

Same weights, same logits and gradients, bitwise, for every scaling rule and both attention functions: the
model runs the same float32 operations in the same order as transformers' Llama (RMSNorm, rotary, eager/SDPA,
SiLU MLP).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from transformers import LlamaForCausalLM

from reference_impl.attention import ALL_ATTENTION_FUNCTIONS, eager_attention_forward
from reference_impl.checkpointing import set_gradient_checkpointing
from reference_impl.masking import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from reference_impl.pruning_heads import head_counts, prune_heads
from reference_impl.pruning_importance import mask_heads
from reference_impl.registry import scoped_registration
from reference_impl.workbook.capstone import (
    CapstoneConfig,
    CapstoneDecoderLayer,
    CapstoneForCausalLM,
    to_llama_config,
)

pytestmark = (
    pytest.mark.oracle
)  # every test compares with transformers' Llama (run on 5.22.2, 4.57.6 and 5.25.0)

L0 = 16
SCALINGS = {
    "default": {"rope_type": "default", "rope_theta": 100.0},
    "linear": {"rope_type": "linear", "rope_theta": 100.0, "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "rope_theta": 100.0, "factor": 2.0},
    "yarn": {"rope_type": "yarn", "rope_theta": 100.0, "factor": 4.0, "original_max_position_embeddings": L0},
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 100.0,
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": L0,
    },
}


def tiny(rule: str = "default", attn_implementation: str = "sdpa", **kwargs) -> CapstoneConfig:
    max_pos = L0 if rule in ("default", "dynamic") else 4 * L0
    return CapstoneConfig(
        vocab_size=24,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_pos,
        rope_parameters=dict(SCALINGS[rule]),
        attn_implementation=attn_implementation,
        **kwargs,
    )


def pair(config: CapstoneConfig, seed: int = 0) -> tuple[CapstoneForCausalLM, LlamaForCausalLM]:
    torch.manual_seed(seed)
    ours = CapstoneForCausalLM(config)
    theirs = LlamaForCausalLM(to_llama_config(config, attn_implementation=config.attn_implementation))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(
        0, 24, (2, 3 * L0), generator=torch.Generator().manual_seed(1)
    )  # past L0: dynamic grows


def test_state_dict_has_llama_for_causal_lm_names_and_shapes_and_loads_both_ways() -> None:
    ours, theirs = pair(tiny())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    torch.manual_seed(5)
    other = LlamaForCausalLM(to_llama_config(tiny()))
    ours.load_state_dict(other.state_dict(), strict=True)  # theirs -> ours
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in other.state_dict().items())


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("rule", list(SCALINGS))
def test_same_weights_give_bitwise_equal_logits_and_gradients(rule, attn_implementation, tokens) -> None:
    ours, theirs = pair(tiny(rule, attn_implementation))
    logits = ours(tokens)
    expected = theirs(tokens).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    (logits**2).mean().backward()
    (expected**2).mean().backward()
    theirs_grads = grads(theirs)
    for name, grad in grads(ours).items():
        torch.testing.assert_close(grad, theirs_grads[name], rtol=0, atol=0, msg=name)


def test_the_proof_is_not_vacuous_a_different_rule_changes_the_logits(tokens) -> None:
    ours, _ = pair(tiny("default"))
    _, theirs = pair(tiny("linear"))
    assert not torch.allclose(ours(tokens), theirs(tokens).logits, atol=1e-3)


def test_padding_mask_gives_the_logits_of_transformers() -> None:
    ours, theirs = pair(tiny())
    ids = torch.randint(0, 24, (2, 10), generator=torch.Generator().manual_seed(2))
    padding = torch.ones(2, 10, dtype=torch.long)
    padding[1, 7:] = 0  # right padding in row 1
    with torch.no_grad():
        torch.testing.assert_close(
            ours(ids, padding), theirs(ids, attention_mask=padding).logits, rtol=0, atol=0
        )
        torch.testing.assert_close(
            ours(ids, padding)[1, :7], ours(ids)[1, :7], rtol=0, atol=0
        )  # causal: same past


@pytest.mark.parametrize("policy", ["full", "sqrt", "selective"])
@pytest.mark.parametrize("chunk", [0, 8])
def test_checkpointing_and_chunking_keep_loss_and_gradients_bitwise(policy, chunk, tokens) -> None:
    reference, _ = pair(tiny())
    reference(tokens).pow(2).mean().backward()
    model, _ = pair(tiny(chunk_size_feed_forward=chunk))
    flags = set_gradient_checkpointing(model, policy=policy)
    assert len(flags) == 2 and flags[0]
    loss = model(tokens).pow(2).mean()
    loss.backward()
    expected = grads(reference)
    # checkpointing recomputes the same ops: bitwise. Chunking sums a weight's gradient over chunks, in
    # another order than one big matmul: equal to float32 rounding.
    tol = dict(rtol=0, atol=0) if chunk == 0 else dict(rtol=1e-5, atol=1e-6)
    for name, grad in grads(model).items():
        torch.testing.assert_close(grad, expected[name], msg=name, **tol)


def test_layers_are_checkpointed_when_switched_on() -> None:
    model, _ = pair(tiny())
    calls = []
    layer = model.model.layers[0]
    layer.register_forward_pre_hook(lambda *_: calls.append(1))
    forward_calls = []
    original = CapstoneDecoderLayer.feed_forward_chunk
    try:
        CapstoneDecoderLayer.feed_forward_chunk = lambda self, x: forward_calls.append(1) or original(self, x)
        set_gradient_checkpointing(model, policy="full")
        model(torch.zeros(1, 8, dtype=torch.long)).sum().backward()
    finally:
        CapstoneDecoderLayer.feed_forward_chunk = original
    assert len(calls) == 1  # hooks outside the checkpoint (checkpoint_target="forward")
    assert len(forward_calls) == 4  # 2 layers x (forward + recompute)


def test_attention_is_looked_up_by_name_at_every_call(tokens) -> None:
    model, _ = pair(tiny(attn_implementation="eager"))
    seen = []

    def spy(module, query, key, value, attention_mask, **kwargs):
        seen.append((module.layer_idx, tuple(query.shape), attention_mask.shape))
        return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)

    with scoped_registration(type(ALL_ATTENTION_FUNCTIONS), "spy", spy):
        with scoped_registration(type(ALL_MASK_ATTENTION_FUNCTIONS), "spy", eager_mask):
            expected = model(tokens)
            model.config.attn_implementation = "spy"
            torch.testing.assert_close(model(tokens), expected, rtol=0, atol=0)
    assert seen == [(i, (2, 4, 3 * L0, 8), (2, 1, 3 * L0, 3 * L0)) for i in range(2)]


def test_an_attention_name_without_a_mask_builder_is_refused(tokens) -> None:
    model, _ = pair(tiny())
    with scoped_registration(type(ALL_ATTENTION_FUNCTIONS), "lonely", eager_attention_forward):
        model.config.attn_implementation = "lonely"
        with pytest.raises(KeyError, match=r"attn_implementation='lonely' has no mask builder; register one"):
            model(tokens)


def test_pruned_heads_equal_masked_heads_and_transformers_pruned_the_same_way(tokens) -> None:
    ours, theirs = pair(tiny())
    heads = {0: [1, 3], 1: [0]}
    with torch.no_grad(), mask_heads(ours, heads):
        expected = ours(tokens)
    prune_heads(ours, heads)
    prune_heads(theirs, heads)
    assert head_counts(ours) == head_counts(theirs) == [2, 3]
    assert ours.config.pruned_heads == {0: [1, 3], 1: [0]}
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours(tokens), theirs(tokens).logits, rtol=0, atol=0)
    assert tuple(ours.model.layers[0].self_attn.o_proj.weight.shape) == (32, 2 * 8)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hidden_size", 30, r"hidden_size=30 must be divisible by num_attention_heads=4"),
        ("num_hidden_layers", 0, r"num_hidden_layers=0 must be a positive int"),
        ("chunk_size_feed_forward", -1, r"chunk_size_feed_forward=-1 must be >= 0"),
    ],
)
def test_bad_config_is_refused_naming_the_field(field, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(tiny(), **{field: value})


def test_chunk_size_that_does_not_divide_the_length_is_refused() -> None:
    model, _ = pair(tiny(chunk_size_feed_forward=5))
    with pytest.raises(ValueError, match=r"chunk_size=5 must divide input_tensors\[0\].shape\[1\]=8"):
        model(torch.zeros(1, 8, dtype=torch.long))


def test_deepcopy_keeps_the_function() -> None:
    model, _ = pair(tiny())
    ids = torch.arange(10)[None] % 24
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(model)(ids), model(ids), rtol=0, atol=0)
