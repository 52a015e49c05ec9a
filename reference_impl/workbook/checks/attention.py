"""Self-checks for lessons/06_attention_registration.ipynb: a sliding-window mask function, a recorder of
attention, predictions about registrations.

    check_sliding_window_mask(my_sliding_window_mask)  # (sliding_window) -> (b, h, q, kv) -> bool
    check_first_key_recorder(MyFirstKeyRecorder)       # a registered function that records attention to key 0
    check_trap_predictions(my_predictions)             # which registrations keep the logits right: predicted

Each prints one success line or raises `CheckFailed` saying, in plain words, what differs (and, for the
mistakes everyone makes, why); code still raising NotImplementedError gives `ExerciseNotFinished`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from reference_impl.attention import eager_attention_forward
from reference_impl.masking import (
    and_masks,
    eager_mask,
    mask_picture,
    sdpa_mask,
    sliding_window_causal_mask_function,
    sliding_window_overlay,
)
from reference_impl.workbook.checks._core import (
    CheckFailed,
    ExerciseNotFinished,
    check_tensor,
    passed,
    student_call,
)

__all__ = [
    "TRAP_SCENARIOS",
    "check_first_key_recorder",
    "check_sliding_window_mask",
    "check_trap_predictions",
]

_WINDOW_EXERCISE = "sliding-window mask"


# ------------------------------------------------------------------------------------------------------------
# Exercise 1: a sliding-window causal mask function
# ------------------------------------------------------------------------------------------------------------
def _strict_causal(b: Any, h: Any, q: Any, kv: Any) -> Any:
    return kv < q


def _window_mistakes(w: int) -> dict[str, Callable[..., Any]]:
    """The usual wrong answers for window `w`, each with what to tell the student."""
    too_many = (
        f"your window holds {w + 1} keys, one too many: with `kv_idx >= q_idx - w` the query's own key is "
        "counted on top of w; keep `kv_idx > q_idx - w` (w keys, the query's own included)"
    )
    diagonal = "the diagonal is masked: a query must attend to itself (`kv_idx <= q_idx`, not `<`)"
    future = "future keys are allowed: the window alone is not causal; AND it with `kv_idx <= q_idx`"
    mistakes = {
        too_many: sliding_window_causal_mask_function(w + 1),
        diagonal: and_masks(sliding_window_overlay(w), _strict_causal),
        future: sliding_window_overlay(w),
    }
    if w > 1:
        mistakes[
            f"your window holds {w - 1} keys, one too few: the query's own key counts as one of the w"
        ] = sliding_window_causal_mask_function(w - 1)
    return mistakes


def _build(fn: Callable[..., Any], T: int, S: int, q_offset: int) -> torch.Tensor:
    mask = sdpa_mask(2, T, S, q_offset=q_offset, mask_function=fn, allow_is_causal_skip=False)
    if mask is None:  # only a causal skip returns None, and it is not allowed here
        raise RuntimeError(f"sdpa_mask returned no mask for T={T}, S={S} with allow_is_causal_skip=False")
    return mask[0, 0]


def check_sliding_window_mask(my_sliding_window_mask: Callable[[int], Callable[..., Any]]) -> None:
    """Check `my_sliding_window_mask(w)` returns a mask function equal to
    `sliding_window_causal_mask_function(w)`.

    Built on index grids of several sizes (a prefill and a chunk after a cache) for windows 1, 2, 3 and 5.
    """
    for w in (3, 1, 2, 5):
        fn = student_call(_WINDOW_EXERCISE, my_sliding_window_mask, w)
        if not callable(fn):
            raise CheckFailed(
                f"my_sliding_window_mask({w}) returned {type(fn).__name__}; it must return a mask function "
                "(batch_idx, head_idx, q_idx, kv_idx) -> bool"
            )
        for T, S, q_offset in ((7, 7, 0), (3, 7, 4)):
            try:
                got = student_call(_WINDOW_EXERCISE, _build, fn, T, S, q_offset)
            except (CheckFailed, ExerciseNotFinished):
                raise
            except Exception as e:  # the student's function failed on broadcast index tensors
                raise CheckFailed(
                    f"your mask function raised {type(e).__name__}: {e} when called with broadcast index "
                    "tensors; use only comparisons and arithmetic on q_idx and kv_idx (no `if`, no "
                    "`int(...)`)"
                ) from e
            expected = _build(sliding_window_causal_mask_function(w), T, S, q_offset)
            if got.shape != expected.shape or got.dtype != torch.bool:
                raise CheckFailed(
                    f"sliding_window={w}: the mask has shape {tuple(got.shape)} and dtype {got.dtype}; "
                    f"expected a bool mask of shape {tuple(expected.shape)} (return a comparison, e.g. "
                    "`kv_idx <= q_idx`)"
                )
            if torch.equal(got, expected):
                continue
            for advice, wrong in _window_mistakes(w).items():
                if torch.equal(got, _build(wrong, T, S, q_offset)):
                    raise CheckFailed(f"sliding_window={w}: {advice}.\n{_pictures(got, expected, q_offset)}")
            q, kv = (int(i) for i in (got != expected).nonzero()[0])
            verb = "may attend to" if bool(got[q, kv]) else "may not attend to"
            raise CheckFailed(
                f"sliding_window={w}: in yours, query {q + q_offset} {verb} key {kv}; expected the "
                f"opposite.\n{_pictures(got, expected, q_offset)}"
            )
    passed(_WINDOW_EXERCISE)


def _pictures(got: torch.Tensor, expected: torch.Tensor, q_offset: int) -> str:
    return f"yours:\n{mask_picture(got, q_offset)}\nexpected:\n{mask_picture(expected, q_offset)}"


# ------------------------------------------------------------------------------------------------------------
# A custom function worth keeping: record the attention each query pays to the first key
# ------------------------------------------------------------------------------------------------------------
_FIRST_KEY_EXERCISE = "first-key recorder"


def _tiny_llama_and_tokens() -> tuple[Any, torch.Tensor]:
    """A seeded tiny grouped-query Llama (2 layers, 4 query and 2 key/value heads) and a (2, 7) batch of
    tokens."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return model, torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))


