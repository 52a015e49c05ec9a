"""The capstone's task, shipped weights and measurements (reference_impl/workbook/capstone_experiment.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from reference_impl.workbook import capstone_experiment as cx
from reference_impl.workbook.capstone import CapstoneConfig


def test_task_batch_asks_for_the_value_after_each_key_golden_rows() -> None:
    input_ids, labels = cx.task_batch(64, 20, torch.Generator().manual_seed(0))
    n_values = cx.VOCAB_SIZE - cx.NUM_KEYS
    P = cx.NUM_PAIRS
    assert (labels[:, : 20 - P] == cx.IGNORE_INDEX).all()
    for row, target in zip(input_ids.tolist(), labels.tolist(), strict=True):
        questions = row[20 - P :]
        assert sorted(questions) == sorted(set(questions)) and min(questions) >= n_values  # distinct keys
        for key, value in zip(questions, target[20 - P :], strict=True):
            where = [i for i, t in enumerate(row[: 20 - P]) if t == key]
            assert len(where) == 1  # each key stands once before its question
            assert row[where[0] + 1] == value < n_values  # the label is the symbol right after it


def test_task_batch_is_deterministic_and_refuses_a_length_too_short() -> None:
    a = cx.task_batch(4, 32, torch.Generator().manual_seed(5))
    b = cx.task_batch(4, 32, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match=r"num_pairs=4 pairs do not fit: .* 2 slots of 2 in length=8"):
        cx.task_batch(1, 8, torch.Generator())


@pytest.mark.parametrize(
    ("rule", "factor", "expected_max_pos", "has_original"),
    [
        ("default", 4, 32, False),
        ("linear", 1, 32, False),
        ("linear", 4, 128, False),
        ("dynamic", 4, 32, False),
        ("yarn", 8, 256, True),
        ("llama3", 2, 64, True),
    ],
)
def test_rope_parameters_for_each_rule(rule, factor, expected_max_pos, has_original) -> None:
    params, max_pos = cx.rope_parameters_for(rule, factor, original=32, theta=100.0)
    assert max_pos == expected_max_pos
    assert params["rope_theta"] == 100.0
    assert params["rope_type"] == (rule if factor > 1 else "default")
    assert ("original_max_position_embeddings" in params) == has_original
    with pytest.raises(KeyError, match=r"rule='ntk' is not one of"):
        cx.rope_parameters_for("ntk", 2)
    with pytest.raises(ValueError, match=r"factor=0.5 must be >= 1"):
        cx.rope_parameters_for(rule, 0.5)


def test_shipped_weights_are_small_recorded_and_solve_the_task() -> None:
    for path in (cx.CHECKPOINT, cx.FINETUNED_CHECKPOINT):
        assert path.with_suffix(".pt").stat().st_size < 2 * 2**20
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["made_by"].startswith("python scripts/train_capstone_model.py")
        assert {"steps", "seed", "train_seconds", "machine"} <= record.keys()
        assert record["machine"]["torch"] and record["machine"]["transformers"]
    model = cx.load_capstone_model()
    record = json.loads(cx.CHECKPOINT.with_suffix(".json").read_text())
    held_out = cx.task_batch(256, cx.TRAINED_LENGTH, torch.Generator().manual_seed(4321))
    assert cx.evaluate(model, held_out)[0] == record["held_out_accuracy"] == 1.0
    tuned = cx.load_capstone_model(cx.FINETUNED_CHECKPOINT)
    assert tuned.config.rope_parameters["rope_type"] == "linear"
    long = cx.task_batch(64, 4 * cx.TRAINED_LENGTH, torch.Generator().manual_seed(4321))
    assert cx.evaluate(tuned, long)[0] == pytest.approx(
        json.loads(cx.FINETUNED_CHECKPOINT.with_suffix(".json").read_text())["accuracy_at_4x_after"], abs=1e-4
    )


def test_with_rope_changes_only_the_rotation() -> None:
    model = cx.load_capstone_model()
    stretched = cx.with_rope(model, "yarn", 4)
    assert stretched.config.rope_parameters["factor"] == 4.0
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), stretched.state_dict().values(), strict=True)
    )
    ids = torch.randint(0, 32, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(model(ids), stretched(ids), atol=1e-3)


def test_length_extension_table_shape_and_plain_rope_at_one_x() -> None:
    model = cx.load_capstone_model()
    table = cx.length_extension(model, multiples=(1, 2), rules=("default", "dynamic"), batch_size=8)
    assert list(table) == ["default", "dynamic"] and list(table["default"]) == [1, 2]
    assert table["default"][1] == table["dynamic"][1]  # factor 1: every rule is plain RoPE
    assert table["default"][1][0] == 1.0


def test_step_memory_follows_the_checkpointing_formulas() -> None:
    config = CapstoneConfig(num_hidden_layers=4, max_position_embeddings=32)
    B, T, L = 2, 32, 4
    u = B * T * config.hidden_size * 4
    a = cx.layer_saved_bytes(config, B, T) / u
    none, _ = cx.step_memory(config, B, T)
    full, _ = cx.step_memory(config, B, T, "full")
    sqrt, _ = cx.step_memory(config, B, T, "sqrt")
    assert a > 10  # a transformer layer keeps many activations per unit of input
    # the same outside part E' under both checkpointing policies: L boundaries kept versus ceil(L / 2)
    assert (full - sqrt) / u == pytest.approx(L - math.ceil(L / 2), abs=1e-9)
    assert (none - full) / u == pytest.approx(L * a - L, abs=2.0)  # E and E' differ by about one unit


def test_attention_entropy_is_zero_for_a_single_key_and_bounded() -> None:
    model = cx.load_capstone_model()
    batch = cx.task_batch(16, cx.TRAINED_LENGTH, torch.Generator().manual_seed(0))
    per_layer = cx.attention_entropy(model, batch, positions="all")
    assert [tuple(e.shape) for e in per_layer] == [(4,), (4,)]
    assert all(((e >= 0) & (e <= math.log(cx.TRAINED_LENGTH))).all() for e in per_layer)
    first_only = (batch[0][:, :1], torch.zeros_like(batch[1][:, :1]))  # one position: one key to look at
    assert all((e == 0).all() for e in cx.attention_entropy(model, first_only, positions="asked"))
    values = cx.attention_entropy(model, batch, positions="values")
    assert not all(torch.equal(v, e) for v, e in zip(values, per_layer, strict=True))
    with pytest.raises(ValueError, match="positions='some' must be 'asked', 'values' or 'all'"):
        cx.attention_entropy(model, batch, positions="some")


def test_prune_greedily_removes_one_head_per_step_and_reports_it() -> None:
    model = cx.load_capstone_model()
    batches = [cx.task_batch(16, cx.TRAINED_LENGTH, torch.Generator().manual_seed(1))]
    rows = cx.prune_greedily(model, batches, batches[0], steps=2)
    assert [sum(len(h) for h in r["pruned"].values()) for r in rows] == [0, 1, 2]
    assert (
        rows[0]["parameters"] - rows[1]["parameters"] == 4 * 64 * 16
    )  # q, k, v rows and o columns of a head
    assert rows[0]["accuracy"] == 1.0


def test_head_ablation_finds_the_previous_token_head_of_the_shipped_model() -> None:
    model = cx.load_capstone_model()
    batch = cx.task_batch(64, cx.TRAINED_LENGTH, torch.Generator().manual_seed(11))
    accuracy = cx.head_ablation(model, batch)
    assert accuracy.shape == (2, 4)
    assert ((accuracy >= 0) & (accuracy <= 1)).all()
    # the shipped weights: layer 0 head 1 looks one position back at the values, and nothing replaces it
    assert accuracy.argmin().item() == 1 and accuracy[0, 1] < 0.5
    values = cx.attention_entropy(model, batch, positions="values")[0]
    assert values[1] < 0.5  # it points: near-zero entropy where it works
