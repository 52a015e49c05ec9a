r"""The tiny experiment of lesson 05: a 2-layer, 16-head GPT-2 trained on a task that needs only a few heads.

Not a re-implementation of transformers: this is the workbook's own test bed for head pruning, used by
lessons/05_head_pruning.ipynb, tests/workbook/test_pruning_experiment.py and
scripts/train_tiny_pruning_model.py (which produced the checkpoint shipped in reference_impl/workbook/data/).

The task ("offset pair"): a sequence of digits $x_t \in \{0..7\}$; at every position $t \ge 3$ predict the
pair $(x_{t-1}, x_{t-3})$, encoded as one class $y_t = 8 x_{t-1} + x_{t-3}$ of 64. Reading two fixed offsets
back is what attention heads do well, and two lookups need only a couple of heads, so a model with 16 heads
has many to
spare: the experiment asks which ones a pruning criterion keeps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reference_impl.workbook.tiny import tiny_gpt2_config

__all__ = [
    "CHECKPOINT",
    "DIGITS",
    "SEQ_LEN",
    "checkpoint_record",
    "load_tiny_task_model",
    "offset_pair_batch",
    "predicted_latency_ratio",
    "predicted_parameters",
    "task_accuracy",
    "task_loss",
    "tiny_task_config",
    "train_tiny_task_model",
]

DIGITS = 8  # input vocabulary 0..7
SEQ_LEN = 12  # T
OFFSETS = (1, 3)  # the targets read x[t-1] and x[t-3]
IGNORE = -100  # label of positions with nothing to predict (t < 3), as in torch's cross_entropy
#: The shipped checkpoint: weights (.pt) and how they were made (.json).
CHECKPOINT = Path(__file__).resolve().parent / "data" / "pruning_tiny_gpt2"


def offset_pair_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` random sequences and their labels: `x (n, T)` digits, `y (n, T)` classes $8 x_{t-1} + x_{t-3}$ or
    -100."""
    near, far = OFFSETS
    x = torch.randint(0, DIGITS, (n, SEQ_LEN), generator=generator)  # (n, T)
    y = torch.full_like(x, IGNORE)
    y[:, far:] = x[:, far - near : SEQ_LEN - near] * DIGITS + x[:, : SEQ_LEN - far]  # (n, T - 3)
    return x, y


def tiny_task_config(**overrides: Any) -> Any:
    """GPT2Config of the task model: 2 layers, 8 heads of size 8 each (C = 64), 64 output classes, no
    dropout."""
    settings: dict[str, Any] = {
        "n_layer": 2,
        "n_head": 8,
        "n_embd": 64,
        "n_positions": SEQ_LEN,
        "vocab_size": DIGITS * DIGITS,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    }
    return tiny_gpt2_config(**{**settings, **overrides})


def task_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the model's prediction at every position with a label (no shift: y_t is read at t)."""
    x, y = batch
    logits = model(input_ids=x).logits  # (B, T, 64)
    return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)


def task_accuracy(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Fraction of labelled positions where the most likely class is the right pair."""
    x, y = batch
    with torch.no_grad():
        predicted = model(input_ids=x).logits.argmax(-1)  # (B, T)
    labelled = y != IGNORE
    return float((predicted[labelled] == y[labelled]).float().mean())


def train_tiny_task_model(
    steps: int = 300, batch_size: int = 64, lr: float = 5e-3, seed: int = 0
) -> nn.Module:
    """Train the task model from scratch with AdamW (about 10 s on one CPU core); returns it in eval mode."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(tiny_task_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        loss = task_loss(model, offset_pair_batch(batch_size, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def load_tiny_task_model(path: Path = CHECKPOINT) -> nn.Module:
    """The trained task model shipped with the package (`<path>.pt` weights), in eval mode.

    Built from `tiny_task_config()` and loaded with `strict=True`, so it loads in transformers 4.x and 5.x.
    `<path>.json` records how it was trained (script, steps, seed, accuracy, versions).
    """
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel(tiny_task_config())
    state = torch.load(path.with_suffix(".pt"), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def checkpoint_record(path: Path = CHECKPOINT) -> dict[str, Any]:
    """How the shipped checkpoint was made (the JSON the training script wrote next to it)."""
    return json.loads(path.with_suffix(".json").read_text())


def predicted_parameters(total: int, p: float, C: int, n_layer: int) -> int:
    r"""Parameters left after pruning a fraction `p` of the heads of every layer: $N - p \cdot L (4C^2 + 3C)$.

    Per layer the heads own q, k, v (3C² weights + 3C biases) and the columns of W_o (C² weights; its bias
    stays). Exact for GPT-2 and BERT.
    """
    return round(total - p * n_layer * (4 * C * C + 3 * C))


def predicted_latency_ratio(p: float, C: int, T: int) -> float:
    r"""Time after / before pruning a fraction `p` of heads, if time followed FLOPs: $1 - p \cdot F_h / F$.

    Per token and layer the heads own $F_h = 2 \cdot 4C^2 + 2 \cdot 2TC$ FLOPs (projections; scores and
    weighted values over T keys) and the MLP $2 \cdot 8C^2$; LayerNorm, softmax and embeddings are neglected.
    """
    heads = 2 * 4 * C * C + 2 * 2 * T * C
    mlp = 2 * 8 * C * C
    return 1 - p * heads / (heads + mlp)
