"""eager_attention_forward, the output-layout check, the entropy recorder, and a tiny Llama run through
transformers
with our function registered by name (plus the three traps, reproduced)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference_impl.attention import (
    AttentionEntropyRecorder,
    checked_attention,
    eager_attention_forward,
    registered_in_transformers,
    repeat_kv,
    sdpa_attention_forward,
)
from reference_impl.masking import eager_mask, sdpa_mask


def module(is_causal: bool = True, training: bool = False) -> Any:
    return SimpleNamespace(is_causal=is_causal, training=training)


def qkv(
    B: int = 2, H: int = 4, H_kv: int = 2, T: int = 5, S: int = 5, D: int = 8
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(B, H, T, D, generator=g),
        torch.randn(B, H_kv, S, D, generator=g),
        torch.randn(B, H_kv, S, D, generator=g),
    )


def by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """One head, one query at a time, in float64: the definition, with kv head h // (H / H_kv)."""
    B, H, T, D = q.shape
    group = H // k.shape[1]
    out = torch.zeros(B, T, H, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                keep = allowed[b, 0, i]
                scores = (k[b, h // group].double() @ q[b, h, i].double()) / math.sqrt(D)
                w = torch.softmax(scores[keep], dim=0)
                out[b, i, h] = w @ v[b, h // group][keep].double()
    return out


# ---- eager attention ----
def test_eager_attention_matches_the_definition_with_grouped_query_heads() -> None:
    q, k, v = qkv()
    mask = sdpa_mask(
        2, 5, 5, attention_mask=torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]), allow_is_causal_skip=False
    )
    out, w = eager_attention_forward(
        module(), q, k, v, eager_mask(2, 5, 5, attention_mask=mask[:, 0, -1]), scaling=8**-0.5
    )
    assert out.shape == (2, 5, 4, 8) and w.shape == (2, 4, 5, 5) and out.is_contiguous()
    rows = mask[:, 0].any(-1)  # queries that see at least one key (left-padding queries see none)
    expected = by_hand(q, k, v, mask)
    torch.testing.assert_close(out.double()[rows], expected[rows], atol=1e-6, rtol=1e-6)


def test_repeat_kv_is_repeat_interleave_not_repeat() -> None:
    x = torch.arange(2).view(1, 2, 1, 1).float()  # heads k0, k1
    assert repeat_kv(x, 3).flatten().tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(repeat_kv(x, 3), x.repeat_interleave(3, dim=1))


def test_bool_and_additive_masks_give_the_same_result() -> None:
    q, k, v = qkv()
    padding = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    a = eager_attention_forward(module(), q, k, v, sdpa_mask(2, 5, 5, attention_mask=padding), scaling=0.3)
    b = eager_attention_forward(module(), q, k, v, eager_mask(2, 5, 5, attention_mask=padding), scaling=0.3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@given(st.integers(1, 5), st.integers(0, 4))
def test_no_mask_means_causal_bottom_right_for_a_causal_module(T: int, q_offset: int) -> None:
    S = T + q_offset
    q, k, v = qkv(T=T, S=S)
    implicit = eager_attention_forward(module(is_causal=True), q, k, v, None, scaling=0.5)
    explicit = eager_attention_forward(module(), q, k, v, eager_mask(2, T, S, q_offset=q_offset), scaling=0.5)
    assert torch.equal(implicit[0], explicit[0])


def test_no_mask_means_no_mask_for_a_non_causal_module_or_is_causal_false() -> None:
    q, k, v = qkv()
    full = torch.zeros(1, 1, 5, 5)
    expected = eager_attention_forward(module(), q, k, v, full, scaling=0.5)[0]
    assert torch.equal(
        eager_attention_forward(module(is_causal=False), q, k, v, None, scaling=0.5)[0], expected
    )
    assert torch.equal(
        eager_attention_forward(module(), q, k, v, None, scaling=0.5, is_causal=False)[0], expected
    )


def test_dropout_applies_only_in_training() -> None:
    q, k, v = qkv()
    evaluation = eager_attention_forward(module(training=False), q, k, v, None, scaling=0.5, dropout=0.5)[1]
    training = eager_attention_forward(module(training=True), q, k, v, None, scaling=0.5, dropout=0.5)[1]
    assert torch.allclose(evaluation.sum(-1), torch.ones(2, 4, 5))
    assert bool((training == 0).any()) and not torch.allclose(training.sum(-1), torch.ones(2, 4, 5))


def test_gradients_flow_to_query_key_and_value() -> None:
    q, k, v = (t.requires_grad_() for t in qkv())
    eager_attention_forward(module(), q, k, v, None, scaling=0.5)[0].square().sum().backward()
    assert all(t.grad is not None and bool(t.grad.abs().sum() > 0) for t in (q, k, v))


def test_sdpa_forward_agrees_with_eager() -> None:
    q, k, v = qkv(T=3, S=7)
    for mask in (None, sdpa_mask(2, 3, 7, q_offset=4, allow_is_causal_skip=False)):
        ours = sdpa_attention_forward(module(), q, k, v, mask, scaling=0.5)[0]
        eager = eager_attention_forward(module(), q, k, v, mask, scaling=0.5)[0]
        if mask is None:  # SDPA's own is_causal is top-left aligned: only right when T == S
            eager = eager_attention_forward(module(), q, k, v, eager_mask(2, 3, 7), scaling=0.5)[0]
        torch.testing.assert_close(ours, eager, atol=1e-6, rtol=1e-5)


# ---- bad input ----
@pytest.mark.parametrize("shape", [(3, 1, 5, 5), (2, 1, 4, 5), (2, 1, 5, 6), (2, 3, 5, 5), (5, 5)])
def test_a_mask_of_the_wrong_batch_or_length_is_refused(shape: tuple[int, ...]) -> None:
    q, k, v = qkv()
    with pytest.raises(
        ValueError, match=r"attention_mask has shape .*; expected \(B or 1, 1 or H, T, S\) with B=2, H=4, T=5"
    ):
        eager_attention_forward(module(), q, k, v, torch.zeros(shape), scaling=0.5)


@pytest.mark.parametrize("fn", [eager_attention_forward, sdpa_attention_forward], ids=["eager", "sdpa"])
@pytest.mark.parametrize(("H", "H_kv", "H_v"), [(4, 3, 3), (8, 3, 3), (4, 2, 1)], ids=["4/3", "8/3", "k2-v1"])
def test_key_heads_that_do_not_divide_query_heads_get_one_error_from_every_function(fn, H, H_kv, H_v) -> None:
    q, k, _ = qkv(H=H, H_kv=H_kv)
    v = k[:, :H_v]
    with pytest.raises(
        ValueError,
        match=rf"query has H={H} heads, key H_kv={H_kv} and value {H_v}; expected key and value with the "
        rf"same number of heads, dividing H",
    ):
        fn(module(), q, k, v, None, scaling=0.5)


@pytest.mark.parametrize("fn", [eager_attention_forward, sdpa_attention_forward], ids=["eager", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_an_integer_keep_mask_is_refused_saying_which_masks_are_expected(fn, dtype) -> None:
    q, k, v = qkv()
    keep = torch.ones(
        2, 1, 5, 5, dtype=dtype
    ).tril()  # 0/1: eager would add it to the scores, masking nothing
    with pytest.raises(
        ValueError,
        match=rf"attention_mask has dtype {dtype}; expected a boolean keep-mask \(True = "
        rf"attend.*`mask.bool\(\)`.*or an additive float mask \(0 = attend",
    ):
        fn(module(), q, k, v, keep, scaling=0.5)
    # the two masks it names give the causal result
    as_bool = fn(module(), q, k, v, keep.bool(), scaling=0.5)[0]
    torch.testing.assert_close(as_bool, fn(module(), q, k, v, eager_mask(2, 5, 5), scaling=0.5)[0])


def transposed_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    out, w = eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    return out.transpose(1, 2), w  # the trap: back to (B, H, T, D)


def test_checked_attention_names_a_transposed_output() -> None:
    q, k, v = qkv()
    with pytest.raises(
        ValueError,
        match=r"returned attn_output of shape \(2, 4, 5, 8\) \(that is \(B, H, T, D\): "
        r"transpose\(1, 2\) before returning\); expected \(B, T, H, D\) = \(2, 5, 4, 8\)",
    ):
        checked_attention(transposed_attention)(module(), q, k, v, None, scaling=0.5)
    out = checked_attention(eager_attention_forward)(module(), q, k, v, None, scaling=0.5)[0]
    assert torch.equal(out, eager_attention_forward(module(), q, k, v, None, scaling=0.5)[0])


def test_entropy_recorder_records_zero_for_one_key_and_log_n_for_uniform_rows() -> None:
    recorder = AttentionEntropyRecorder()
    q, k, v = qkv(H=2, H_kv=2, T=4, S=4)
    q.zero_()  # all scores equal: uniform over the keys each query may see
    layer = SimpleNamespace(is_causal=True, training=False, layer_idx=3)
    out, _ = recorder(layer, q, k, v, None, scaling=0.5)
    assert torch.equal(out, eager_attention_forward(layer, q, k, v, None, scaling=0.5)[0])
    entropy = recorder.records[3]
    assert entropy.shape == (2, 2, 4)
    torch.testing.assert_close(
        entropy[0, 0], torch.log(torch.arange(1.0, 5.0))
    )  # query 0 sees one key: 0 nats


# ---- oracle: the real library ----
@pytest.fixture(scope="module")
def llama() -> Any:
    from transformers import LlamaForCausalLM

    from reference_impl.workbook.tiny import tiny_llama_config

    config = tiny_llama_config(max_position_embeddings=64)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    padding = torch.ones(2, 7, dtype=torch.long)
    padding[1, :3] = 0  # row 1 left-padded by 3
    return SimpleNamespace(model=model, ids=ids, padding=padding, real=padding.bool())


def logits(llama: Any, implementation: str, **inputs: Any) -> torch.Tensor:
    llama.model.set_attn_implementation(implementation)
    try:
        with torch.no_grad():
            return llama.model(**inputs).logits
    finally:
        llama.model.set_attn_implementation("sdpa")


@pytest.mark.oracle
@pytest.mark.parametrize("builder", [eager_mask, sdpa_mask], ids=["eager_mask", "sdpa_mask"])
def test_our_attention_registered_by_name_runs_llama_like_transformers_sdpa(llama: Any, builder: Any) -> None:
    inputs = dict(input_ids=llama.ids, attention_mask=llama.padding)
    reference = logits(llama, "sdpa", **inputs)
    with registered_in_transformers("ours", eager_attention_forward, builder):
        ours = logits(llama, "ours", **inputs)
        unpadded = logits(llama, "ours", input_ids=llama.ids)
    # padded positions predict nothing; every real token's logits agree
    torch.testing.assert_close(ours[llama.real], reference[llama.real], atol=1e-5, rtol=0)
    torch.testing.assert_close(unpadded, logits(llama, "sdpa", input_ids=llama.ids), atol=1e-5, rtol=0)
    # and with the same mask our eager IS transformers' eager, padded positions included
    assert torch.equal(ours, logits(llama, "eager", **inputs))


@pytest.mark.oracle
def test_eager_equals_transformers_eager_bitwise_on_random_inputs() -> None:
    from transformers.models.llama.modeling_llama import eager_attention_forward as hf_eager

    q, k, v = qkv(T=3, S=6)
    mask = eager_mask(2, 3, 6, q_offset=3, attention_mask=torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]]))
    layer = SimpleNamespace(num_key_value_groups=2, training=False)
    ours = eager_attention_forward(layer, q, k, v, mask, scaling=0.3)
    theirs = hf_eager(layer, q, k, v, mask, scaling=0.3)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])


