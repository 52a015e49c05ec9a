"""Head gating, masking and Michel et al.'s importance score (reference_impl.pruning_importance)."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers
from packaging.version import Version

from reference_impl.pruning_heads import attention_modules, output_projection, prune_heads
from reference_impl.pruning_importance import gate_heads, head_importance, mask_heads, select_heads_to_prune
from tests.test_pruning_heads import BUILDERS, tiny_gpt2

TRANSFORMERS_4 = Version(transformers.__version__) < Version("5")


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    x = torch.randint(0, 40, (2, 9))
    return {"input_ids": x, "labels": x}


def _loss_in_model_dtype(model, batch) -> torch.Tensor:
    # transformers' own losses upcast to float32, which would swamp a float64 finite difference.
    logits = model(input_ids=batch["input_ids"]).logits  # (B, T, V)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_gates_of_one_leave_the_model_bitwise_unchanged_and_hooks_go_away(kind, batch) -> None:
    model = BUILDERS[kind]()
    with torch.no_grad():
        expected = model(**batch).logits
        with gate_heads(model, {layer: torch.ones(4) for layer in range(3)}):
            gated = model(**batch).logits
    torch.testing.assert_close(gated, expected, rtol=0, atol=0)
    assert all(not output_projection(a)._forward_pre_hooks for a in attention_modules(model))


def test_hooks_are_removed_after_an_error(batch) -> None:
    model = tiny_gpt2()
    with pytest.raises(RuntimeError, match="boom"), gate_heads(model, {0: torch.zeros(4)}):
        raise RuntimeError("boom")
    assert not output_projection(attention_modules(model)[0])._forward_pre_hooks


def test_gate_of_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match=r"gates\[1\] has shape \(3,\); layer 1 holds 4 heads now"):
        with gate_heads(tiny_gpt2(), {1: torch.ones(3)}):
            pass


def test_masking_heads_of_a_pruned_model_uses_original_numbers(batch) -> None:
    model = tiny_gpt2()
    with torch.no_grad(), mask_heads(model, {0: [1, 3]}):
        expected = model(**batch).logits
    pruned = copy.deepcopy(model)
    prune_heads(pruned, {0: [1]})
    with torch.no_grad(), mask_heads(pruned, {0: [3]}):  # head 3 is at position 2 now
        got = pruned(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"head 1 of layer 0 cannot be masked: held now are \[0, 2, 3\]"):
        with mask_heads(pruned, {0: [1]}):
            pass


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_importance_is_the_absolute_gate_gradient_by_central_differences(kind, batch) -> None:
    # From scratch: |dL/dξ| for one head, by (L(1 + ε) - L(1 - ε)) / 2ε in float64.
    model = BUILDERS[kind]().double()
    scores = head_importance(model, [batch], _loss_in_model_dtype, normalize=False)
    eps = 1e-5
    for layer, head in [(0, 2), (2, 1)]:
        losses = []
        for sign in (1, -1):
            gate = torch.ones(4, dtype=torch.float64)
            gate[head] += sign * eps
            with torch.no_grad(), gate_heads(model, {layer: gate}):
                losses.append(float(_loss_in_model_dtype(model, batch)))
        estimate = abs(losses[0] - losses[1]) / (2 * eps)
        assert scores[layer, head].item() == pytest.approx(estimate, rel=1e-4, abs=1e-8)


def test_importance_averages_over_batches_normalizes_per_layer_and_touches_no_parameter(batch) -> None:
    model = tiny_gpt2().train()
    other = {"input_ids": batch["input_ids"].flip(1), "labels": batch["input_ids"].flip(1)}
    one = head_importance(model, [batch], normalize=False)
    two = head_importance(model, [other], normalize=False)
    both = head_importance(model, [batch, other], normalize=False)
    torch.testing.assert_close(both, (one + two) / 2, rtol=1e-6, atol=0)
    normalized = head_importance(model, [batch, other])
    torch.testing.assert_close(normalized.norm(dim=1), torch.ones(3), rtol=1e-6, atol=0)
    assert model.training, "the model's mode must be restored"
    assert all(p.grad is None for p in model.parameters())


def test_pruned_heads_score_nan_and_the_rest_keep_their_original_numbers(batch) -> None:
    model = tiny_gpt2()
    pruned = copy.deepcopy(model)
    prune_heads(pruned, {1: [0, 2]})
    scores = head_importance(pruned, [batch], normalize=False)
    assert torch.isnan(scores[1, [0, 2]]).all() and not torch.isnan(scores[1, [1, 3]]).any()
    # the same numbers as the unpruned model with those heads gated to zero
    gates = {layer: torch.ones(4, requires_grad=True) for layer in range(3)}
    with torch.no_grad():
        gates[1][[0, 2]] = 0.0
    with gate_heads(model, gates):
        grads = torch.autograd.grad(model(**batch).loss, [gates[0], gates[1], gates[2]])
    torch.testing.assert_close(scores[1, [1, 3]], grads[1].abs()[[1, 3]], rtol=1e-5, atol=1e-7)


def test_empty_batches_are_refused() -> None:
    with pytest.raises(ValueError, match="batches is empty"):
        head_importance(tiny_gpt2(), [])


@pytest.mark.oracle
@pytest.mark.skipif(not TRANSFORMERS_4, reason="transformers 5 removed head_mask")
def test_importance_equals_the_bertology_recipe_with_transformers_4_head_mask(batch) -> None:
    # transformers' examples/research_projects/bertology: head_mask of ones with requires_grad, |grad| summed.
    model = tiny_gpt2()
    head_mask = torch.ones(3, 4, requires_grad=True)
    model(**batch, head_mask=head_mask).loss.backward()
    theirs = head_mask.grad.abs()
    ours = head_importance(model, [batch], normalize=False)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-8)


def test_select_heads_to_prune_golden_value() -> None:
    nan = float("nan")
    importance = torch.tensor([[0.9, 0.1, 0.5, 0.3], [nan, 0.05, nan, 0.6], [0.2, 0.2, 0.7, 0.8]])
    # ascending: (1,1) 0.05, (0,1) 0.1, (2,0) 0.2, (2,1) 0.2 (tie: lower head first), (0,3) 0.3, (0,2) 0.5,
    # (1,3) 0.6 skipped (layer 1 would be left empty), (2,2) 0.7
    assert select_heads_to_prune(importance, 4) == {0: [1], 1: [1], 2: [0, 1]}
    assert select_heads_to_prune(importance, 7) == {0: [1, 2, 3], 1: [1], 2: [0, 1, 2]}
    assert select_heads_to_prune(importance, 0) == {}
    with pytest.raises(
        ValueError, match=r"n_heads=9 heads cannot be pruned while keeping 1 per layer; at most 7"
    ):
        select_heads_to_prune(importance, 9)


@pytest.mark.parametrize(
    ("layer", "error", "match"),
    [
        (-1, IndexError, r"layer -1 does not exist: the model has 3 layers \(0 \.\.\. 2\)"),
        (3, IndexError, r"layer 3 does not exist: the model has 3 layers \(0 \.\.\. 2\)"),
        (True, TypeError, r"layer True must be an integer layer number"),
        (1.0, TypeError, r"layer 1.0 must be an integer layer number"),
    ],
    ids=["negative", "past-the-last", "bool", "float"],
)
def test_gate_mask_and_prune_share_one_layer_number_rule(layer, error, match) -> None:
    model = tiny_gpt2()
    with pytest.raises(error, match=match), gate_heads(model, {layer: torch.ones(4)}):
        pass
    with pytest.raises(error, match=match), mask_heads(model, {layer: [0]}):
        pass
    with pytest.raises(error, match=match):
        prune_heads(model, {layer: [0]})
    assert all(not output_projection(a)._forward_pre_hooks for a in attention_modules(model))
