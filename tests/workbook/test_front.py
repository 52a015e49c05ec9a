"""reference_impl.workbook.front: who dominates each transformers point, the equal-memory comparison, the
figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import importlib.util
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from reference_impl.workbook.front import GROUPS, dominance, plot_front, selective_vs_budget
from reference_impl.workbook.lesson import load_record

ROOT = Path(__file__).resolve().parents[2]


def point(group: str, mem: float, time: float, label: str = "", **extra) -> dict:
    return {"group": group, "mem_ratio": mem, "time_ratio": time, "label": label or group, **extra}


@pytest.fixture
def results() -> dict:
    return {
        "none": point("none", 1.0, 1.0),
        "hf_re_k1": point("transformers_re", 0.45, 1.20, short="k=1"),
        "hf_re_k2": point("transformers_re", 0.70, 1.00, short="k=2"),
        "slow_lean": point("ours_eager", 0.40, 2.00, "slow and lean"),
        "fast_fat": point("compiled_budget", 0.80, 0.60, "fast and fat", short="budget 1.0"),
        "both": point("compiled_budget", 0.44, 1.10, "both", short="budget 0.2"),
        "both_faster": point("compiled_selective", 0.45, 0.90, "both, faster"),
    }


def test_the_cheapest_dominating_contender_is_the_fastest_one_within_memory_and_time(results):
    verdict = dominance(results)
    assert verdict["hf_re_k1"]["by"] == "both_faster"  # "both" dominates too, but is slower
    assert "0.450 mem at 0.90x" in verdict["hf_re_k1"]["why"]
    assert verdict["hf_re_k2"]["by"] == "both_faster"


def test_equal_memory_and_time_count_as_dominating_and_transformers_never_dominates_itself(results):
    results["tie"] = point("ours_offload", 0.45, 1.20)
    del results["both"], results["both_faster"]
    assert dominance(results)["hf_re_k1"]["by"] == "tie"
    assert dominance(results)["hf_re_k2"]["by"] != "hf_re_k1"


def test_an_undominated_point_says_none_and_names_the_nearest_miss(results):
    for key in ("both", "both_faster"):
        del results[key]
    verdict = dominance(results)["hf_re_k1"]
    assert verdict["by"] is None
    assert verdict["why"].startswith("none: the fastest contender within 0.450 mem, slow and lean")
    results["slow_lean"]["mem_ratio"] = 0.5
    verdict = dominance(results)["hf_re_k1"]
    assert verdict["why"].startswith("none: no contender gets down to 0.450 mem; the leanest")


def test_selective_time_is_compared_with_the_sweep_interpolated_at_its_memory(results):
    # sweep: (0.44, 1.10) and (0.80, 0.60); at 0.45: 1.10 - 0.5 * 0.01 / 0.36 = 1.0861
    got = selective_vs_budget(results)["both_faster"]
    assert got["budget_time_ratio"] == pytest.approx(1.10 - 0.50 * 0.01 / 0.36)
    assert got["time_vs_budget"] == pytest.approx(0.90 / got["budget_time_ratio"])
    assert not got["extrapolated"]
    results["both_faster"]["mem_ratio"] = 0.30
    got = selective_vs_budget(results)["both_faster"]
    assert got["extrapolated"] and got["budget_time_ratio"] == 1.10


def test_plot_front_labels_every_group_in_words_and_draws_the_bound(results):
    fig = plot_front({"results": results, "one_extra_forward_ratio": 1.3}, title="t")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    present = {r["group"] for r in results.values()}
    assert legend == [GROUPS[g][0] for g in GROUPS if g in present]
    assert any(
        abs(line.get_ydata()[0] - 1.3) < 1e-12 for line in ax.get_lines() if len(line.get_ydata()) == 2
    )
    texts = [t.get_text() for t in ax.texts]
    assert "eager step + one extra forward of every layer" in texts
    assert "budget 0.2" in texts and "k=1" in texts
    assert "activation peak" in ax.get_xlabel() and "step time" in ax.get_ylabel()
    plt.close(fig)


def test_plot_front_keeps_an_off_chart_point_at_the_top_and_says_its_time(results):
    results["very_slow"] = point("save_on_cpu", 0.42, 12.9, short="save_on_cpu")
    fig = plot_front({"results": results}, time_limit=2.0)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "save_on_cpu 12.9x, off the chart" in texts
    plt.close(fig)


def test_the_recorded_front_draws_and_its_table_rows_come_from_dominance():
    record = load_record("checkpointing_front_gpu")
    spec = importlib.util.spec_from_file_location("summarize", ROOT / "benchmarks" / "summarize.py")
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    rows = summarize.extractor_for("checkpointing_front_gpu")(record)
    for name, model in record["models"].items():
        verdicts = dominance(model["results"])
        assert verdicts == model["dominance"]
        assert sum(name in what for what, *_ in rows) == len(verdicts) + len(model["selective_vs_budget"])
        plt.close(plot_front(model))
    assert summarize.extractor_for("checkpointing_gpu") is summarize._checkpointing
