"""reference_impl.workbook.pictures: each picture's data agrees with the thing it depicts, and the drawings
show it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from reference_impl.checkpointing import set_gradient_checkpointing
from reference_impl.chunking import apply_chunking_to_forward
from reference_impl.workbook import pictures
from reference_impl.workbook.measure import PeakMemory
from reference_impl.workbook.models import GatedBlock


def _texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


@pytest.mark.parametrize("checkpointed", [False, True])
def test_timeline_after_the_forward_holds_what_a_gated_stack_keeps(checkpointed):
    # GatedBlock keeps 3 units per layer for backward (its input, tanh(h), sigmoid(h)); checkpointed, only its
    # input.
    num_layers, B, C = 5, 16, 4
    steps = pictures.checkpoint_timeline(num_layers, checkpointed)
    after_forward = [s for s in steps if s.kind == "forward"][-1]
    torch.manual_seed(0)
    model = nn.Sequential(*[GatedBlock(C) for _ in range(num_layers)]).train()
    set_gradient_checkpointing(model, checkpointed)
    x = torch.randn(B, C, requires_grad=True)
    with PeakMemory(baseline=[x]) as mem:
        out = model(x)
    kept = (mem.current_bytes - out.untyped_storage().nbytes()) / (B * C * 4)
    assert after_forward.units(3.0) == kept


def test_timeline_peaks_and_recompute_order():
    plain, ckpt = pictures.checkpoint_timeline(4, False), pictures.checkpoint_timeline(4, True)
    assert max(s.units(3) for s in plain) == 12 and max(s.units(3) for s in ckpt) == 3 + 3
    assert [s.kind for s in plain] == ["forward"] * 4 + ["backward"] * 4
    # Every backward of a checkpointed layer comes right after that layer's recompute, last layer first.
    tail = [(s.kind, s.layer) for s in ckpt[4:]]
    assert tail == [(k, i) for i in (3, 2, 1, 0) for k in ("recompute", "backward")]
    assert ckpt[-1].held == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="num_layers=0"):
        pictures.checkpoint_timeline(0, True)


def test_timeline_drawing_prints_both_peaks():
    fig = pictures.draw_checkpoint_timeline(num_layers=4, per_layer=3)
    labels = " ".join(ax.get_ylabel() for ax in fig.axes)
    assert "peak 12 units" in labels and "peak 6 units" in labels
    assert _texts(fig).count("R") >= 4
    plt.close(fig)


def _tiny_layer(family: str) -> nn.Module:
    import transformers

    if family == "GPT2Block":
        cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=8, n_positions=8)
        return transformers.GPT2LMHeadModel(cfg).transformer.h[0]
    cfg = transformers.LlamaConfig(
        num_hidden_layers=1,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=8,
    )
    return transformers.LlamaForCausalLM(cfg).model.layers[0]


@pytest.mark.parametrize("family", pictures.BLOCK_FAMILIES)
def test_block_layout_names_every_projection_of_the_real_layer(family):
    from transformers.pytorch_utils import Conv1D

    layer = _tiny_layer(family)
    projections = {n for n, m in layer.named_modules() if isinstance(m, (nn.Linear, Conv1D))}
    norms = {n for n, m in layer.named_modules() if "norm" in type(m).__name__.lower()}
    drawn = pictures.block_layout(family)
    assert {s.name for s in drawn if s.projection} == projections
    assert {s.name for s in drawn if s.name and not s.projection} == norms
    # In the order forward uses them: the attention's input projections before its output projection.
    order = [s.name for s in drawn if s.projection]
    assert order.index(next(n for n in order if n.endswith(("c_attn", "q_proj")))) < order.index(
        next(n for n in order if n.endswith(("attn.c_proj", "o_proj")))
    )


def test_block_drawing_names_the_projections_and_refuses_unknown_families():
    fig = pictures.draw_blocks()
    text = _texts(fig)
    for name in ("attn.c_attn", "mlp.c_fc", "self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"):
        assert name in text
    plt.close(fig)
    with pytest.raises(KeyError, match="'BertLayer'"):
        pictures.block_layout("BertLayer")


@pytest.mark.parametrize("T, c", [(12, 4), (12, 1), (8, 8)])
def test_chunk_bounds_are_the_slices_apply_chunking_makes(T, c):
    seen = []

    def record(x):
        seen.append((int(x[0, 0]), int(x[0, -1]) + 1))
        return x

    apply_chunking_to_forward(record, c, 1, torch.arange(T).view(1, T))
    assert pictures.chunk_bounds(T, c) == seen


def test_chunk_picture_draws_the_hidden_layer_of_one_chunk():
    with pytest.raises(ValueError, match="chunk_size=5"):
        pictures.chunk_bounds(12, 5)
    with pytest.raises(ValueError, match="current=3"):
        pictures.draw_chunks_over_t(12, 4, current=3)
    fig = pictures.draw_chunks_over_t(12, 4, current=1)
    text = _texts(fig)
    assert text.count("chunk ") == 3 + 1 and "4C hidden" in text  # three labels, one hidden layer
    plt.close(fig)
