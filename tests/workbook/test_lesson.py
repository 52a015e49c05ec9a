"""The set-up cell and the shared helpers every lesson uses."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from reference_impl.workbook import lesson
from reference_impl.workbook.lesson import (
    compare,
    load_record,
    plot_measured_vs_predicted,
    record_provenance,
    setup,
)


def test_setup_makes_random_numbers_repeatable_and_prints_one_banner(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup(seed=3, threads=1)
    a = torch.randn(5)
    found = setup(seed=3, threads=1)
    b = torch.randn(5)
    assert torch.equal(a, b)
    assert torch.get_num_threads() == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and f"torch {torch.__version__}" in out[0]
    assert found["torch"] == torch.__version__ and "transformers" in found


def test_compare_says_bitwise_when_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    x = torch.randn(3, 4)
    assert compare(x * 2, x + x, name="t") == 0.0
    assert capsys.readouterr().out == "t: bitwise equal, shape (3, 4), torch.float32\n"


def test_compare_prints_a_rounded_bound_within_tolerance(capsys: pytest.CaptureFixture[str]) -> None:
    x = torch.ones(4)
    compare(x + 3e-7, x, atol=1e-6, name="t")
    assert capsys.readouterr().out == "t: max |diff| < 1e-06 (within atol=1e-06, rtol=0)\n"


def test_compare_fails_beyond_tolerance_and_on_shape_or_dtype() -> None:
    x = torch.ones(4)
    with pytest.raises(AssertionError, match="t: "):
        compare(x + 1e-3, x, atol=1e-6, name="t")
    with pytest.raises(AssertionError, match=r"shapes differ: ours \(4,\), theirs \(2, 2\)"):
        compare(x, x.view(2, 2))
    with pytest.raises(AssertionError, match="dtypes differ"):
        compare(x, x.double())


def test_load_record_names_the_missing_file_and_what_exists(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lesson, "RESULTS_DIR", tmp_path)
    (tmp_path / "conv1d_cpu.json").write_text(
        json.dumps(
            {
                "machine": {
                    "gpu": "NVIDIA H200",
                    "torch": "2.11",
                    "transformers": "5.22.2",
                    "date_utc": "2026-11-30T07:00:00Z",
                }
            }
        )
    )
    with pytest.raises(FileNotFoundError, match=r"no recorded result 'nope'.*\['conv1d_cpu'\]"):
        load_record("nope")
    line = record_provenance(load_record("conv1d_cpu"))
    assert line == "measured on NVIDIA H200, torch 2.11, transformers 5.22.2, 2026-11-30"


def test_plot_draws_measurement_and_prediction() -> None:
    ax = plot_measured_vs_predicted([1, 2, 4], [1.0, 2.1, 3.9], [1, 2, 4], xlabel="x", ylabel="y", title="t")
    assert [line.get_label() for line in ax.get_lines()] == ["predicted", "measured"]
    assert list(ax.get_lines()[1].get_ydata()) == [1.0, 2.1, 3.9]
