"""Checkpointing under DDP and FSDP2 on two gloo processes (reference_impl.workbook.distributed).

Every test here starts two processes (marker `slow`; the README's test command runs them). The counts, errors
and gradients are measured on the ranks and compared with a single-process step of the same tiny Llama.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import socket
import time

import pytest
import torch
import torch.distributed as dist
import transformers
from packaging.version import Version

from reference_impl.workbook.distributed import (
    DDP_SCENARIOS,
    FSDP_SCENARIOS,
    ModelSpec,
    Scenario,
    fail_on_rank,
    max_grad_diff,
    predicted_shard_bytes,
    reference_gradients,
    run_ranks,
    run_scenarios,
    tiny_llama,
)

pytestmark = pytest.mark.slow

TRANSFORMERS_WRAPS_CALL = Version(transformers.__version__) < Version("5.23")

# DDP averages two half-batch gradients after the backward; the single process sums the whole batch inside
# each matmul. Same terms, another order of fp32 additions: a few ulps of the gradients (about 3e-8 measured).
GRAD_ATOL = 1e-6


def assert_no_child_left(port: int | None = None) -> None:
    assert multiprocessing.active_children() == []
    try:
        import psutil
    except ImportError:
        pass
    else:
        # multiprocessing's own helpers (resource tracker, forkserver) live as long as this process;
        # ranks do not
        helpers = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")
        ranks = [
            c
            for c in psutil.Process().children(recursive=True)
            if not any(helper in " ".join(c.cmdline()) for helper in helpers) or c.ppid() != os.getpid()
        ]
        assert ranks == [], [c.pid for c in ranks]
    if port is not None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # raises OSError if the store still held it


def test_ddp_reentrant_with_find_unused_parameters_fails_and_the_three_fixes_match_one_process():
    ranks = run_scenarios(DDP_SCENARIOS)
    _, expected = reference_gradients()
    for results in ranks:
        failed, *fixes = results
        assert failed["error"].startswith("RuntimeError: Expected to mark a variable ready only once")
        plain = fixes[-1]
        for fix in fixes:
            assert fix["error"] is None, fix
            assert max_grad_diff(fix["grads"], expected) <= GRAD_ATOL
            # every fix computes the very same arithmetic as DDP without checkpointing: bitwise
            assert max_grad_diff(fix["grads"], plain["grads"]) == 0.0
    assert_no_child_left()


def test_fsdp_hooks_run_twice_when_the_checkpoint_wraps_call_and_once_when_it_wraps_forward():
    spec = ModelSpec()
    ranks = run_scenarios(FSDP_SCENARIOS, spec)
    _, expected = reference_gradients(spec)
    shard = predicted_shard_bytes(tiny_llama(spec), world_size=2)
    L = spec.num_layers
    for none, call, fwd, theirs in ranks:
        assert [r["error"] for r in (none, call, fwd, theirs)] == [None] * 4
        assert [r["hook_calls"] for r in (none, call, fwd)] == [L, 2 * L, L]
        # transformers <= 5.22 checkpoints a layer's __call__ (hooks replayed); 5.23 moved it to forward
        assert theirs["hook_calls"] == (2 * L if TRANSFORMERS_WRAPS_CALL else L)
        # FSDP2 skips its own pre-forward hook during the recompute (it runs in the pre-backward state), so
        # the all-gathers do not double: the root once, then each layer in forward and again in backward.
        assert [r["all_gathers"] for r in (none, call, fwd, theirs)] == [2 * L + 1] * 4
        for r in (none, call, fwd, theirs):
            assert r["param_bytes"] == shard
            assert max_grad_diff(r["grads"], expected) <= GRAD_ATOL
        # not compared for equality: when gloo's thread lets go of a collective's buffers varies under load
        assert call["peak_bytes"] < none["peak_bytes"] and fwd["peak_bytes"] < none["peak_bytes"]
    assert_no_child_left()


def hang_on_rank_one(rank: int, world_size: int, device: str) -> None:
    if rank == 1:
        time.sleep(600)
    dist.barrier()


def all_reduce_ranks(rank: int, world_size: int, device: str) -> float:
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    return float(t)


def test_a_rank_that_raises_leaves_no_process_and_no_port_behind():
    with pytest.raises(RuntimeError, match=r"rank 1 failed: RuntimeError: rank 1 fails on purpose") as caught:
        run_ranks(fail_on_rank, 1, timeout_s=60)
    port = int(re.search(r"port (\d+)", str(caught.value)).group(1))
    assert_no_child_left(port)


def test_a_rank_that_hangs_is_stopped_at_the_timeout():
    with pytest.raises(TimeoutError, match="did not finish within timeout_s=8"):
        run_ranks(hang_on_rank_one, timeout_s=8)
    assert_no_child_left()


def test_spawned_ranks_run_the_same_functions():
    assert run_ranks(all_reduce_ranks, start_method="spawn", timeout_s=120) == [3.0, 3.0]
    assert_no_child_left()


def test_bad_arguments_are_refused_before_any_process_starts():
    with pytest.raises(ValueError, match="parallel='zero'"):
        Scenario("x", "zero")
    with pytest.raises(ValueError, match="device='tpu'"):
        run_ranks(all_reduce_ranks, device="tpu")
    assert_no_child_left()


def test_each_of_three_ranks_holds_ceil_rows_over_n_of_every_parameter():
    spec = ModelSpec(num_layers=1)
    ranks = run_scenarios([Scenario("none", "fsdp")], spec, world_size=3, steps=1, grads=False)
    model = tiny_llama(spec)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    predicted = predicted_shard_bytes(model, world_size=3)
    assert predicted > total / 3  # 64, 32 and 16 rows do not divide by 3: padded
    assert [r[0]["param_bytes"] for r in ranks] == [predicted] * 3
    assert_no_child_left()


def test_fsdp_peak_memory_follows_storages_that_fsdp_resizes():
    from torch.distributed.fsdp._fully_shard import _fsdp_param

    from reference_impl.workbook.distributed import FSDPPeakMemory
    from reference_impl.workbook.measure import PeakMemory

    gathered = torch.empty(256)  # 1 KiB, made before the block, then freed the way FSDP2 frees it
    _fsdp_param.free_storage(gathered)
    with FSDPPeakMemory() as mem, torch.no_grad():
        _fsdp_param.alloc_storage(gathered)  # FSDP2 re-allocates it for an all-gather: +1024
        after_alloc = mem.current_bytes
        _fsdp_param.free_storage(gathered)  # and frees it after the layer ran: -1024
        after_free = mem.current_bytes
        _fsdp_param.alloc_storage(gathered)
        gathered.mul(2)  # a 1 KiB temporary while the gathered copy is alive: peak 2 KiB
    assert (after_alloc, after_free, mem.peak_bytes, mem.current_bytes) == (1024, 0, 2048, 1024)
    assert (
        _fsdp_param.alloc_storage.__name__ == "alloc_storage"
    )  # FSDP's functions are restored after the block
    _fsdp_param.free_storage(gathered)
    with PeakMemory() as plain:
        _fsdp_param.alloc_storage(gathered)
    assert plain.peak_bytes == 0  # what PeakMemory alone would miss
