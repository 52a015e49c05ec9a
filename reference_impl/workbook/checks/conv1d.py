"""Self-checks for the exercises of lessons/02_conv1d_vs_linear.ipynb.

Each check runs the student's code next to `reference_impl.conv1d` on square and non-square layers (a square
layer is where a forgotten transpose goes unnoticed), prints one success line, or raises `CheckFailed` saying
what differs, recognising the usual mistakes: the transpose forgotten, the bias dropped, the output left flat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import torch
from torch import nn

from reference_impl.conv1d import Conv1D
from reference_impl.workbook.checks._core import (
    CheckFailed,
    first_difference,
    passed,
    student_call,
)

__all__ = [
    "check_find_untransposed",
    "check_forward_bytes",
    "check_split_c_attn",
]

_TOL: dict[str, Any] = {"atol": 1e-5, "rtol": 1e-5}
R = TypeVar("R")


def _layer(nf: int, nx: int, seed: int) -> Conv1D:
    gen = torch.Generator().manual_seed(seed)
    conv = Conv1D(nf, nx)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(nx, nf, generator=gen))
        conv.bias.copy_(torch.randn(nf, generator=gen))  # non-zero, so a dropped bias shows
    return conv


def _call(exercise: str, what: str, fn: Callable[..., R], *args: object) -> R:
    """Run the student's code; turn a crash into a CheckFailed that says on what it crashed."""
    try:
        return student_call(exercise, fn, *args)
    except (RuntimeError, ValueError, IndexError, TypeError, AttributeError) as e:
        hint = ""
        if isinstance(e, RuntimeError) and ("size" in str(e) or "shape" in str(e)):
            hint = (
                " (a shape error here usually means a transpose is missing or extra: Conv1D stores its "
                "weight as (nx, nf) = in x out, nn.Linear as (nf, nx) = out x in)"
            )
        raise CheckFailed(f"{exercise}: raised {type(e).__name__} on {what}: {e}{hint}") from e


def _linear_gpt(n_embd: int, n_layer: int) -> nn.ModuleDict:
    """A nanoGPT-style stack of nn.Linear projections named like GPT-2's Conv1D layers."""
    layers = {}
    for i in range(n_layer):
        layers[f"h{i}_attn_c_attn"] = nn.Linear(n_embd, 3 * n_embd)
        layers[f"h{i}_attn_c_proj"] = nn.Linear(n_embd, n_embd)
        layers[f"h{i}_mlp_c_fc"] = nn.Linear(n_embd, 4 * n_embd)
        layers[f"h{i}_mlp_c_proj"] = nn.Linear(4 * n_embd, n_embd)
    return nn.ModuleDict(layers)


def _scenario(untransposed: list[str], seed: int) -> tuple[nn.ModuleDict, dict[str, torch.Tensor]]:
    """A Linear model loaded from a Conv1D-layout state dict, with the named (square) layers loaded
    untransposed."""
    gen = torch.Generator().manual_seed(seed)
    model = _linear_gpt(n_embd=8, n_layer=2)
    checkpoint: dict[str, torch.Tensor] = {}
    for name, module in model.items():
        linear = cast(nn.Linear, module)  # _linear_gpt builds only nn.Linear layers
        w = torch.randn(linear.in_features, linear.out_features, generator=gen)  # (nx, nf): Conv1D layout
        checkpoint[f"{name}.weight"] = w
        checkpoint[f"{name}.bias"] = torch.randn(linear.out_features, generator=gen)
        with torch.no_grad():
            linear.weight.copy_(w if name in untransposed else w.T)
            linear.bias.copy_(checkpoint[f"{name}.bias"])
    return model, checkpoint


def check_find_untransposed(
    my_find_untransposed: Callable[[nn.Module, dict[str, torch.Tensor]], list[str]],
) -> None:
    """Check `my_find_untransposed(model, checkpoint)`: the sorted names of the Linear layers of `model` whose
    weight was copied from the Conv1D-layout `checkpoint` without the transpose.

    Tried on a model with none, one and two such (square) layers; the answer must be exactly those names.
    """
    exercise = "my_find_untransposed"
    for seed, truth in enumerate([[], ["h1_attn_c_proj"], ["h0_attn_c_proj", "h1_attn_c_proj"]]):
        model, checkpoint = _scenario(truth, seed)
        got = _call(
            exercise,
            f"a model with {len(truth)} untransposed layer(s)",
            my_find_untransposed,
            model,
            checkpoint,
        )
        if not isinstance(got, list | tuple):
            raise CheckFailed(f"{exercise}: returned a {type(got).__name__}, expected a list of layer names")
        if sorted(got) != truth:
            missing, extra = sorted(set(truth) - set(got)), sorted(set(got) - set(truth))
            raise CheckFailed(
                f"{exercise} on a model with {len(truth)} untransposed layer(s): got {sorted(got)}, expected "
                f"{truth}; missed {missing}, wrongly flagged {extra}"
            )
    passed(exercise)


