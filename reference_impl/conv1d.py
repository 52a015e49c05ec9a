"""GPT-2's Conv1D: a Linear layer whose weight is stored transposed, and conversions to and from nn.Linear.

Mirrors `transformers.pytorch_utils.Conv1D` (identical in transformers 4.57.6 and 5.22.2). Taught in
lessons/02_conv1d_vs_linear.ipynb.

    Conv1D(nf, nx):  y = x @ W + b        W: (nx, nf)  "in x out", as OpenAI's GPT checkpoints store it
    nn.Linear(nx, nf): y = x @ A.T + b    A: (nf, nx)  "out x in", as PyTorch stores it;  A = W.T
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv1D", "conv1d_to_linear", "conv1d_to_nn_conv1d", "is_conv1d", "linear_to_conv1d"]


class Conv1D(nn.Module):
    r"""A Linear layer with its weight stored transposed: $y = x W + b$ with $W$ of shape `(nx, nf)`.

    A drop-in replacement for `transformers.pytorch_utils.Conv1D`: the same constructor order (`nf` = out
    features first, `nx` = in features second, the reverse of `nn.Linear(in, out)`), the same attributes `nf`,
    `nx`, `weight (nx, nf)` and `bias (nf,)`, the same initialisation ($W \sim \mathcal{N}(0, 0.02^2)$, $b =
    0$, drawing the same random numbers), the same `repr` and state-dict keys, and a bitwise-identical forward
    and backward. GPT-2 checkpoints therefore load into it with `strict=True`.

    Where we differ (documented, tested):
    - a non-contiguous input works (transformers raises); see NOTE [ Non-contiguous inputs ] in `forward`;
    - an input whose last dimension is not `nx`, or whose dtype is not the weight's (outside autocast), raises
      a `RuntimeError` (the type transformers raises) whose message names `nx`, the shape or the dtypes;
    - optional `device=` / `dtype=` keywords, as `nn.Linear` has, so a layer can be built in place
      (`torch.nn.utils.skip_init` needs them);
    - it is not a subclass of transformers' class, so code that tests `isinstance(m, transformers...Conv1D)`
      (GPT-2's `_init_weights`, PEFT's `fan_in_fan_out` detection) does not recognise it.

    Args:
        nf: number of output features (GPT-2: 3C for `c_attn`, C for `c_proj`, 4C for `mlp.c_fc`).
        nx: number of input features.
        device: where to allocate the parameters (default: torch's default device).
        dtype: dtype of the parameters (default: torch's default dtype).

    Example:
        >>> conv = Conv1D(nf=6, nx=4)
        >>> conv.weight.shape, conv(torch.randn(2, 3, 4)).shape   # (B, T, nx) -> (B, T, nf)
        (torch.Size([4, 6]), torch.Size([2, 3, 6]))
    """

    def __init__(
        self, nf: int, nx: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ):
        super().__init__()
        self.nf = nf
        self.nx = nx
        # Same allocation and initialisation order as transformers, so the same seed gives the same weights.
        self.weight = nn.Parameter(torch.empty(nx, nf, device=device, dtype=dtype))  # (in, out): transposed
        self.bias = nn.Parameter(torch.zeros(nf, device=device, dtype=dtype))
        nn.init.normal_(self.weight, std=0.02)

    def __repr__(self) -> str:
        return f"Conv1D(nf={self.nf}, nx={self.nx})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r"""$y = b + x W$ on the last dimension: `(..., nx) -> (..., nf)`, e.g. `(B, T, C) -> (B, T, 3C)`.

        One fused `addmm(b, X, W)` on the input flattened to 2-D, exactly as transformers computes it.
        """
        if x.dim() == 0 or x.shape[-1] != self.nx:
            raise RuntimeError(
                f"Conv1D(nf={self.nf}, nx={self.nx}) expects an input whose last dimension is nx={self.nx}, "
                f"got shape {tuple(x.shape)}"
            )
        if x.dtype != self.weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise RuntimeError(
                f"Conv1D(nf={self.nf}, nx={self.nx}) got an input of dtype {x.dtype} but its weight is "
                f"{self.weight.dtype}; convert one of them (e.g. `x.to({self.weight.dtype})`) or run under "
                f"torch.autocast"
            )
        size_out = (*x.shape[:-1], self.nf)
        # NOTE [ Non-contiguous inputs: where we differ from transformers ]
        # transformers flattens the input with `x.view(-1, nx)`, which raises "view size is not compatible
        # with input tensor's size and stride" on a non-contiguous input such as `x.transpose(0, 1)`. We use
        # `x.reshape(-1, nx)`: on an input `view` accepts, `reshape` returns that very view (same data, same
        # strides), so the result is bitwise the same as transformers'; on any other input it copies to a
        # contiguous tensor first and the result is bitwise that of transformers on `x.contiguous()`.
        # tests/test_conv1d.py proves both.
        x = x.reshape(-1, self.nx)  # (..., nx) -> (N, nx); a view when possible, a copy when not
        x = torch.addmm(self.bias, x, self.weight)  # (nf,) + (N, nx) @ (nx, nf) -> (N, nf)
        return x.view(size_out)  # (N, nf) -> (..., nf)


def is_conv1d(layer: object) -> bool:
    """Whether `layer` is GPT-2's Conv1D, ours or transformers' (the one rule the package uses).

    Ours by `isinstance`; transformers' by its class name and layout (`nf`, `nx` and a tensor `weight`), so
    the components never import transformers to check.
    """
    return isinstance(layer, Conv1D) or (
        isinstance(layer, nn.Module)
        and type(layer).__name__ == "Conv1D"
        and hasattr(layer, "nf")
        and hasattr(layer, "nx")
        and isinstance(getattr(layer, "weight", None), torch.Tensor)
    )


def _require_conv1d(conv: object) -> None:
    if not is_conv1d(conv):
        raise TypeError(
            "conv must be a Conv1D (ours or transformers'), got "
            f"{type(conv).__module__}.{type(conv).__qualname__}"
        )


def _require_linear(linear: object) -> None:
    if not isinstance(linear, nn.Linear):
        raise TypeError(
            f"linear must be a torch.nn.Linear, got {type(linear).__module__}.{type(linear).__qualname__}"
        )


def conv1d_to_linear(conv: Conv1D) -> nn.Linear:
    r"""An `nn.Linear(nx, nf)` computing the same function as `conv`: its weight is `conv.weight.T`
    (contiguous).

    $x W + b = x (W^\top)^\top + b$, so `linear.weight = W.T`, stored contiguous (the layout every Linear
    has). The new layer owns fresh storage (changing it does not change `conv`) and has the same dtype, device
    and `requires_grad` as `conv`. Its weights are the same numbers, bitwise; its outputs agree with `conv`'s
    to float rounding (a few ulp in fp32), and are often bitwise equal: the two layouts reach BLAS with
    different transpose flags, which may pick a different kernel and summation order (lesson 02, sections 4
    and 6).

    Accepts our `Conv1D` or any module with the same layout (transformers' `Conv1D` included); anything else
    raises `TypeError` naming its type.

    Correct / Incorrect, loading a GPT-2 weight into an nn.Linear by hand:
        linear.weight.copy_(conv.weight.T)   # correct: (nx, nf) -> (nf, nx)
        linear.weight.copy_(conv.weight)     # incorrect: an error if nx != nf, silently wrong if nx == nf
    """
    _require_conv1d(conv)
    # skip_init allocates without running the random initialisation we would overwrite anyway.
    linear = nn.utils.skip_init(
        nn.Linear, conv.nx, conv.nf, device=conv.weight.device, dtype=conv.weight.dtype
    )
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)  # (nx, nf) -> (nf, nx)
        linear.bias.copy_(conv.bias)
    linear.weight.requires_grad_(conv.weight.requires_grad)
    linear.bias.requires_grad_(conv.bias.requires_grad)
    return linear.train(conv.training)


def linear_to_conv1d(linear: nn.Linear) -> Conv1D:
    r"""A `Conv1D(nf=out_features, nx=in_features)` computing the same function as `linear`: weight
    `linear.weight.T`.

    The inverse of `conv1d_to_linear`: the round trip in either order gives back the same weights, bitwise.
    A Linear without bias becomes a Conv1D with a zero bias (Conv1D always has one; `x W + 0` equals `x W`).
    Same dtype, device and `requires_grad`; fresh storage. Anything but an `nn.Linear` raises `TypeError`.
    """
    _require_linear(linear)
    conv = nn.utils.skip_init(
        Conv1D,
        linear.out_features,
        linear.in_features,
        device=linear.weight.device,
        dtype=linear.weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(linear.weight.T)  # (nf, nx) -> (nx, nf)
        if linear.bias is None:
            conv.bias.zero_()
        else:
            conv.bias.copy_(linear.bias)
    conv.weight.requires_grad_(linear.weight.requires_grad)
    conv.bias.requires_grad_(linear.bias.requires_grad if linear.bias is not None else True)
    return conv.train(linear.training)


# NOTE [ Why is it called a 1D convolution? ]
# OpenAI's GPT code (openai/finetune-transformer-lm, TensorFlow, 2018) wrote every projection as a 1-D
# convolution over the sequence, `conv1d(x, scope, nf, rf)`, with a kernel variable of shape (rf, nx, nf):
# width rf, nx in, nf out. Every projection used rf=1, for which the code ran a matmul instead of
# `tf.nn.conv1d` ("#faster 1x1 conv"). A width-1 convolution looks at one position at a time, so it is
# exactly a Linear layer applied to every position: `nn.Conv1d(nx, nf, kernel_size=1)` on input laid out
# (B, C, T) computes, for every t, `y[:, :, t] = K[:, :, 0] @ x[:, :, t] + b`. Drop the width and the
# checkpoint holds (nx, nf) = "in x out". GPT-2 (openai/gpt-2) kept the function, the (1, nx, nf) variables
# and the name; transformers keeps the name and the layout so those checkpoints load unchanged
# (huggingface/transformers#311). `conv1d_to_nn_conv1d` builds the width-1 nn.Conv1d, to show it.
def conv1d_to_nn_conv1d(conv: Conv1D) -> nn.Conv1d:
    r"""The width-1 `nn.Conv1d(nx, nf, kernel_size=1)` that `conv` is named after (NOTE above).

    Its kernel is `W.T` with a width axis added: `(nx, nf) -> (nf, nx, 1)`. It works on channels-first input,
    so `conv(x)` equals `pointwise(x.transpose(1, 2)).transpose(1, 2)` for `x` of shape `(B, T, nx)`, up to
    float rounding (a convolution kernel sums in a different order from `addmm`).

    Example:
        >>> conv = Conv1D(nf=6, nx=4); x = torch.randn(2, 3, 4)                   # (B, T, nx)
        >>> pointwise = conv1d_to_nn_conv1d(conv)
        >>> y = pointwise(x.transpose(1, 2)).transpose(1, 2)      # (B, nx, T) -> (B, nf, T) -> (B, T, nf)
        >>> torch.allclose(y, conv(x), atol=1e-6)
        True
    """
    _require_conv1d(conv)
    pointwise = nn.utils.skip_init(
        nn.Conv1d, conv.nx, conv.nf, kernel_size=1, device=conv.weight.device, dtype=conv.weight.dtype
    )
    with torch.no_grad():
        pointwise.weight.copy_(conv.weight.T.unsqueeze(-1))  # (nx, nf) -> (nf, nx) -> (nf, nx, 1)
        pointwise.bias.copy_(conv.bias)
    return pointwise.train(conv.training)
