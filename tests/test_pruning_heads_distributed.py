"""`prune_heads` on a distributed model: refused once wrapped by DDP or FSDP2, fine when pruned before wrapping.

Runs on two gloo processes started by reference_impl.workbook.distributed.run_ranks (marker `slow`).
"""

from __future__ import annotations

import pytest
import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel
from transformers import GPT2Config, GPT2LMHeadModel

from reference_impl.pruning_heads import head_counts, prune_heads
from reference_impl.workbook.distributed import error_line, run_ranks

pytestmark = pytest.mark.slow


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=16, n_head=4, vocab_size=40, n_positions=16, attn_implementation="eager"
    )
    return GPT2LMHeadModel(config)


def wrap(model: GPT2LMHeadModel, wrapper: str) -> torch.nn.Module:
    if wrapper == "ddp":
        return DistributedDataParallel(model)
    mesh = init_device_mesh("cpu", (2,))
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def prune_after_and_before_wrapping(rank: int, world_size: int, device: str, wrapper: str) -> dict:
    model = tiny_gpt2()
    wrapped = wrap(model, wrapper)
    try:
        prune_heads(wrapped, {0: [1]})
        refused = None
    except TypeError as error:
        refused = error_line(error)
    untouched = head_counts(model)

    model = tiny_gpt2()
    prune_heads(model, {0: [1]})  # before wrapping: every rank prunes the same heads of its own copy
    wrapped = wrap(model, wrapper)
    ids = torch.arange(8).view(1, 8) + rank
    wrapped(input_ids=ids, labels=ids).loss.backward()
    return {"refused": refused, "untouched": untouched, "pruned": head_counts(model)}


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp"])
def test_prune_heads_refuses_a_wrapped_model_and_says_to_prune_before_wrapping(wrapper):
    for result in run_ranks(prune_after_and_before_wrapping, wrapper):
        assert result["refused"] is not None, "prune_heads accepted a wrapped model"
        assert result["refused"].startswith("TypeError: prune_heads got a GPT2LMHeadModel")
        expected = "DistributedDataParallel" if wrapper == "ddp" else "FSDP"
        assert f"wrapped by {expected}" in result["refused"]
        assert "Prune the plain model first" in result["refused"]
        assert result["untouched"] == [4, 4]
        assert result["pruned"] == [3, 4]
