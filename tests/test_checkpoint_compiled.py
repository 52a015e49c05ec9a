"""Tests for reference_impl.checkpoint_compiled: selective contexts under torch.compile, the memory budget,
host offload.

Every variant is checked the way PyTorch checks checkpointing: the loss and every parameter gradient (the
input is token ids) equal the unchecked step's. Eager variants run the same arithmetic and are compared
bitwise; compiled may fuse and reorder float32 arithmetic, so they are compared with rtol=1e-5, atol=1e-6
(aot_eager keeps torch's kernels; the tolerance allows for reordered reductions).
"""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn

from reference_impl.checkpoint_compiled import (
    HostOffload,
    MemoryBudgetBackend,
    OffloadingCheckpoint,
    activation_memory_budget,
    compile_with_memory_budget,
    offload_layer_inputs,
    saved_for_backward,
    selective_checkpoint_kwargs,
)
from reference_impl.checkpoint_policies import SELECTIVE_POLICIES
from reference_impl.checkpointing import set_gradient_checkpointing

B, T, L = 2, 16, 3
COMPILED_TOL = {"rtol": 1e-5, "atol": 1e-6}


def tiny_gpt2() -> transformers.GPT2LMHeadModel:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=L,
        n_embd=32,
        n_head=4,
        n_positions=T,
        vocab_size=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    config.use_cache = False
    return transformers.GPT2LMHeadModel(config).train()


