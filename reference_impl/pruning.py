"""Head pruning, layer by layer: keep some rows or columns of a Linear or Conv1D; find which ones a head owns.

Mirrors `transformers.pytorch_utils` (`prune_linear_layer` in 4.57.6 and 5.22.2; `prune_conv1d_layer`,
`prune_layer` and `find_pruneable_heads_and_indices` in 4.57.6 only: transformers 5 removed them with
model-level pruning, PR #41417). Taught in lessons/05_head_pruning.ipynb.

The pruning component is three modules that sort together and depend one way (each imports only the ones
above it):
- `reference_impl.pruning` (this one): layer level, rows and columns of one Linear or Conv1D;
- `reference_impl.pruning_heads`: model level, `prune_heads(model, {layer: [heads]})` for GPT-2 and BERT in
  both transformers lines, and saving / loading a pruned model;
- `reference_impl.pruning_importance`: Michel et al.'s gradient score of each head, masking heads without
  pruning, and choosing which heads to prune to a budget.

# NOTE [ Where we differ from transformers ]
# - dtype, device and requires_grad are kept. transformers builds the new nn.Linear in the default dtype and
#   then sets requires_grad=True: a bf16 layer comes back fp32, and a frozen layer comes back trainable.
# - The training flag (`layer.training`) is kept; transformers returns a new module in training mode.
# - The index is validated, with an error naming the value and what is accepted:
#     out of range or negative -> IndexError (transformers: IndexError "index out of range in self" from
#       torch);
#     not integer (float, bool mask) -> TypeError (transformers: RuntimeError from index_select);
#     duplicated -> ValueError (transformers: silently duplicates the unit);
#     dim not 0 or 1 -> ValueError (transformers: IndexError for dim >= 2, and for dim=-1 it slices the bias
#       of a Linear as if rows were pruned: a shape error, or a silently wrong bias when sizes happen to
#       match).
# - A list of ints is accepted as the index, as well as an integer tensor.
# - Conv1D pruning returns the class it was given (ours or transformers'); transformers always builds its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from reference_impl.conv1d import Conv1D, is_conv1d

__all__ = [
    "find_pruneable_heads_and_indices",
    "prune_conv1d_layer",
    "prune_layer",
    "prune_linear_layer",
]


def _check_index(index: torch.Tensor | Sequence[int], size: int, what: str) -> torch.Tensor:
    """Validate `index` (the positions to keep along a dimension of `size`) and return it as an int64
    tensor."""
    if not isinstance(index, torch.Tensor):
        items = list(index)
        bad = [i for i in items if isinstance(i, bool) or not isinstance(i, int)]
        if bad:
            raise TypeError(f"index must hold integers; got {bad[0]!r} ({type(bad[0]).__name__}) in {items}")
        index = torch.tensor(items, dtype=torch.long)
    if index.dtype == torch.bool:
        raise TypeError(
            f"index must hold the positions to keep, not a boolean mask (dtype {index.dtype}); "
            f"convert a mask with `mask.nonzero().flatten()`"
        )
    if index.dtype.is_floating_point or index.dtype.is_complex:
        raise TypeError(f"index must be an integer tensor (int64 or int32), got dtype {index.dtype}")
    if index.dim() != 1:
        raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
    index = index.long()
    if index.numel():
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= size:
            outside = low if low < 0 else high
            raise IndexError(
                f"index holds {outside}, out of range for {what} of size {size} (valid: 0 ... {size - 1})"
            )
        if index.unique().numel() != index.numel():
            values, counts = index.unique(return_counts=True)
            raise ValueError(
                f"index holds {int(values[counts > 1][0])} more than once; each position may be kept once"
            )
    return index


def _check_dim(dim: int) -> None:
    if dim not in (0, 1) or isinstance(dim, bool):
        raise ValueError(f"dim={dim!r} must be 0 (keep rows of the weight) or 1 (keep columns of the weight)")


@contextmanager
def _on_meta_device() -> Iterator[None]:
    """Build modules without memory and without random init (whose RNG draws would shift the caller's
    stream)."""
    with torch.device("meta"), warnings.catch_warnings():
        # An empty index builds a zero-size layer; its (skipped) init would warn that it does nothing.
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        yield


def _new_parameter(data: torch.Tensor, like: torch.Tensor) -> nn.Parameter:
    """A parameter on fresh storage with the same dtype, device and requires_grad as `like`."""
    return nn.Parameter(data.detach().clone().contiguous(), requires_grad=like.requires_grad)


def prune_linear_layer(layer: nn.Linear, index: torch.Tensor | Sequence[int], dim: int = 0) -> nn.Linear:
    r"""A new `nn.Linear` that keeps only the rows (`dim=0`) or columns (`dim=1`) of `layer.weight` in
    `index`.

    With $W$ of shape `(out, in)` and $y = x W^\top + b$:
    - `dim=0` keeps output units: $W' = W[\text{index}, :]$, $b' = b[\text{index}]$ (q, k, v of a head);
    - `dim=1` keeps input units: $W' = W[:, \text{index}]$, $b' = b$ whole (the output projection of a head).

    The kept units come out in the order `index` lists them (`index_select`), so `index` is usually ascending.
    Unlike transformers' function, the new layer has the dtype, device, `requires_grad` and training flag of
    `layer` (see NOTE [ Where we differ from transformers ] in this module), and bad input raises an error
    that names it.

    Args:
        layer: the layer to prune; it is left untouched.
        index: positions to keep along `dim`, shape `(K,)`, integers in `[0, layer.weight.shape[dim])`, no
            repeats.
        dim: 0 for rows (outputs), 1 for columns (inputs).

    Returns:
        `nn.Linear(in', out')` with `out' = K` when `dim=0`, `in' = K` when `dim=1`, on fresh storage.

    Correct / Incorrect, pruning head inputs of an output projection:
        prune_linear_layer(dense, index, dim=1)   # correct: fewer inputs, every output keeps its bias
        prune_linear_layer(dense, index, dim=0)   # incorrect: removes outputs (and their bias) instead
    """
    if not isinstance(layer, nn.Linear):
        raise TypeError(
            f"layer must be a torch.nn.Linear, got {type(layer).__module__}.{type(layer).__qualname__}"
        )
    _check_dim(dim)
    index = _check_index(
        index, layer.weight.shape[dim], f"dim={dim} of a weight of shape {tuple(layer.weight.shape)}"
    )
    index = index.to(layer.weight.device)
    weight = layer.weight.index_select(dim, index)  # (out, in) -> (K, in) or (out, K)
    out_features, in_features = weight.shape
    with _on_meta_device():
        new_layer = nn.Linear(in_features, out_features, bias=layer.bias is not None)
    new_layer.weight = _new_parameter(weight, layer.weight)
    if layer.bias is not None:
        # The bias belongs to the outputs: sliced with the rows, whole when columns (inputs) are removed.
        bias = layer.bias if dim == 1 else layer.bias.index_select(0, index)
        new_layer.bias = _new_parameter(bias, layer.bias)
    return new_layer.train(layer.training)


def prune_conv1d_layer(layer: Conv1D, index: torch.Tensor | Sequence[int], dim: int = 1) -> Conv1D:
    r"""A new Conv1D that keeps only the columns (`dim=1`, default) or rows (`dim=0`) of `layer.weight` in
    `index`.

    Conv1D stores its weight transposed, $W$ of shape `(nx, nf)` = (in, out), with $y = x W + b$, so the dims
    swap roles compared with `prune_linear_layer`:
    - `dim=1` keeps output units: $W' = W[:, \text{index}]$, $b' = b[\text{index}]$ (GPT-2's `c_attn` for a
      head);
    - `dim=0` keeps input units: $W' = W[\text{index}, :]$, $b' = b$ whole (GPT-2's `c_proj` for a head).

    Accepts our `reference_impl.conv1d.Conv1D` and transformers' `Conv1D`, and returns an instance of the
    class it was given. Keeps dtype, device, `requires_grad` and the training flag (transformers 4.x did not).

    Args:
        layer: the Conv1D to prune (weight `(nx, nf)`, bias `(nf,)`); it is left untouched.
        index: positions to keep along `dim`, shape `(K,)`, integers in range, no repeats.
        dim: 1 for columns (outputs, the default), 0 for rows (inputs).

    Returns:
        `Conv1D(nf', nx')` with `nf' = K` when `dim=1`, `nx' = K` when `dim=0`, on fresh storage.
    """
    if not is_conv1d(layer):
        raise TypeError(
            "layer must be a Conv1D (ours or transformers'), got "
            f"{type(layer).__module__}.{type(layer).__qualname__}"
        )
    _check_dim(dim)
    index = _check_index(
        index, layer.weight.shape[dim], f"dim={dim} of a weight of shape {tuple(layer.weight.shape)}"
    )
    index = index.to(layer.weight.device)
    weight = layer.weight.index_select(dim, index)  # (nx, nf) -> (nx, K) or (K, nf)
    nx, nf = weight.shape
    with _on_meta_device():
        new_layer = type(layer)(nf, nx)
    new_layer.weight = _new_parameter(weight, layer.weight)
    # Outputs are columns here: the bias is sliced with them, and kept whole when rows (inputs) go.
    bias = layer.bias if dim == 0 else layer.bias.index_select(0, index)
    new_layer.bias = _new_parameter(bias, layer.bias)
    return new_layer.train(layer.training)


def prune_layer(
    layer: nn.Linear | Conv1D, index: torch.Tensor | Sequence[int], dim: int | None = None
) -> nn.Linear | Conv1D:
    """Prune an `nn.Linear` (default `dim=0`) or a Conv1D (default `dim=1`): by default, keep output units.

    The defaults differ because the two store their weights transposed to each other; with `dim=None` both
    keep the outputs listed in `index`. Anything else raises `ValueError` naming its type (as transformers
    does).
    """
    if isinstance(layer, nn.Linear):
        return prune_linear_layer(layer, index, dim=0 if dim is None else dim)
    if is_conv1d(layer):
        return prune_conv1d_layer(layer, index, dim=1 if dim is None else dim)
    raise ValueError(
        f"Can't prune layer of class {type(layer).__module__}.{type(layer).__qualname__}: "
        f"expected torch.nn.Linear or Conv1D"
    )


# NOTE [ Where a head lives in a projection ]
# A layer with H heads of size D computes q, k, v with projections of C -> H·D outputs. Output unit j belongs
# to head j // D, so head h owns the D consecutive units h·D ... h·D + D - 1. The output projection reads
# those same H·D units as its *inputs*. Removing head h therefore removes D rows of W_q, W_k, W_v (dim 0 of an
# nn.Linear weight, which is (out, in)) and the same D columns of W_o (dim 1). Biases belong to outputs: they
# are sliced with the rows, and kept whole when columns go (an output unit of W_o still exists; it just reads
# fewer inputs).
def find_pruneable_heads_and_indices(
    heads: Iterable[int], n_heads: int, head_size: int, already_pruned_heads: set[int]
) -> tuple[set[int], torch.Tensor]:
    r"""Which of `heads` still need pruning, and the flat indices (into the current H·D units) to keep.

    Heads are always named by their *original* number. After heads were pruned, the layer holds `n_heads`
    heads packed together, so original head $h$ now sits at position $h - |\{p \in \text{already pruned} : p <
    h\}|$. The kept indices are every $j$ in $[0, n\_heads \cdot D)$ whose position $j // D$ is not one being
    removed, in ascending order.

    Example (golden value, the same as transformers 4.x): a layer had 7 heads of size 2; heads 1 and 3 are
    already gone, so `n_heads=5` and positions 0..4 hold original heads 0, 2, 4, 5, 6. Pruning heads 0, 5, 2
    removes positions 0, 3, 1 and keeps positions 2 and 4 (heads 4 and 6), i.e. units [4, 5] and [8, 9]:

        >>> find_pruneable_heads_and_indices([0, 5, 2], n_heads=5, head_size=2, already_pruned_heads={1, 3})
        ({0, 2, 5}, tensor([4, 5, 8, 9]))

    Args:
        heads: original numbers of the heads to prune (repeats and already-pruned heads are ignored).
        n_heads: heads the layer holds *now* (H after previous pruning).
        head_size: D, units per head.
        already_pruned_heads: original numbers of the heads pruned before.

    Returns:
        `(heads_to_prune, index)`: the set of original head numbers newly pruned, and an int64 tensor of shape
        `((n_heads - len(heads_to_prune)) * head_size,)` with the units to keep.

    Raises:
        IndexError: if a head's shifted position is outside `[0, n_heads)` (transformers 4.x raises the same
            type, except that it silently wraps a negative head to the last one).
        TypeError: if a head is not an integer.
    """
    heads = set(heads)
    bad = [h for h in heads if isinstance(h, bool) or not isinstance(h, int)]
    if bad:
        raise TypeError(f"heads must be integers (original head numbers), got {bad[0]!r}")
    heads = heads - set(already_pruned_heads)
    mask = torch.ones(n_heads, head_size)  # (H, D): 1 = keep
    for head in heads:
        # Original number -> position among the heads still there.
        position = head - sum(1 for p in already_pruned_heads if p < head)
        if head < 0 or not 0 <= position < n_heads:
            raise IndexError(
                f"head {head} is out of range: the layer had {n_heads + len(already_pruned_heads)} heads "
                f"(valid: 0 ... {n_heads + len(already_pruned_heads) - 1}), of which "
                f"{sorted(already_pruned_heads)} "
                f"are already pruned"
            )
        mask[position] = 0
    index = torch.arange(n_heads * head_size)[mask.view(-1).eq(1)]  # (H·D,) -> (H'·D,) ascending
    return heads, index
