r"""Which heads matter: gate each head's output, score it by gradient (Michel et al. 2019), choose what to
prune.

Re-implements the head-importance proxy of Michel, Levy and Neubig, "Are Sixteen Heads Really Better than
One?" (NeurIPS 2019, arXiv:1905.10650), as transformers'
`examples/research_projects/bertology/run_bertology.py` used it with 4.x's `head_mask` argument, which
transformers 5 removed (PR #41076). We gate heads with a forward pre-hook instead, so it works on both lines.
Taught in lessons/05_head_pruning.ipynb.

Every head $h$ of layer $l$ gets a gate $\xi_{l,h}$ that multiplies its output before the output projection:

    Att(x) = W_o [ξ_1 · head_1(x); ...; ξ_H · head_H(x)]        (all ξ = 1 is the unchanged model)

The importance of a head is how much the loss $L$ would move if its gate moved, averaged over the data:

    I_{l,h} = E_x | ∂L(x) / ∂ξ_{l,h} |          then, per layer,   I_{l,:} ← I_{l,:} / ‖I_{l,:}‖₂

(the per-layer ℓ2 normalisation is the one Michel et al. and the bertology example use). A first-order Taylor
view explains it: setting ξ_h from 1 to 0 changes the loss by about -∂L/∂ξ_h. Batches stand in for examples
(the gradient of a batch's mean loss, in absolute value, as the bertology example does; with batch size 1 it
is exactly the expectation above).

Heads are named by their *original* numbers throughout; a pruned head scores `nan`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from reference_impl.pruning_heads import _check_layer, _heads_and_size, attention_modules, output_projection

__all__ = ["gate_heads", "head_importance", "mask_heads", "select_heads_to_prune"]


def _positions(attn: nn.Module, n_original: int) -> list[int]:
    """Original head numbers in the order the (possibly pruned) module holds them now."""
    pruned: set[int] = getattr(attn, "pruned_heads", set())
    return [h for h in range(n_original) if h not in pruned]


def _device_of(attn: nn.Module) -> torch.device:
    """The device of the output projection, where the gates of `attn`'s heads are applied."""
    # Read by attribute: torch's stubs type an attribute of a plain Module `Tensor | Module`.
    projection: Any = output_projection(attn)
    return projection.weight.device


def _gating_hook(
    gate: torch.Tensor, head_size: int
) -> Callable[[nn.Module, tuple[Any, ...]], tuple[torch.Tensor]]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[torch.Tensor]:
        x = args[0]  # (B, T, H·D): the heads' outputs side by side, head h in units h·D ... h·D + D - 1
        heads = x.view(*x.shape[:-1], gate.numel(), head_size)  # (B, T, H·D) -> (B, T, H, D)
        gated = heads * gate.to(x.dtype).view(-1, 1)  # (B, T, H, D) * (H, 1)
        return (gated.view(x.shape), *args[1:])  # (B, T, H, D) -> (B, T, H·D)

    return hook