@pytest.mark.oracle
def test_gradients_through_llama_equal_transformers_eager(llama: Any) -> None:
    def grads(implementation: str) -> list[torch.Tensor]:
        llama.model.zero_grad()
        llama.model.set_attn_implementation(implementation)
        out = llama.model(input_ids=llama.ids, attention_mask=llama.padding, labels=llama.ids)
        out.loss.backward()
        llama.model.set_attn_implementation("sdpa")
        return [p.grad.clone() for p in llama.model.parameters()]

    with registered_in_transformers("ours", eager_attention_forward, eager_mask):
        ours = grads("ours")
    theirs = grads("eager")
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


@pytest.mark.oracle
def test_trap_no_mask_builder_registered_loses_padding_with_ours(llama: Any) -> None:
    inputs = dict(input_ids=llama.ids, attention_mask=llama.padding)
    reference = logits(llama, "sdpa", **inputs)
    with registered_in_transformers("ours", eager_attention_forward, None):
        wrong = logits(llama, "ours", **inputs)
    # the unpadded row stays right: our eager reads None as causal
    torch.testing.assert_close(wrong[0], reference[0], atol=1e-5, rtol=0)
    gap = (wrong[1][llama.real[1]] - reference[1][llama.real[1]]).abs().max()
    assert gap > 1e-2, f"padding should be lost without a mask builder; max logit gap {gap:.2e}"