def check_split_c_attn(my_split_c_attn: Callable[[Conv1D], tuple[nn.Linear, nn.Linear, nn.Linear]]) -> None:
    """Check `my_split_c_attn(c_attn)`: three `nn.Linear(C, C)` computing the q, k and v parts of GPT-2's
    fused `c_attn`.

    `c_attn` is a `Conv1D(3C, C)`: weight `(C, 3C)`, whose output GPT2Attention splits as `q, k, v =
    out.split(C, dim=-1)`. Each returned layer must give its third of the output (within 1e-5) and own its
    storage (changing it must not change `c_attn`). The layers are square, so a forgotten transpose is only
    caught by the values, and the check says so.

    Raises:
        ExerciseNotFinished: the function still raises NotImplementedError.
        CheckFailed: not three Linear layers, a wrong shape, a wrong third, or shared storage.
    """
    exercise = "my_split_c_attn"
    for C, seed in ((4, 0), (6, 1)):
        conv = _layer(3 * C, C, seed)
        got = student_call(exercise, my_split_c_attn, conv)
        if not (isinstance(got, tuple) and len(got) == 3 and all(isinstance(m, nn.Linear) for m in got)):
            raise CheckFailed(f"{exercise}: return a tuple of three nn.Linear layers (q, k, v), got {got!r}")
        x = torch.randn(2, 3, C, generator=torch.Generator().manual_seed(seed + 10))
        with torch.no_grad():
            parts = conv(x).split(C, dim=-1)  # as GPT2Attention: q, k, v
            for name, layer, want in zip("qkv", got, parts, strict=True):
                if tuple(layer.weight.shape) != (C, C) or layer.bias is None:
                    raise CheckFailed(
                        f"{exercise}: {name} must be nn.Linear({C}, {C}) with a bias, got weight "
                        f"{tuple(layer.weight.shape)}, bias {'none' if layer.bias is None else 'present'}"
                    )
                out = layer(x)
                if not torch.allclose(out, want, **_TOL):
                    index = "qkv".index(name)
                    untransposed = (
                        x @ conv.weight[:, index * C : (index + 1) * C].T
                        + conv.bias[index * C : (index + 1) * C]
                    )
                    why = (
                        " (the weight was copied without its transpose: square layers load silently wrong)"
                        if torch.allclose(out, untransposed, **_TOL)
                        else ""
                    )
                    raise CheckFailed(
                        f"{exercise}: {name}(x) differs from the {name} third of c_attn(x) for C={C}{why}: "
                        f"{first_difference(out, want, **_TOL)}"
                    )
        before = conv.weight.detach().clone()
        with torch.no_grad():
            for layer in got:
                layer.weight.add_(1.0)
        if not torch.equal(conv.weight, before):
            raise CheckFailed(
                f"{exercise}: changing your layers changed c_attn: copy the weights (`copy_`), do not "
                "view them"
            )
    passed(exercise)


def _measured_forward_bytes(B: int, T: int, nx: int, nf: int) -> int:
    """Bytes our Conv1D(nf, nx) allocates at its peak on `torch.randn(T, B, nx).transpose(0, 1)`, a (B, T, nx)
    view."""
    from reference_impl.workbook.measure import PeakMemory

    conv = _layer(nf, nx, seed=0)
    x = torch.randn(T, B, nx).transpose(0, 1)  # (T, B, nx) -> (B, T, nx), sequence-first code's layout
    with torch.no_grad(), PeakMemory() as mem:
        conv(x)
    return mem.peak_bytes


def check_forward_bytes(my_forward_bytes: Callable[[int, int, int, int], int]) -> None:
    """Check `my_forward_bytes(B, T, nx, nf)`: the peak bytes our `Conv1D(nf, nx)` allocates on a transposed
    input.

    The input is `torch.randn(T, B, nx).transpose(0, 1)` (fp32), made before the forward. Measured with
    `PeakMemory` under `torch.no_grad()`: the output, plus a copy of the input whenever `reshape` cannot view
    it.

    Raises:
        ExerciseNotFinished: the function still raises NotImplementedError.
        CheckFailed: a prediction differs from the measurement; the message says by how much, and what that
        is.
    """
    exercise = "my_forward_bytes"
    for B, T, nx, nf in [(2, 12, 32, 96), (3, 5, 4, 6), (1, 128, 16, 64), (4, 1, 8, 8)]:
        want = _measured_forward_bytes(B, T, nx, nf)
        got = student_call(exercise, my_forward_bytes, B, T, nx, nf)
        if got == want:
            continue
        copy = 4 * B * T * nx
        if isinstance(got, int) and got - want == copy:
            why = (
                f": no copy is made here, because a (B={B}, T={T}) transpose with a dimension of size 1 is "
                f"still contiguous, so reshape returns a view"
            )
        elif isinstance(got, int) and want - got == copy:
            why = ": the input is not contiguous, so reshape copies it (one more tensor of the input's size)"
        elif isinstance(got, int) and got * 4 == want:
            why = ": count bytes, not elements (fp32 is 4 bytes)"
        else:
            why = ""
        raise CheckFailed(
            f"{exercise}(B={B}, T={T}, nx={nx}, nf={nf}) returned {got!r}, measured {want} bytes{why}"
        )
    passed(exercise)
