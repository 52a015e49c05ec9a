"""The measuring instruments: exact byte counts, medians, provenance."""

from __future__ import annotations

import pytest
import torch

from reference_impl.workbook.measure import (
    HookCalls,
    PeakMemory,
    SavedTensors,
    machine_info,
    median_seconds,
    side_by_side_seconds,
    tensor_bytes,
    threads,
)


def test_peak_memory_counts_a_freed_temporary_and_what_stays_alive() -> None:
    x = torch.randn(1024)
    with PeakMemory() as mem:
        y = (x * 2) + 1
    assert (mem.peak_bytes, mem.current_bytes) == (8192, 4096)
    del y
    assert mem.current_bytes == 0


def test_peak_memory_counts_a_view_once_and_in_place_ops_not_at_all() -> None:
    with PeakMemory() as mem:
        a = torch.zeros(256, 4)  # 4096 bytes
        v = a.view(1024)  # same storage
        a.add_(1)  # in place
    assert mem.peak_bytes == 4096
    assert v.shape == (1024,)


def test_peak_memory_of_chunked_work_is_lower_than_of_the_whole() -> None:
    x = torch.randn(64, 128)
    w = torch.randn(128, 512)
    with PeakMemory() as whole:
        (x @ w).relu().sum()
    with PeakMemory() as chunked:
        sum((c @ w).relu().sum() for c in x.chunk(8))
    # x@w and its relu are alive together (the matmul output is freed before .sum() allocates its scalar)
    assert whole.peak_bytes == 2 * 64 * 512 * 4
    # one chunk (8 rows) at a time: its matmul output and relu, plus the running scalar sum
    assert chunked.peak_bytes == 2 * 8 * 512 * 4 + 4


def test_saved_tensors_counts_activations_and_excludes_parameters() -> None:
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    with SavedTensors(exclude=lin.parameters()) as saved:
        lin(x).relu().sum()
    # Linear keeps its input (for the weight grad), ReLU its output: 2 x (2x4 fp32) = 64 bytes.
    assert (saved.unique_bytes, saved.count) == (64, 2)
    with SavedTensors() as with_params:
        lin(x).relu().sum()
    assert with_params.unique_bytes == 64 + tensor_bytes(lin.weight)


def test_saved_tensors_counts_a_tensor_saved_twice_once_in_unique_bytes() -> None:
    x = torch.randn(8, requires_grad=True)
    with SavedTensors() as saved:
        (x * x).sum()  # mul saves both operands: the same tensor twice
    assert saved.total_bytes == 2 * 32 and saved.unique_bytes == 32


def test_median_seconds_rejects_a_nonpositive_repeat_count() -> None:
    with pytest.raises(ValueError, match="repeats=0"):
        median_seconds(lambda: None, repeats=0)


def test_side_by_side_returns_a_positive_median_for_each_contender() -> None:
    x = torch.randn(64, 64)
    result = side_by_side_seconds({"mm": lambda: x @ x, "add": lambda: x + x}, rounds=3, warmup=1)
    assert set(result) == {"mm", "add"} and all(v > 0 for v in result.values())


def test_machine_info_says_what_a_figure_was_measured_on() -> None:
    info = machine_info()
    assert {"date_utc", "processor", "torch", "transformers", "gpu", "cpu_count"} <= set(info)
    assert info["torch"] == torch.__version__


def test_threads_restores_the_previous_count() -> None:
    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_hook_calls_counts_each_module_and_stops_counting_on_exit() -> None:
    first, second = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with HookCalls([first, second]) as calls:
        first(torch.randn(1, 2))
        second(first(torch.randn(1, 2)))
    first(torch.randn(1, 2))  # after the block: not counted, the hooks are gone
    assert calls.counts == [2, 1] and calls.total == 3
    assert not first._forward_pre_hooks and not second._forward_pre_hooks


def test_hook_calls_refuses_an_empty_module_list() -> None:
    with pytest.raises(ValueError, match="modules is empty"):
        HookCalls([])


def test_peak_memory_says_which_op_reached_the_peak_and_what_was_alive() -> None:
    x = torch.randn(1024)  # 4 KiB, made before the block
    with PeakMemory() as mem:
        a = x * 2  # 4 KiB
        b = torch.cat([a, a])  # 8 KiB: the peak, 12 KiB alive
        del a
        c = b[:10] + 1  # 40 bytes, below the peak
    assert mem.peak_bytes == 12 * 1024
    assert mem.peak_op.startswith("aten.cat")
    assert mem.alive_at_peak == [8 * 1024, 4 * 1024]
    assert c.numel() == 10
