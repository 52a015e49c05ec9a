"""Self-checks for lessons/07_distributed_checkpointing.ipynb.

- `check_hook_and_gather_counts(my_counts)`: predict, for L layers under FSDP2, the pre-forward hook calls and
  the all-gathers of one training step, without checkpointing and with a checkpoint around `forward` or
  `__call__`.
- `check_shard_bytes(my_shard_bytes)`: the parameter bytes one rank holds after `fully_shard`, padding
  included.
- `check_ddp_runs(my_ddp_runs)`: predict which of the 8 combinations of `use_reentrant`,
  `find_unused_parameters` and `static_graph` train a step of DDP with checkpointing; the check runs all 8 on
  two gloo processes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from reference_impl.workbook.checks._core import CheckFailed, passed, student_call
from reference_impl.workbook.distributed import (
    ModelSpec,
    Scenario,
    predicted_shard_bytes,
    run_scenarios,
    tiny_llama,
)

__all__ = [
    "check_ddp_runs",
    "check_hook_and_gather_counts",
    "check_shard_bytes",
    "expected_counts",
    "measured_ddp_runs",
]

TARGETS = (None, "forward", "__call__")


def expected_counts(num_layers: int, checkpoint_target: str | None) -> tuple[int, int]:
    """(pre-forward hook calls on the L layers, all-gathers) in one step of `fully_shard` per layer + root.

    As measured in the lesson (torch 2.13, default reshard_after_forward): a checkpoint around `__call__` runs
    each layer's hooks again in the recompute (2L calls); FSDP2's own pre-forward hook returns early during
    the recompute, so the all-gathers stay 1 (the root, kept unsharded) + L (forward) + L (backward) in every
    case.
    """
    hooks = 2 * num_layers if checkpoint_target == "__call__" else num_layers
    return hooks, 2 * num_layers + 1


def check_hook_and_gather_counts(fn: Callable[[int, str | None], tuple[int, int]]) -> None:
    """Check `fn(num_layers, checkpoint_target) -> (hook_calls, all_gathers)` for L = 1 ... 12 and every
    target."""
    for num_layers in (1, 2, 3, 4, 7, 12):
        for target in TARGETS:
            want = expected_counts(num_layers, target)
            got = student_call("hook and all-gather counts", fn, num_layers, target)
            if not (isinstance(got, tuple) and len(got) == 2):
                raise CheckFailed(f"return a tuple (hook_calls, all_gathers); got {got!r}")
            label = "no checkpointing" if target is None else f"checkpoint around {target}"
            if got[0] != want[0]:
                why = (
                    "the recompute calls the layer's __call__ again, hooks included"
                    if target == "__call__"
                    else "hooks sit outside a checkpoint around forward, and outside no checkpoint at all: "
                    "once"
                )
                raise CheckFailed(f"L={num_layers}, {label}: hook_calls={got[0]}, expected {want[0]} ({why})")
            if got[1] != want[1]:
                why = (
                    "FSDP2 skips its own pre-forward hook during the recompute (the layer is already "
                    "gathered for backward), so the count does not change with checkpointing"
                    if got[1] != 2 * num_layers + 1 and target is not None
                    else "each layer is gathered once in forward and once in backward, the root once"
                )
                raise CheckFailed(
                    f"L={num_layers}, {label}: all_gathers={got[1]}, expected {want[1]} ({why})"
                )
    passed("hook and all-gather counts")


def _odd_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(7, 6), nn.Linear(6, 5), nn.LayerNorm(5))


def check_shard_bytes(fn: Callable[[nn.Module, int], int]) -> None:
    """Check `fn(model, world_size) -> bytes` of parameters one rank holds under `fully_shard` (FSDP2)."""
    models = {
        "tiny Llama": tiny_llama(ModelSpec()),
        "Embedding(7, 6) + Linear(6, 5) + LayerNorm(5)": _odd_model(),
    }
    for name, model in models.items():
        total = sum(p.numel() * p.element_size() for p in model.parameters())
        for world_size in (1, 2, 3, 4, 8):
            want = predicted_shard_bytes(model, world_size)
            got = student_call("shard bytes", fn, model, world_size)
            if got == want:
                continue
            if world_size > 1 and abs(got - total / world_size) <= 1:
                hint = (
                    "that is the total divided by N, but FSDP2 cuts every parameter along dim 0 "
                    "and pads dim 0 "
                    "up to a multiple of N: a rank holds ceil(rows / N) rows of each parameter"
                )
            elif got == total and world_size > 1:
                hint = "that is the unsharded size: each rank keeps only its piece"
            else:
                hint = (
                    "count, per parameter, ceil(rows / N) rows of (numel / rows) elements of "
                    "element_size bytes"
                )
            raise CheckFailed(f"{name}, N={world_size}: got {got} bytes, expected {want} ({hint})")
    passed("shard bytes")


#: (use_reentrant, find_unused_parameters, static_graph), in the order the check asks about them.
DDP_SETTINGS = tuple((r, f, g) for r in (False, True) for f in (False, True) for g in (False, True))


@functools.cache
def measured_ddp_runs() -> dict[tuple[bool, bool, bool], str | None]:
    """{settings: None if a DDP step with checkpointing on every layer ran, else its error}, measured on 2
    gloo ranks.

    Cached for the life of the process: the processes start once per kernel.
    """
    scenarios = [
        Scenario(
            f"reentrant={r}, find_unused={f}, static_graph={g}",
            "ddp",
            checkpointing="full",
            use_reentrant=r,
            find_unused_parameters=f,
            static_graph=g,
        )
        for r, f, g in DDP_SETTINGS
    ]
    rank0 = run_scenarios(scenarios, ModelSpec(num_layers=2), steps=2, grads=False)[0]
    return {settings: result["error"] for settings, result in zip(DDP_SETTINGS, rank0, strict=True)}


def check_ddp_runs(fn: Callable[[bool, bool, bool], bool]) -> None:
    """Check `fn(use_reentrant, find_unused_parameters, static_graph) -> bool`: does a DDP step with
    checkpointing run?

    The truth is measured: all 8 combinations are trained on two gloo processes (a 2-layer tiny Llama whose
    parameters all get a gradient), once per process.
    """
    truth = measured_ddp_runs()
    for (reentrant, find_unused, static), error in truth.items():
        got = student_call("which DDP settings run", fn, reentrant, find_unused, static)
        want = error is None
        if got is want:
            continue
        settings = f"use_reentrant={reentrant}, find_unused_parameters={find_unused}, static_graph={static}"
        if error is None:
            raise CheckFailed(f"{settings}: you predicted a failure, but the step ran on both ranks")
        raise CheckFailed(f"{settings}: you predicted it runs, but both ranks failed with {error[:70]}...")
    passed("which DDP settings run")