@pytest.mark.oracle
def test_trap_no_mask_builder_and_a_naive_function_loses_causality(llama: Any) -> None:
    # transformers' eager plays the naive custom function: it reads None as no mask at all
    from transformers.models.llama.modeling_llama import eager_attention_forward as naive

    reference = logits(llama, "sdpa", input_ids=llama.ids)
    with registered_in_transformers("naive", naive, None):
        wrong = logits(llama, "naive", input_ids=llama.ids)
    # position 0 now sees all 7 tokens: its logits change although its input did not
    assert (wrong[:, 0] - reference[:, 0]).abs().max() > 1e-2


@pytest.mark.oracle
def test_trap_sdpa_mask_none_read_as_no_mask_by_a_naive_function(llama: Any) -> None:
    from transformers.models.llama.modeling_llama import eager_attention_forward as naive

    reference = logits(llama, "sdpa", input_ids=llama.ids)
    with registered_in_transformers("naive", naive, sdpa_mask):  # unpadded batch: sdpa_mask returns None
        wrong = logits(llama, "naive", input_ids=llama.ids)
    with registered_in_transformers("ours", eager_attention_forward, sdpa_mask):
        right = logits(llama, "ours", input_ids=llama.ids)
    assert (wrong - reference).abs().max() > 1e-2
    torch.testing.assert_close(right, reference, atol=1e-5, rtol=0)


