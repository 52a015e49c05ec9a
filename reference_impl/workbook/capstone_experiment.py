r"""The capstone's task, training loop and measurements: what lessons/08_capstone.ipynb runs on the shipped
model.

The task is key-value recall (an induction task): a sequence of random symbols in which `NUM_PAIRS` keys stand
each right before a value, and which ends with the same keys again, in another order. At each of those last
positions the model must name the value that followed that key earlier:

    ... 7 K2 19 3 11 K0 5 ... 0 K1 23 ...   K0 K2 K1 ...        labels: 5, 19, 23, ... at the last positions
                                                                (every other position carries no label)

Two attention steps solve it: a head that looks one position back (so that a value "knows" the key before it),
and a head that finds the earlier copy of the current key, wherever it is (an induction head). The first needs
relative position 1 exactly, the second needs the match to survive any distance. The model is trained at
length `TRAINED_LENGTH` only (`scripts/train_capstone_model.py`), then asked to do the same at 2, 4 and 8
times that length with each RoPE scaling rule (`length_extension`). Shape letters: B batch, T positions, V
vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from reference_impl.attention import AttentionEntropyRecorder, AttentionInterface
from reference_impl.checkpointing import set_gradient_checkpointing
from reference_impl.masking import AttentionMaskInterface, eager_mask
from reference_impl.pruning_heads import prune_heads, pruned_heads_of
from reference_impl.pruning_importance import head_importance, mask_heads, select_heads_to_prune
from reference_impl.registry import scoped_registration
from reference_impl.workbook.capstone import CapstoneConfig, CapstoneForCausalLM
from reference_impl.workbook.measure import PeakMemory, SavedTensors

__all__ = [
    "CHECKPOINT",
    "FINETUNED_CHECKPOINT",
    "IGNORE_INDEX",
    "NUM_KEYS",
    "NUM_PAIRS",
    "RULES",
    "TRAINED_LENGTH",
    "VOCAB_SIZE",
    "attention_entropy",
    "evaluate",
    "finetune_at_length",
    "head_ablation",
    "layer_saved_bytes",
    "length_extension",
    "load_capstone_model",
    "new_model",
    "prune_greedily",
    "rope_parameters_for",
    "save_capstone_model",
    "scaled_config",
    "step_memory",
    "task_accuracy",
    "task_batch",
    "task_loss",
    "train",
    "with_rope",
]

#: Symbols 0 .. V-1: values (and filler) are 0 .. V - NUM_KEYS - 1, keys the last NUM_KEYS symbols.
VOCAB_SIZE = 32
#: Distinct key symbols.
NUM_KEYS = 8
#: Key-value pairs per sequence, each asked for once at the end.
NUM_PAIRS = 4
#: The length every training sequence has (L0 for the scaling rules).
TRAINED_LENGTH = 32
#: The label of positions that ask nothing (cross-entropy skips them).
IGNORE_INDEX = -100
#: RoPE's base b for the capstone: small, so that within L0 positions the fast pairs turn many times and the
#: slow pairs less than once, the proportions a Llama with b = 10^4 and L0 = 4096 has.
ROPE_THETA = 100.0

#: The scaling rules compared, with the extra keys each needs (the factor s and L0 are filled in).
RULES: dict[str, dict[str, Any]] = {
    "default": {},
    "linear": {},
    "dynamic": {},
    "yarn": {},
    "llama3": {"low_freq_factor": 1.0, "high_freq_factor": 4.0},
}

_DATA = Path(__file__).resolve().parent / "data"
#: The shipped weights (trained at TRAINED_LENGTH), and those after a short fine-tune at 4x with linear
#: scaling.
CHECKPOINT = _DATA / "capstone_tiny_llama"
FINETUNED_CHECKPOINT = _DATA / "capstone_tiny_llama_pi4x"


def task_batch(
    batch_size: int, length: int, generator: torch.Generator, num_pairs: int = NUM_PAIRS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key-value recall sequences: input_ids (B, T) and labels (B, T), `IGNORE_INDEX` except at the last
    `num_pairs` positions, where a key is asked for again and the label is the value that followed it.

    The pairs sit at random even offsets of the first T - num_pairs positions, so a key can be anywhere from
    num_pairs to T - 1 positions before its question. Deterministic for a seeded `generator`.
    """
    n_values = VOCAB_SIZE - NUM_KEYS
    n_slots = (length - num_pairs) // 2
    if not 1 <= num_pairs <= min(NUM_KEYS, n_slots):
        raise ValueError(
            f"num_pairs={num_pairs} pairs do not fit: expected 1 <= num_pairs <= min({NUM_KEYS} keys, "
            f"{n_slots} slots of 2 in length={length} - num_pairs)"
        )
    B, P = batch_size, num_pairs
    rows = torch.arange(B)[:, None]  # (B, 1)
    input_ids = torch.randint(0, n_values, (B, length), generator=generator)  # (B, T) filler and values
    keys = (
        torch.rand(B, NUM_KEYS, generator=generator).argsort(dim=1)[:, :P] + n_values
    )  # (B, P) distinct keys
    slots = (
        torch.rand(B, n_slots, generator=generator).argsort(dim=1)[:, :P] * 2
    )  # (B, P) where each key stands
    values = input_ids[rows, slots + 1]  # (B, P) the symbol right after each key
    input_ids[rows, slots] = keys
    order = torch.rand(B, P, generator=generator).argsort(dim=1)  # (B, P) the order of the questions
    input_ids[:, length - P :] = keys.gather(1, order)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, length - P :] = values.gather(1, order)
    return input_ids, labels