def check_first_key_recorder(recorder_class: Callable[[], Any]) -> None:
    """`recorder_class()` is an attention function with a `records` dict: `records[layer] = weights[..., 0]`.

    Registered by name in transformers (with `eager_mask`) and run on a tiny grouped-query Llama, it must
    leave the logits exactly as transformers' eager attention gives them, and record for every layer (keyed by
    `module.layer_idx`) the `(B, H, T)` attention weight each query puts on key 0, as eager's
    `output_attentions` reports it.
    """
    from reference_impl.attention import registered_in_transformers

    model, ids = _tiny_llama_and_tokens()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        reference = model(input_ids=ids, output_attentions=True)
    recorder = student_call(_FIRST_KEY_EXERCISE, recorder_class)
    if not isinstance(getattr(recorder, "records", None), dict):
        raise CheckFailed(
            "the recorder needs a `records` dict, filled by each call: records[module.layer_idx] = ..."
        )
    try:
        with registered_in_transformers("first_key_check", recorder, eager_mask):
            model.set_attn_implementation("first_key_check")
            with torch.no_grad():
                logits = student_call(_FIRST_KEY_EXERCISE, lambda: model(input_ids=ids).logits)
    finally:
        model.set_attn_implementation("eager")
    if not torch.allclose(logits, reference.logits, atol=1e-6, rtol=0):
        raise CheckFailed(
            "the model's logits changed: a recorder must return exactly what the attention it wraps returns "
            "(call eager_attention_forward and pass its (attn_output, attn_weights) through)"
        )
    if sorted(recorder.records) != list(range(model.config.num_hidden_layers)):
        raise CheckFailed(
            f"records has keys {sorted(recorder.records)}; expected one per layer, keyed by "
            f"module.layer_idx: {list(range(model.config.num_hidden_layers))}"
        )
    for layer, weights in enumerate(reference.attentions):  # (B, H, T, S)
        expected = weights[..., 0]  # (B, H, T)
        got = recorder.records[layer]
        if isinstance(got, torch.Tensor) and got.shape == weights.shape:
            raise CheckFailed(
                f"records[{layer}] has the whole (B, H, T, S) weights {tuple(got.shape)}; keep the first key "
                "only, weights[..., 0], shape (B, H, T)"
            )
        check_tensor(f"records[{layer}] (the weight on key 0)", got, expected, atol=1e-6)
    passed(_FIRST_KEY_EXERCISE)


