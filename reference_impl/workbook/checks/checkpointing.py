"""Self-checks for lessons/01_checkpointing_tradeoffs.ipynb.

- `check_checkpointed_loss(my_checkpointed_loss)`: a training step through checkpointed layers that really
  checkpoints (training mode, tensors passed positionally, cache off) and gets every gradient right.
- `check_pick_every_n_layers(my_pick_every_n_layers)`: the cheapest `every_n_layers` that fits a memory
  budget.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from reference_impl.checkpointing import GradientCheckpointingLayer, set_gradient_checkpointing
from reference_impl.workbook.checks._core import CheckFailed, check_tensor, passed, student_call

__all__ = [
    "ScaledCachingBlock",
    "check_checkpointed_loss",
    "check_fastest_under_budget",
    "check_pick_every_n_layers",
    "kept_units_every_n",
]


class ScaledCachingBlock(GradientCheckpointingLayer):
    """out = hidden + tanh(linear(hidden)) * scale; appends `out` to `past_key_values` when `use_cache`."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        scale: torch.Tensor,
        past_key_values: list[torch.Tensor] | None = None,
        use_cache: bool = False,
    ) -> torch.Tensor:
        out = hidden_states + torch.tanh(self.linear(hidden_states)) * scale  # (B, C)
        if use_cache and past_key_values is not None:
            past_key_values.append(out.detach())
        return out