def task_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the positions that have a target."""
    input_ids, labels = batch
    logits = model(input_ids)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the positions that have a target, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        input_ids, labels = batch
        logits = model(input_ids)  # (B, T, V)
        keep = labels != IGNORE_INDEX
        accuracy = (logits.argmax(-1)[keep] == labels[keep]).float().mean().item()
        loss = F.cross_entropy(logits[keep], labels[keep]).item()
    finally:
        model.train(was_training)
    return accuracy, loss


def task_accuracy(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Fraction of targets the model names (argmax), in eval mode."""
    return evaluate(model, batch)[0]


def train(
    model: torch.nn.Module,
    steps: int,
    length: int = TRAINED_LENGTH,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    warmup: int = 50,
) -> list[float]:
    """AdamW with linear warm-up and cosine decay on fresh random batches; returns the loss of every step.

    Deterministic on one thread for a given seed (the batches come from their own generator).
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    losses = []
    for _ in range(steps):
        loss = task_loss(model, task_batch(batch_size, length, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def rope_parameters_for(
    rule: str, factor: float, original: int = TRAINED_LENGTH, theta: float = ROPE_THETA
) -> tuple[dict[str, Any], int]:
    """`(rope_parameters, max_position_embeddings)` that stretch a model trained at `original` by `factor`.

    For "dynamic", `max_position_embeddings` stays `original` (dynamic NTK grows its base past it at run
    time); for the others it is `factor * original`, and yarn and llama3 get
    `original_max_position_embeddings = original`. A factor of 1 with any rule, and the rule "default", give
    plain RoPE.
    """
    if rule not in RULES:
        raise KeyError(f"rule={rule!r} is not one of {list(RULES)}")
    if factor < 1:
        raise ValueError(f"factor={factor} must be >= 1 (the new length over the trained one)")
    if rule == "default" or factor == 1:
        return {"rope_type": "default", "rope_theta": theta}, original
    params: dict[str, Any] = {"rope_type": rule, "rope_theta": theta, "factor": float(factor), **RULES[rule]}
    if rule in ("yarn", "llama3"):  # the two rules that read L0 (linear and dynamic do not)
        params["original_max_position_embeddings"] = original
    return params, original if rule == "dynamic" else int(factor * original)


def scaled_config(config: CapstoneConfig, rule: str, factor: float) -> CapstoneConfig:
    """A copy of `config` with RoPE stretched by `factor` under `rule` (see `rope_parameters_for`)."""
    params, max_pos = rope_parameters_for(
        rule, factor, original=TRAINED_LENGTH, theta=config.rope_parameters.get("rope_theta", ROPE_THETA)
    )
    return dataclasses.replace(
        config, rope_parameters=params, max_position_embeddings=max_pos, pruned_heads={}
    )


def with_rope(model: CapstoneForCausalLM, rule: str, factor: float) -> CapstoneForCausalLM:
    """The same weights in a model whose RoPE follows `rule` with `factor` (RoPE has no weights to change)."""
    stretched = CapstoneForCausalLM(scaled_config(model.config, rule, factor))
    stretched.load_state_dict(model.state_dict())
    return stretched.eval()


def length_extension(
    model: CapstoneForCausalLM,
    multiples: Sequence[int] = (1, 2, 4, 8),
    rules: Iterable[str] = tuple(RULES),
    batch_size: int = 64,
    seed: int = 1234,
) -> dict[str, dict[int, tuple[float, float]]]:
    """`{rule: {multiple: (accuracy, loss)}}` at length `multiple * TRAINED_LENGTH`, factor s = multiple.

    The same held-out batch per length for every rule, so the rules are compared on the same symbols.
    """
    batches = {
        m: task_batch(batch_size, m * TRAINED_LENGTH, torch.Generator().manual_seed(seed + m))
        for m in multiples
    }
    return {rule: {m: evaluate(with_rope(model, rule, m), batches[m]) for m in multiples} for rule in rules}


def save_capstone_model(model: CapstoneForCausalLM, path: Path) -> Path:
    """Write the config and plain tensors to `path` + ".pt" (small and portable); returns the file."""
    file = path.with_suffix(".pt")
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    torch.save({"config": dataclasses.asdict(model.config), "state_dict": state}, file)
    return file


def load_capstone_model(path: Path = CHECKPOINT) -> CapstoneForCausalLM:
    """A model saved by `save_capstone_model` (`path` without suffix), in eval mode, with the RoPE it was
    saved with."""
    saved = torch.load(path.with_suffix(".pt"), map_location="cpu", weights_only=True)
    model = CapstoneForCausalLM(CapstoneConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def new_model(seed: int = 0) -> CapstoneForCausalLM:
    """The untrained capstone model: `CapstoneConfig()` defaults with base ROPE_THETA, initialised from
    `seed`."""
    torch.manual_seed(seed)
    config = CapstoneConfig(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=TRAINED_LENGTH,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
    )
    return CapstoneForCausalLM(config)


def finetune_at_length(
    model: CapstoneForCausalLM, rule: str, factor: int, steps: int, seed: int = 1, lr: float = 1e-3
) -> CapstoneForCausalLM:
    """A copy of `model` stretched by `factor` under `rule`, trained `steps` steps at `factor` x
    TRAINED_LENGTH (Position Interpolation's recipe with rule "linear"); returns it in eval mode."""
    stretched = with_rope(model, rule, factor)
    train(stretched, steps, length=factor * TRAINED_LENGTH, batch_size=16, lr=lr, seed=seed, warmup=10)
    return stretched.eval()


def step_memory(
    config: CapstoneConfig,
    batch_size: int,
    length: int,
    policy: str | None = None,
    seed: int = 0,
    every_n_layers: int = 1,
) -> tuple[int, int]:
    """Exact bytes of one training step of a fresh model: (kept for backward after the forward, peak of the
    step).

    Counted by `PeakMemory` from the forward's first op to the end of backward; the parameters (which exist
    before) are not counted, their gradients are. `policy` and `every_n_layers` are passed to
    `set_gradient_checkpointing` (policy None: off).
    """
    torch.manual_seed(seed)
    model = CapstoneForCausalLM(config).train()
    if policy is not None:
        set_gradient_checkpointing(model, policy=policy, every_n_layers=every_n_layers)
    input_ids, labels = task_batch(batch_size, length, torch.Generator().manual_seed(seed))
    with PeakMemory(baseline=list(model.parameters())) as mem:
        logits = model(input_ids)
        kept = mem.current_bytes - logits.untyped_storage().nbytes()
        F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX).backward()
    return kept, mem.peak_bytes