def step(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss and every parameter gradient of one causal-LM step (gradients zeroed first)."""
    for p in model.parameters():
        p.grad = None
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(0, 64, (B, T), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def reference(ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return step(tiny_gpt2(), ids)


def assert_same(got, want, **tol) -> None:
    torch.testing.assert_close(got[0], want[0], **tol)
    assert len(got[1]) == len(want[1])
    for g, w in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, w, **tol)


# --- selective contexts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", sorted(SELECTIVE_POLICIES))
def test_selective_kwargs_on_transformers_layers_give_the_unchecked_gradients_eagerly(policy, ids, reference):
    model = tiny_gpt2()
    model.gradient_checkpointing_enable(selective_checkpoint_kwargs(policy))
    assert_same(step(model, ids), reference, rtol=0, atol=0)


def test_selective_kwargs_name_a_non_reentrant_checkpoint_with_a_context():
    kwargs = selective_checkpoint_kwargs("selective")
    assert kwargs["use_reentrant"] is False
    forward_ctx, recompute_ctx = kwargs["context_fn"]()
    assert type(forward_ctx).__name__ == "_CachingTorchDispatchMode"
    assert type(recompute_ctx).__name__ == "_CachedTorchDispatchMode"


def test_an_unknown_selective_policy_is_refused_with_the_names():
    with pytest.raises(ValueError, match=r"policy='everything'.*'selective', 'selective_attention'"):
        selective_checkpoint_kwargs("everything")


def test_selective_policy_saves_matmul_outputs_that_full_checkpointing_recomputes(ids):
    """Eager: a selective checkpoint keeps more than a full one (the matmul outputs), which is what it is
    for."""
    from reference_impl.workbook.measure import PeakMemory

    kept = {}
    for name, kwargs in (("full", {"use_reentrant": False}), ("selective", selective_checkpoint_kwargs())):
        model = tiny_gpt2()
        model.gradient_checkpointing_enable(kwargs)
        with PeakMemory(baseline=list(model.parameters())) as mem:
            loss = model(input_ids=ids, labels=ids).loss
        kept[name] = mem.current_bytes
        loss.backward()
    assert kept["selective"] > kept["full"]


# --- compiled (small, aot_eager: traced and partitioned like inductor, without code generation) -------------


@pytest.mark.slow
@pytest.mark.parametrize("policy", sorted(SELECTIVE_POLICIES))
def test_compiled_selective_checkpoint_gives_the_unchecked_gradients(policy, ids, reference):
    torch._dynamo.reset()
    model = tiny_gpt2()
    model.gradient_checkpointing_enable(selective_checkpoint_kwargs(policy))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=False)
    assert_same(step(compiled, ids), reference, **COMPILED_TOL)


@pytest.mark.slow
def test_compiled_selective_checkpoint_saves_less_than_no_checkpoint_and_more_than_full(ids):
    """What the compiled graph hands to backward, read off its CompiledFunctionBackward node."""
    torch._dynamo.reset()
    saved = {}
    for name, kwargs in (
        ("none", None),
        ("full", {"use_reentrant": False}),
        ("selective", selective_checkpoint_kwargs()),
    ):
        model = tiny_gpt2()
        if kwargs is not None:
            model.gradient_checkpointing_enable(kwargs)
        loss = torch.compile(model, backend="aot_eager")(input_ids=ids, labels=ids).loss
        saved[name] = saved_for_backward(loss, exclude=model.parameters())
        assert saved[name].nodes >= 1, "no compiled graph in the autograd graph"
        loss.backward()
    assert saved["full"].bytes < saved["selective"].bytes < saved["none"].bytes


@pytest.mark.slow
def test_a_lower_memory_budget_makes_the_partitioner_save_less(ids, reference):
    torch._dynamo.reset()
    saved = {}
    for budget in (1.0, 0.0):  # the same model class twice: only the backend's budget tells the two apart
        model = tiny_gpt2()
        compiled = compile_with_memory_budget(model, budget, backend="aot_eager")
        loss = compiled(input_ids=ids, labels=ids).loss
        saved[budget] = saved_for_backward(loss, exclude=model.parameters()).bytes
        loss.backward()
        assert_same(step(compiled, ids), reference, **COMPILED_TOL)
    assert saved[0.0] < saved[1.0]


def test_budget_backends_are_equal_exactly_when_their_budgets_are():
    assert MemoryBudgetBackend(0.5) == MemoryBudgetBackend(0.5)
    assert MemoryBudgetBackend(0.5) != MemoryBudgetBackend(0.2)
    with pytest.raises(ValueError, match="budget=2"):
        MemoryBudgetBackend(2)


@pytest.mark.parametrize("budget", [-0.1, 1.5, "0.5", True])
def test_a_budget_outside_zero_to_one_is_refused(budget):
    with (
        pytest.raises(ValueError, match=r"budget=.* must be a number in \[0, 1\]"),
        activation_memory_budget(budget),
    ):
        pass


def test_the_budget_is_set_inside_the_block_and_restored_after():
    before = torch._functorch.config.activation_memory_budget
    with activation_memory_budget(0.25):
        assert torch._functorch.config.activation_memory_budget == 0.25
    assert torch._functorch.config.activation_memory_budget == before


# --- host offload of the kept layer inputs ------------------------------------------------------------------


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
@pytest.mark.parametrize("every_n_layers", [1, 2])
def test_offload_packs_exactly_the_inputs_of_the_checkpointed_layers(
    reentrant, every_n_layers, ids, reference
):
    model = tiny_gpt2()
    model.gradient_checkpointing_enable({"use_reentrant": reentrant}, every_n_layers=every_n_layers)
    offload = offload_layer_inputs(model)
    got = step(model, ids)
    checkpointed = len(range(0, L, every_n_layers))
    # one (B, T, C) fp32 hidden state per checkpointed layer: nothing else passes through the outer hooks
    assert offload.packed == checkpointed
    assert offload.packed_bytes == checkpointed * B * T * 32 * 4
    assert_same(got, reference, rtol=0, atol=0)


def test_offload_works_on_our_layers_and_policies_too(ids, reference):
    model = tiny_gpt2()
    set_gradient_checkpointing(
        model, True, {"use_reentrant": True}, policy="sqrt"
    )  # segments of round(sqrt(3))=2
    offload = offload_layer_inputs(model)
    assert_same(step(model, ids), reference, rtol=0, atol=0)
    assert offload.packed == 2  # one input per segment


def test_offload_unpacks_in_reverse_and_prefetches_the_previous_input():
    offload = HostOffload(prefetch=True)
    xs = [torch.full((2,), float(i)) for i in range(3)]
    entries = [offload.pack(x) for x in xs]
    assert all(
        e.host.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        for e, x in zip(entries, xs, strict=True)
    )
    assert torch.equal(offload.unpack(entries[2]), xs[2])
    assert (
        entries[1].fetched is not None and entries[0].fetched is None
    )  # the next one backward needs is on its way
    assert torch.equal(offload.unpack(entries[1]), xs[1])
    assert torch.equal(offload.unpack(entries[0]), xs[0])
    assert offload._entries == []  # the step is over: nothing is held


def test_offload_wrappers_are_not_stacked_and_need_a_checkpointed_model():
    model = tiny_gpt2()
    with pytest.raises(ValueError, match="has no checkpointed layer"):
        offload_layer_inputs(model)
    model.gradient_checkpointing_enable({"use_reentrant": False})
    offload_layer_inputs(model)
    second = offload_layer_inputs(model)
    funcs = [m._gradient_checkpointing_func for m in model.transformer.h]
    assert all(isinstance(f, OffloadingCheckpoint) and f.offload is second for f in funcs)
    assert not any(isinstance(f.func, OffloadingCheckpoint) for f in funcs)


def test_saved_for_backward_counts_a_reentrant_checkpoints_kept_inputs(ids):
    model = tiny_gpt2()
    model.gradient_checkpointing_enable({"use_reentrant": True})
    loss = model(input_ids=ids, labels=ids).loss
    report = saved_for_backward(loss, exclude=model.parameters())
    assert report.tensors == L and report.bytes == L * B * T * 32 * 4
    assert report.by_shape == {str((B, T, 32)): L}