@contextmanager
def gate_heads(model: nn.Module, gates: Mapping[int, torch.Tensor]) -> Iterator[None]:
    """Multiply each head's output by a gate while the block runs: `gates[layer]` has one entry per head held
    now.

    A forward pre-hook on the output projection (GPT-2 `c_proj`, BERT `output.dense`) scales head h's D input
    units by `gates[layer][h]`. A gate of 1 leaves the model bitwise unchanged; 0 removes the head's
    contribution; a gate that requires grad collects ∂L/∂ξ. Layers not in `gates` are untouched. The hooks are
    removed on exit, even after an error.

    Layer numbers follow `prune_heads`' and `mask_heads`' rule: an int from 0 to L − 1 (IndexError otherwise,
    negative numbers included; TypeError for a non-int).
    """
    modules = attention_modules(model)
    for layer in gates:  # before any hook is added
        _check_layer(layer, len(modules))
    handles = []
    try:
        for layer, gate in gates.items():
            n_heads, head_size = _heads_and_size(modules[layer])
            if gate.shape != (n_heads,):
                raise ValueError(
                    f"gates[{layer}] has shape {tuple(gate.shape)}; layer {layer} holds {n_heads} heads now"
                )
            hook = _gating_hook(gate, head_size)
            handles.append(output_projection(modules[layer]).register_forward_pre_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def mask_heads(model: nn.Module, heads_to_mask: Mapping[int, Iterable[int]]) -> Iterator[None]:
    """Zero the outputs of some heads (original numbers, `{layer: [heads]}`) while the block runs.

    The reference that pruning must match: `prune_heads(model, heads)` gives the outputs the unpruned model
    gives under `mask_heads(model, heads)`. A head already pruned raises ValueError (it has no output left).
    """
    modules = attention_modules(model)
    config: Any = model.config
    n_original: int = config.num_attention_heads
    gates = {}
    for layer, heads in heads_to_mask.items():
        _check_layer(layer, len(modules))
        positions = _positions(modules[layer], n_original)
        gate = torch.ones(len(positions), device=_device_of(modules[layer]))
        for head in heads:
            if head not in positions:
                raise ValueError(f"head {head} of layer {layer} cannot be masked: held now are {positions}")
            gate[positions.index(head)] = 0.0
        gates[layer] = gate
    with gate_heads(model, gates):
        yield


def _default_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def head_importance(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    r"""Michel et al.'s importance $I_{l,h} = E |∂L/∂ξ_{l,h}|$ of every head, shape `(layers, original
    heads)`.

    Runs the model in eval mode (dropout off; the previous mode is restored) on every batch, takes the
    gradient of the loss with respect to all-ones head gates (`gate_heads`), and averages its absolute value
    over the batches. The parameters' `.grad` are not touched. With `normalize`, each layer's scores are
    divided by their ℓ2 norm. Heads already pruned score `nan`.

    Args:
        model: a GPT-2 or BERT model of transformers (pruned or not).
        batches: what to score on; each item is passed to `loss_fn`.
        loss_fn: `loss_fn(model, batch) -> scalar loss`; default `model(**batch).loss` (batches of dicts with
            labels).
        normalize: divide each layer's scores by their ℓ2 norm (default True, as Michel et al.).

    Returns:
        float32 tensor `(L, H)`, on the CPU; higher = more important.
    """
    modules = attention_modules(model)
    config: Any = model.config
    n_original: int = config.num_attention_heads
    loss_fn = _default_loss if loss_fn is None else loss_fn
    gates = {
        layer: torch.ones(_heads_and_size(attn)[0], device=_device_of(attn), requires_grad=True)
        for layer, attn in enumerate(modules)
    }
    totals = [torch.zeros(g.numel()) for g in gates.values()]
    n_batches = 0
    was_training = model.training
    model.eval()
    try:
        with gate_heads(model, gates):
            for batch in batches:
                loss = loss_fn(model, batch)
                grads = torch.autograd.grad(loss, list(gates.values()))  # ∂L/∂ξ per layer, (H_l,)
                for total, grad in zip(totals, grads, strict=True):
                    total += grad.detach().abs().float().cpu()
                n_batches += 1
    finally:
        model.train(was_training)
    if n_batches == 0:
        raise ValueError("batches is empty: head importance needs at least one batch to score on")
    scores = torch.full((len(modules), n_original), float("nan"))
    for layer, attn in enumerate(modules):
        layer_scores = totals[layer] / n_batches
        if normalize:
            layer_scores = layer_scores / (layer_scores.norm(p=2) + 1e-20)
        scores[layer, _positions(attn, n_original)] = layer_scores
    return scores


def select_heads_to_prune(
    importance: torch.Tensor, n_heads: int, *, keep_per_layer: int = 1
) -> dict[int, list[int]]:
    """The `n_heads` least important heads, as `{layer: sorted heads}` for `prune_heads`.

    Heads are taken in ascending importance (ties: lower layer, then lower head first); `nan` entries (pruned
    already) are never chosen; a head is skipped when taking it would leave its layer with fewer than
    `keep_per_layer` heads. Raises ValueError when fewer than `n_heads` heads can be chosen.

    Args:
        importance: `(L, H)` scores, e.g. from `head_importance`.
        n_heads: how many heads to prune, >= 0.
        keep_per_layer: heads that must remain in every layer (at least 1).
    """
    if importance.dim() != 2:
        raise ValueError(f"importance must be (layers, heads), got shape {tuple(importance.shape)}")
    if n_heads < 0 or keep_per_layer < 1:
        raise ValueError(f"n_heads={n_heads} must be >= 0 and keep_per_layer={keep_per_layer} must be >= 1")
    alive = ~torch.isnan(importance)
    left = alive.sum(dim=1).tolist()  # heads each layer still holds
    candidates = sorted(
        (float(importance[layer, head]), layer, head) for layer, head in alive.nonzero().tolist()
    )
    chosen: dict[int, list[int]] = {}
    for _, layer, head in candidates:
        if sum(len(heads) for heads in chosen.values()) == n_heads:
            break
        if left[layer] > keep_per_layer:
            chosen.setdefault(layer, []).append(head)
            left[layer] -= 1
    n_chosen = sum(len(heads) for heads in chosen.values())
    if n_chosen < n_heads:
        raise ValueError(
            f"n_heads={n_heads} heads cannot be pruned while keeping {keep_per_layer} per layer; at most "
            f"{n_chosen}"
        )
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}