def layer_saved_bytes(config: CapstoneConfig, batch_size: int, length: int) -> int:
    """Bytes one decoder layer saves for backward (`SavedTensors`, each storage once, weights excluded):
    a·u."""
    torch.manual_seed(0)
    model = CapstoneForCausalLM(config).train()
    x = torch.randn(batch_size, length, config.hidden_size, requires_grad=True)
    cos_sin = model.model.rotary_emb(x, torch.arange(length)[None])
    with SavedTensors(exclude=list(model.parameters())) as saved:
        model.model.layers[0](x, attention_mask=None, position_embeddings=cos_sin)
    return saved.unique_bytes


def attention_entropy(
    model: CapstoneForCausalLM, batch: tuple[torch.Tensor, torch.Tensor], positions: str = "asked"
) -> list[torch.Tensor]:
    """Mean entropy (nats) of each head's attention, per layer a (H_l,) tensor for the heads it holds
    (original order).

    `positions="asked"` averages over the positions that ask a question (where the induction step happens),
    "values" over the positions right after each key before the questions (where a value must look one back to
    learn its key), "all" over every position but the first (which has one key to look at: entropy 0 always).

    Runs the model once with `AttentionEntropyRecorder` registered as its attention (eager weights) for the
    call.
    """
    recorder = AttentionEntropyRecorder()
    config = dataclasses.replace(model.config, attn_implementation="capstone_entropy", pruned_heads={})
    probe = CapstoneForCausalLM(config)
    _copy_pruning(model, probe)
    input_ids, labels = batch
    with scoped_registration(AttentionInterface, "capstone_entropy", recorder):
        with scoped_registration(AttentionMaskInterface, "capstone_entropy", eager_mask):
            with torch.no_grad():
                probe.eval()(input_ids)
    if positions not in ("asked", "values", "all"):
        raise ValueError(f"positions={positions!r} must be 'asked', 'values' or 'all'")
    asked = labels != IGNORE_INDEX  # (B, T)
    if positions == "values":
        is_key = (input_ids >= VOCAB_SIZE - NUM_KEYS) & ~asked  # (B, T) the keys of the pairs
        asked = torch.zeros_like(asked)
        asked[:, 1:] = is_key[:, :-1]  # the position after each key holds its value
    elif positions == "all":
        asked = torch.ones_like(asked)
        asked[:, 0] = False
    return [_mean_at(recorder.records[i], asked) for i in range(len(probe.model.layers))]


