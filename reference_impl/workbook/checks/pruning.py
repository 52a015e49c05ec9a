"""Self-checks for lessons/05_head_pruning.ipynb: choosing heads to a budget, the `c_attn`
columns that survive two prunings, and pruning with importance re-scored after every step.

Each check runs the student's function next to the reference (`reference_impl.pruning`) on several cases and
prints one success line, or raises `CheckFailed` saying in plain words what differs (and, for the classic
mistakes, which mistake it is), or `ExerciseNotFinished` while the function still raises NotImplementedError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from reference_impl.pruning_importance import select_heads_to_prune
from reference_impl.workbook.checks._core import CheckFailed, passed, student_call

__all__ = [
    "TWO_PRUNINGS",
    "check_heads_to_prune",
    "check_rescored_order",
    "check_surviving_c_attn_columns",
]


def _as_list(value: Any, what: str) -> list[int]:
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype == torch.bool:
            raise CheckFailed(f"{what}: dtype is {value.dtype}; return integer positions (torch.long)")
        if value.dim() != 1:
            raise CheckFailed(f"{what}: shape is {tuple(value.shape)}; return a 1-D tensor of positions")
        return [int(v) for v in value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return list(value)
    raise CheckFailed(f"{what}: expected a 1-D torch.long tensor of positions, got {type(value).__name__}")


def _importance_cases() -> list[tuple[str, torch.Tensor, int]]:
    nan = float("nan")
    plain = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.05, 0.6]])
    one_layer_weak = torch.tensor([[0.01, 0.02, 0.03, 0.04], [0.5, 0.6, 0.7, 0.8]])
    pruned_before = torch.tensor([[nan, 0.4, 0.2, nan], [0.3, nan, 0.9, 0.1]])
    return [
        ("importance [[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.05, 0.6]], budget 3", plain, 3),
        ("a layer whose heads are all the least important, budget 5", one_layer_weak, 5),
        ("nan marks heads pruned already, budget 2", pruned_before, 2),
    ]


def check_heads_to_prune(fn: Callable[[torch.Tensor, int], Mapping[int, Sequence[int]]]) -> None:
    """`fn(importance, n)`: the n least important heads as {layer: sorted heads}, one head left in every
    layer."""
    exercise = "heads to prune"
    for case, importance, budget in _importance_cases():
        got = student_call(exercise, fn, importance.clone(), budget)
        expected = select_heads_to_prune(importance, budget)
        if not isinstance(got, Mapping):
            raise CheckFailed(f"{case}: expected a dict {{layer: [heads]}}, got {type(got).__name__}")
        got = {int(layer): sorted(int(h) for h in heads) for layer, heads in got.items() if len(heads)}
        if got == expected:
            continue
        chosen = [(layer, head) for layer, heads in got.items() for head in heads]
        if len(chosen) != budget:
            raise CheckFailed(f"{case}: chose {len(chosen)} heads {got}, expected {budget}: {expected}")
        for layer, head in chosen:
            if torch.isnan(importance[layer, head]):
                raise CheckFailed(
                    f"{case}: head {head} of layer {layer} is pruned already (nan); never choose it"
                )
        for layer, heads in got.items():
            if len(heads) >= int((~torch.isnan(importance[layer])).sum()):
                raise CheckFailed(
                    f"{case}: every head of layer {layer} chosen; keep at least one head per layer"
                )
        raise CheckFailed(f"{case}: got {got}, expected the least important heads {expected}")
    passed(exercise)


#: The scenario of the "two prunings" exercise: a GPT-2 layer with 6 heads of size 2 (C = 12), pruned twice.
TWO_PRUNINGS: dict[str, Any] = {"n_head": 6, "head_size": 2, "first": [1, 4], "then": [0, 5]}


def _surviving_columns() -> list[int]:
    """Run the scenario on a real transformers GPT-2 layer whose c_attn column j holds the number j."""
    from transformers import GPT2Config, GPT2Model

    from reference_impl.pruning_heads import prune_heads

    H, D = TWO_PRUNINGS["n_head"], TWO_PRUNINGS["head_size"]
    config = GPT2Config(
        n_layer=1, n_head=H, n_embd=H * D, vocab_size=8, n_positions=8, bos_token_id=0, eos_token_id=0
    )
    model = GPT2Model(config)
    # Read by attribute: torch's stubs type a Module's attribute `Tensor | Module`.
    attn: Any = model.h[0].attn
    with torch.no_grad():
        # (C, 3·H·D): row 0 = j
        attn.c_attn.weight[0] = torch.arange(3 * H * D, dtype=attn.c_attn.weight.dtype)
    prune_heads(model, {0: TWO_PRUNINGS["first"]})
    prune_heads(model, {0: TWO_PRUNINGS["then"]})
    return [int(j) for j in attn.c_attn.weight[0].tolist()]


def check_surviving_c_attn_columns(fn: Callable[[], Sequence[int]]) -> None:
    """`fn()` returns the original `c_attn` columns that survive the `TWO_PRUNINGS` scenario, in order.

    Checked against a real transformers GPT-2 layer pruned by `prune_heads`; the two classic mistakes
    (treating the second request's numbers as positions, listing the q third only) are named.
    """
    exercise = "surviving c_attn columns"
    got = _as_list(student_call(exercise, fn), "the surviving columns")
    expected = _surviving_columns()
    if got == expected:
        passed(exercise)
        return
    H, D = TWO_PRUNINGS["n_head"], TWO_PRUNINGS["head_size"]
    if got == [j for j in expected if j < H * D]:
        raise CheckFailed(
            f"you listed the q columns only: {got}. c_attn holds q | k | v side by side, {H * D} columns "
            f"each; a head keeps the same units in every third"
        )
    remaining = [h for h in range(H) if h not in TWO_PRUNINGS["first"]]  # heads at positions 0.. after step 1
    unshifted = [h for k, h in enumerate(remaining) if k not in TWO_PRUNINGS["then"]]
    as_positions = [third * H * D + h * D + u for third in range(3) for h in unshifted for u in range(D)]
    if got == as_positions:
        raise CheckFailed(
            f"you read {TWO_PRUNINGS['then']} as positions in the already-pruned layer; prune_heads takes "
            "original head numbers (heads keep their names)"
        )
    raise CheckFailed(f"got columns {got}, expected {expected}")


def check_rescored_order(fn: Callable[..., Sequence[tuple[int, int]]]) -> None:
    """`fn(model, scoring_batches, n, step)`: heads in the order pruned, re-scoring before every `step` heads.

    The reference: repeat `head_importance` on the model as it is now,
    `select_heads_to_prune(importance, step)`, `prune_heads`; the order within one step is layer, then head.
    Checked on the shipped tiny GPT-2 for n = 4, step = 2; the student's function must leave the model it is
    given unchanged (prune a copy).
    """
    import copy

    from reference_impl.pruning_heads import prune_heads
    from reference_impl.pruning_importance import head_importance
    from reference_impl.workbook.pruning_experiment import load_tiny_task_model, offset_pair_batch, task_loss

    exercise = "re-scored pruning order"
    model = load_tiny_task_model()
    batches = [offset_pair_batch(32, torch.Generator().manual_seed(20 + i)) for i in range(2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    returned = student_call(exercise, fn, model, batches, 4, 2)
    if {k: tuple(v.shape) for k, v in model.state_dict().items()} != {
        k: tuple(v.shape) for k, v in before.items()
    }:
        raise CheckFailed("your function pruned the model it was given; prune a copy (copy.deepcopy(model))")
    got = [tuple(int(x) for x in pair) for pair in returned]
    reference, expected = copy.deepcopy(model), []
    for _ in range(2):
        chosen = select_heads_to_prune(head_importance(reference, batches, task_loss), 2)
        expected += [(layer, head) for layer in sorted(chosen) for head in chosen[layer]]
        prune_heads(reference, chosen)
    if got == expected:
        passed(exercise)
        return
    once = select_heads_to_prune(head_importance(model, batches, task_loss), 4)
    if sorted(got) == sorted((layer, head) for layer, heads in once.items() for head in heads):
        raise CheckFailed(
            f"got {got}: those are the 4 heads the scores of the full model pick at once; re-score the "
            f"pruned model before every step of 2 (expected {expected})"
        )
    raise CheckFailed(f"got the order {got}, expected {expected}")
