"""`prune_heads` on a distributed model: refused once wrapped by DDP or FSDP2, fine when pruned before
wrapping.

Runs on two gloo processes started by reference_impl.workbook.distributed.run_ranks (marker `slow`).
"""

from __future__ import annotations

import pytest

from reference_impl.workbook.distributed import prune_heads_on_rank, run_ranks

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp"])
def test_prune_heads_refuses_a_wrapped_model_and_says_to_prune_before_wrapping(wrapper):
    for result in run_ranks(prune_heads_on_rank, wrapper):
        assert result["refused"] is not None, "prune_heads accepted a wrapped model"
        assert result["refused"].startswith("TypeError: prune_heads got a GPT2LMHeadModel")
        expected = "DistributedDataParallel" if wrapper == "ddp" else "FSDP"
        assert f"wrapped by {expected}" in result["refused"]
        assert "Prune the plain model first" in result["refused"]
        assert result["heads_after_refusal"] == [4, 4]
        assert result["heads_pruned_first"] == [3, 4]