@pytest.mark.oracle
def test_trap_transposed_output_changes_logits_silently_and_checked_attention_catches_it(llama: Any) -> None:
    reference = logits(llama, "sdpa", input_ids=llama.ids)
    with registered_in_transformers("transposed", transposed_attention, eager_mask):
        wrong = logits(llama, "transposed", input_ids=llama.ids)  # no exception
    assert wrong.shape == reference.shape and (wrong - reference).abs().max() > 1e-2
    with (
        registered_in_transformers("checked", checked_attention(transposed_attention), eager_mask),
        pytest.raises(ValueError, match=r"\(that is \(B, H, T, D\): transpose\(1, 2\)"),
    ):
        logits(llama, "checked", input_ids=llama.ids)


@pytest.mark.oracle
def test_trap_instance_registration_of_a_mask_builder_is_ignored(llama: Any) -> None:
    import transformers
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS as hf_masks

    inputs = dict(input_ids=llama.ids, attention_mask=llama.padding)
    reference = logits(llama, "sdpa", **inputs)
    with registered_in_transformers("ours", eager_attention_forward, None):
        hf_masks["ours"] = (
            transformers.masking_utils.eager_mask
        )  # instance-local: create_causal_mask checks the class
        try:
            assert "ours" in hf_masks
            wrong = logits(llama, "ours", **inputs)
        finally:
            del hf_masks["ours"]
    gap = (wrong[1][llama.real[1]] - reference[1][llama.real[1]]).abs().max()
    assert gap > 1e-2, f"the instance-registered mask builder should be ignored; max logit gap {gap:.2e}"


@pytest.mark.oracle
def test_registered_in_transformers_leaves_both_registries_as_they_were() -> None:
    import transformers
    from transformers import masking_utils

    before = (
        dict(transformers.AttentionInterface._global_mapping),
        dict(masking_utils.AttentionMaskInterface._global_mapping),
    )
    with pytest.raises(RuntimeError), registered_in_transformers("tmp", eager_attention_forward, eager_mask):
        assert "tmp" in transformers.AttentionInterface._global_mapping
        assert "tmp" in masking_utils.AttentionMaskInterface._global_mapping
        raise RuntimeError("leave the block early")
    after = (
        dict(transformers.AttentionInterface._global_mapping),
        dict(masking_utils.AttentionMaskInterface._global_mapping),
    )
    assert after == before


@pytest.mark.oracle
def test_entropy_recorder_runs_by_name_and_records_every_layer(llama: Any) -> None:
    recorder = AttentionEntropyRecorder()
    with registered_in_transformers("entropy", recorder, eager_mask):
        out = logits(llama, "entropy", input_ids=llama.ids, attention_mask=llama.padding)
    torch.testing.assert_close(
        out[llama.real],
        logits(llama, "sdpa", input_ids=llama.ids, attention_mask=llama.padding)[llama.real],
        atol=1e-5,
        rtol=0,
    )
    assert sorted(recorder.records) == [0, 1]
    entropy = recorder.records[0][0]  # (H, T) for the unpadded row
    bound = torch.log(torch.arange(1.0, 8.0))  # query t sees t + 1 keys
    assert entropy.shape == (4, 7) and bool((entropy <= bound + 1e-5).all()) and bool((entropy >= 0).all())