def _reference_loss(layers: nn.ModuleList, hidden: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        hidden = layer(hidden, scale, use_cache=False)
    return hidden.square().mean()


class _Counting:
    """Wraps a layer's checkpoint function and counts the calls that went through it."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func, self.calls = func, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.func(*args, **kwargs)


def _grad_of(t: torch.Tensor) -> torch.Tensor:
    """A copy of the gradient the reference run left on `t` (every input and weight is used, so there is
    one)."""
    if t.grad is None:
        raise RuntimeError(f"the reference run left no gradient on a tensor of shape {tuple(t.shape)}")
    return t.grad.clone()


def check_checkpointed_loss(fn: Callable[..., torch.Tensor]) -> None:
    """Check `fn(layers, hidden, scale, cache) -> loss`: mean of the squared output of the layers,
    checkpointed.

    The layers are `ScaledCachingBlock`s with reentrant checkpointing on; `cache` is a list a careless caller
    might hand to the layers. The loss, the gradients of `hidden`, `scale` and every weight must equal a plain
    run, and every layer must actually have been checkpointed.
    """
    torch.manual_seed(0)
    num_layers, batch, hidden_size = 3, 4, 8
    blocks = [ScaledCachingBlock(hidden_size) for _ in range(num_layers)]
    layers = nn.ModuleList(blocks)
    hidden0, scale0 = torch.randn(batch, hidden_size), torch.rand(batch, hidden_size)

    def inputs() -> tuple[torch.Tensor, torch.Tensor]:
        layers.zero_grad(set_to_none=True)
        return hidden0.clone().requires_grad_(True), scale0.clone().requires_grad_(True)

    h, s = inputs()
    expected_loss = _reference_loss(layers.train(), h, s)
    expected_loss.backward()
    expected = {
        "hidden": _grad_of(h),
        "scale": _grad_of(s),
        **{n: _grad_of(p) for n, p in layers.named_parameters()},
    }

    set_gradient_checkpointing(layers, True, {"use_reentrant": True})
    counters = [_Counting(layer._gradient_checkpointing_func) for layer in blocks]
    for layer, counter in zip(blocks, counters, strict=False):
        layer._gradient_checkpointing_func = counter
    layers.eval()  # the student's function must switch to training mode itself
    h, s = inputs()
    cache: list[torch.Tensor] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = student_call("checkpointed loss", fn, layers, h, s, cache)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise CheckFailed(
            f"return the loss as a 0-dim tensor; got {type(loss).__name__} {getattr(loss, 'shape', '')}"
        )
    cache_warnings = [w for w in caught if "Caching is incompatible" in str(w.message)]
    if cache_warnings:
        raise CheckFailed(
            f"checkpointing had to switch the cache off for you ({cache_warnings[0].message}); call the "
            "layers with use_cache=False and without past_key_values: a recompute would write the cache a "
            "second time"
        )
    done = [c.calls for c in counters]
    if not all(done):
        raise CheckFailed(
            f"checkpoint calls per layer: {done}, expected 1 each. A layer that is not in training mode is "
            "never checkpointed (GradientCheckpointingLayer checks `self.training`): call layers.train() "
            "first"
        )
    check_tensor("loss", loss.detach(), expected_loss.detach())
    if not loss.requires_grad:
        raise CheckFailed(
            "the loss does not require grad: under use_reentrant=True the hidden states must be passed "
            "positionally (layer(hidden, scale, ...), not layer(hidden_states=hidden, ...)); a keyword "
            "tensor is cut off"
        )
    loss.backward()
    got = {"hidden": h.grad, "scale": s.grad, **{n: p.grad for n, p in layers.named_parameters()}}
    for name, want in expected.items():
        if got[name] is None:
            raise CheckFailed(f"the gradient of {name} is missing (None): something cut it off the graph")
        check_tensor(f"gradient of {name}", got[name], want)
    passed("checkpointed loss")


def kept_units_every_n(num_layers: int, every_n_layers: int | None, a: int) -> int:
    """Units kept for backward: ceil(L/k) checkpointed inputs (1 unit) + the other layers' a units; None:
    a*L."""
    if every_n_layers is None:
        return a * num_layers
    chosen = math.ceil(num_layers / every_n_layers)
    return chosen + (num_layers - chosen) * a


def _reference_pick(num_layers: int, a: int, budget: int) -> int | None:
    if kept_units_every_n(num_layers, None, a) <= budget:
        return None
    fitting = [k for k in range(1, num_layers + 1) if kept_units_every_n(num_layers, k, a) <= budget]
    return max(fitting) if fitting else 0


def _describe(num_layers: int, a: int, k: int | None) -> str:
    if k == 0:
        return "0 (nothing fits)"
    kept = kept_units_every_n(num_layers, k, a)
    recomputed = 0 if k is None else math.ceil(num_layers / k)
    return f"{k} (keeps {kept} units, recomputes {recomputed} of {num_layers} layers)"


def check_pick_every_n_layers(fn: Callable[[int, int, int], int | None]) -> None:
    """Check `fn(num_layers, alpha, budget) -> every_n_layers`: the largest k (least recompute) whose kept
    units fit.

    None when no checkpointing is needed (alpha * L <= budget), 0 when even k = 1 does not fit.
    """
    cases = [
        (16, 3, 48),
        (16, 3, 47),
        (16, 3, 16),
        (16, 3, 15),
        (16, 3, 32),
        (10, 3, 22),
        (10, 3, 21),
        (12, 17, 40),
        (7, 2, 10),
        (24, 20, 100),
    ]
    for num_layers, a, budget in cases:
        want = _reference_pick(num_layers, a, budget)
        got = student_call("pick every_n_layers", fn, num_layers, a, budget)
        if got == want:
            continue

        if got not in (None, 0) and (not isinstance(got, int) or not 1 <= got <= num_layers):
            raise CheckFailed(
                f"L={num_layers}, alpha={a}, budget={budget}: got {got!r}; expected None, 0 or 1..L"
            )
        raise CheckFailed(
            f"L={num_layers}, alpha={a}, budget={budget} units: got "
            f"every_n_layers={_describe(num_layers, a, got)}, expected {_describe(num_layers, a, want)}"
        )
    passed("pick every_n_layers")


def _describe_config(results: dict[str, dict[str, Any]], key: str | None) -> str:
    if key is None:
        return "None"
    r = results[key]
    return f"{key!r} (memory {r['mem_ratio']:.3f}, time {r['time_ratio']:.2f}x)"


def _reference_fastest(results: dict[str, dict[str, Any]], budget: float) -> str | None:
    fitting = [(r["time_ratio"], key) for key, r in results.items() if r["mem_ratio"] <= budget]
    return min(fitting)[1] if fitting else None


def check_fastest_under_budget(fn: Callable[[dict[str, dict[str, Any]], float], str | None]) -> None:
    """Check `fn(results, budget) -> key`: the fastest configuration of a recorded front whose peak fits the
    budget.

    `results` maps a configuration's key to a dict with at least `mem_ratio` (peak / no-checkpoint peak) and
    `time_ratio` (step time / no checkpoint), as `load_record("checkpointing_gpu")` holds them; `budget` is a
    fraction of the no-checkpoint peak. Expected: the key with the smallest `time_ratio` among those with
    `mem_ratio <= budget`, None if none fits. Checked on the recorded H200 fronts of three models and on a
    small front made up to catch the usual slips (picking the smallest memory, or a `<` where `<=` is meant).
    """
    from reference_impl.workbook.lesson import load_record

    exercise = "fastest under budget"
    made_up = {
        "none": {"mem_ratio": 1.0, "time_ratio": 1.0},
        "every 2nd": {"mem_ratio": 0.6, "time_ratio": 1.1},
        "every layer": {"mem_ratio": 0.4, "time_ratio": 1.3},
        "segments": {"mem_ratio": 0.35, "time_ratio": 1.25},
    }
    fronts = {"made-up front": made_up}
    record = load_record("checkpointing_gpu")["full"]["models"]
    fronts.update({name: m["results"] for name, m in record.items()})
    for name, results in fronts.items():
        for budget in (1.0, 0.6, 0.5, 0.45, 0.4, 0.3, 0.2):
            want = _reference_fastest(results, budget)
            got = student_call(exercise, fn, results, budget)
            if got == want:
                continue
            if got is not None and got not in results:
                raise CheckFailed(f"{exercise}: {name}, budget {budget}: {got!r} is not a key of results")

            raise CheckFailed(
                f"{exercise}: {name}, budget {budget}: got {_describe_config(results, got)}, "
                f"expected {_describe_config(results, want)}"
            )
    passed(exercise)