def _mean_at(entropy: torch.Tensor, asked: torch.Tensor) -> torch.Tensor:
    """(B, H, T) entropies averaged over the (b, t) where `asked` (B, T) is True: (H,)."""
    weights = asked[:, None, :].float()  # (B, 1, T)
    return (entropy * weights).sum(dim=(0, 2)) / weights.sum(dim=(0, 2))


def _copy_pruning(source: CapstoneForCausalLM, target: CapstoneForCausalLM) -> None:
    """Give `target` the pruned shapes of `source` (same config otherwise), then its weights."""
    # Read by attribute: torch's stubs type a Module's attribute `Tensor | Module`.
    layers: list[Any] = list(source.model.layers)
    heads = {i: sorted(a.self_attn.pruned_heads) for i, a in enumerate(layers) if a.self_attn.pruned_heads}
    if heads:
        prune_heads(target, heads)
    target.load_state_dict(source.state_dict())


def prune_greedily(
    model: CapstoneForCausalLM,
    score_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    eval_batch: tuple[torch.Tensor, torch.Tensor],
    steps: int,
) -> list[dict[str, Any]]:
    """Prune one head at a time, the least important by `head_importance` recomputed on the pruned model.

    Returns one row per state, the unpruned one first: `{"pruned": {layer: heads}, "accuracy", "loss",
    "parameters"}`. Changes `model` in place.
    """

    def row() -> dict[str, Any]:
        accuracy, loss = evaluate(model, eval_batch)
        n = sum(p.numel() for p in model.parameters())
        return {"pruned": pruned_heads_of(model), "accuracy": accuracy, "loss": loss, "parameters": n}

    rows = [row()]
    for _ in range(steps):
        importance = head_importance(model, score_batches, loss_fn=task_loss)
        prune_heads(model, select_heads_to_prune(importance, 1))
        rows.append(row())
    return rows


def head_ablation(model: CapstoneForCausalLM, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Accuracy with each head's output zeroed alone (`mask_heads`), shape (L, H): what the task loses without
    it."""
    config = model.config
    accuracy = torch.empty(config.num_hidden_layers, config.num_attention_heads)
    for layer in range(config.num_hidden_layers):
        for head in range(config.num_attention_heads):
            with mask_heads(model, {layer: [head]}):
                accuracy[layer, head] = evaluate(model, batch)[0]
    return accuracy