# ------------------------------------------------------------------------------------------------------------
# Predict the traps: which registrations give sdpa's logits on every real token?
# ------------------------------------------------------------------------------------------------------------
_TRAP_EXERCISE = "trap predictions"

#: name -> (attention function, mask builder, batch, what it is). "ours" = reference_impl's eager (None =
#: causal), "naive" = transformers' Llama eager (None = no mask). "padded": one row left-padded; "plain": no
#: padding.
TRAP_SCENARIOS: dict[str, str] = {
    "A": "ours + eager_mask, padded batch",
    "B": "ours + no mask builder, padded batch",
    "C": "naive + sdpa_mask, plain batch",
    "D": "naive + sdpa_mask, padded batch",
    "E": "naive + eager_mask, plain batch",
    "F": "ours + sdpa_mask, plain batch",
}

_TRAP_REASONS = {
    "A": "a mask builder is registered and the mask it builds carries causality and padding",
    "B": "without a builder the model passes None; ours reads it as causal, but the padding is lost",
    "C": "sdpa_mask returns None for a plain causal batch, and transformers' eager reads None as no mask at "
    "all",
    "D": "with padding sdpa_mask builds a bool mask (True = attend), and transformers' eager adds it to the "
    "scores: True becomes +1, nothing is masked",
    "E": "eager_mask always builds the additive mask, so even the naive function gets causality",
    "F": "sdpa_mask returns None, and ours reads None as causal for a causal layer",
}


def _trap_outcomes() -> dict[str, bool]:
    from transformers.models.llama.modeling_llama import eager_attention_forward as naive

    from reference_impl.attention import registered_in_transformers

    model, ids = _tiny_llama_and_tokens()
    padding = torch.ones(2, 7, dtype=torch.long)
    padding[1, :3] = 0
    batches = {"padded": {"input_ids": ids, "attention_mask": padding}, "plain": {"input_ids": ids}}
    functions = {"ours": eager_attention_forward, "naive": naive}
    builders = {"eager_mask": eager_mask, "sdpa_mask": sdpa_mask, "no mask builder": None}
    outcomes = {}
    for name, description in TRAP_SCENARIOS.items():
        function, builder, batch = description.replace(" batch", "").replace(" + ", ", ").split(", ")
        inputs = batches[batch]
        real = inputs.get("attention_mask", torch.ones(2, 7)).bool()
        model.set_attn_implementation("sdpa")
        with torch.no_grad():
            reference = model(**inputs).logits
        try:
            with registered_in_transformers(f"trap_{name}", functions[function], builders[builder]):
                model.set_attn_implementation(f"trap_{name}")
                with torch.no_grad():
                    logits = model(**inputs).logits
        finally:
            model.set_attn_implementation("sdpa")
        outcomes[name] = bool(torch.allclose(logits[real], reference[real], atol=1e-5, rtol=0))
    return outcomes


def check_trap_predictions(fn: Callable[[], Any]) -> None:
    """`fn()` returns `{scenario: bool}` for every key of `TRAP_SCENARIOS`: True if the logits of every real
    token equal transformers' sdpa (atol 1e-5). The check runs each scenario on a tiny grouped-query Llama
    and, for the first wrong prediction, says why the model does what it does."""
    predicted = student_call(_TRAP_EXERCISE, fn)
    if not isinstance(predicted, dict) or sorted(predicted) != sorted(TRAP_SCENARIOS):
        raise CheckFailed(
            f"expected a dict with one True/False per scenario {sorted(TRAP_SCENARIOS)}, got {predicted!r}"
        )
    actual = _trap_outcomes()
    for name, description in TRAP_SCENARIOS.items():
        if bool(predicted[name]) != actual[name]:
            verdict = "gives sdpa's logits" if actual[name] else "changes the logits of real tokens"
            raise CheckFailed(
                f"scenario {name} ({description}): you predicted {bool(predicted[name])}, but it {verdict}: "
                f"{_TRAP_REASONS[name]}"
            )
    passed(_TRAP_EXERCISE)
