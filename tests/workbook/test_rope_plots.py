"""reference_impl.workbook.rope_plots: the lesson's figures draw the numbers the init functions compute; the
panel redraws."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from reference_impl.rope import ROPE_INIT_FUNCTIONS, read_rope_config
from reference_impl.workbook import rope_plots as rp


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


@pytest.mark.parametrize("rope_type", rp.SCALING_TYPES)
def test_example_configs_are_valid_and_stretch_the_context(rope_type):
    rc = read_rope_config(rp.example_config(rope_type, 8.0))
    assert rc.rope_type == rope_type and rc.dim == 128 and rc.original_max_position_embeddings == 4096
    expected_max = 8 * 4096 if rope_type in ("yarn", "longrope", "llama3") else 4096
    assert rc.max_position_embeddings == expected_max


def test_wavelength_plot_draws_one_line_per_type_from_the_init_functions(ax):
    rp.plot_wavelengths(ax, factor=4.0)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(rp.RULE_NAMES.values()) <= set(lines)
    default = 2 * math.pi / ROPE_INIT_FUNCTIONS["default"](rp.example_config("default"))[0].numpy()
    np.testing.assert_allclose(lines["plain RoPE"].get_ydata(), default, rtol=1e-6)
    np.testing.assert_allclose(lines["linear (PI)"].get_ydata(), 4 * default, rtol=1e-5)  # s times longer


def test_frequency_ratio_plot_shows_linear_at_one_over_s_and_llama3_keeping_fast_pairs(ax):
    rp.plot_frequency_ratios(ax, factor=4.0, seq_len=16384)
    lines = {
        line.get_label().split(",")[0]: line.get_ydata()
        for line in ax.get_lines()
        if line.get_label()[0] != "_"
    }
    np.testing.assert_allclose(lines["linear (PI)"], 0.25, rtol=1e-6)
    assert lines["Llama 3"][0] == 1.0 and lines["Llama 3"][-1] == pytest.approx(0.25, rel=1e-6)
    assert lines["dynamic NTK"][-1] < 0.5  # at 4 x L0 the dynamic base has grown: slow pairs stretched


def test_llama3_band_plot_marks_llama31_thresholds(ax):
    config = rp.example_config("llama3", 8.0, base=500_000.0, original_max_position_embeddings=8192)
    rp.plot_llama3_bands(ax, config)
    assert ax.get_title() == "Llama 3: bands at 2048 and 8192 tokens"
    ratio = ax.get_lines()[0].get_ydata()
    assert (ratio == 1).sum() == 29 and np.isclose(ratio, 1 / 8, rtol=1e-6).sum() == 29


def test_yarn_ramp_plot_marks_low_20_and_high_46(ax):
    rp.plot_yarn_ramp(ax, rp.example_config("yarn", 4.0))
    labels = [line.get_label() for line in ax.get_lines()]
    assert "low = 20" in labels and "high = 46" in labels
    ramp = ax.get_lines()[0].get_ydata()
    assert ramp[20] == 0 and ramp[46] == 1 and 0 < ramp[33] < 1


def test_attention_score_is_one_at_distance_zero_scales_with_a_squared_and_decays():
    inv_freq, _ = ROPE_INIT_FUNCTIONS["default"](rp.example_config("default"))
    scores = rp.attention_score_vs_distance(inv_freq, torch.arange(0, 4096))
    assert scores[0] == pytest.approx(1.0)
    assert float(scores[1000:].abs().mean()) < 0.5 * float(scores[:50].mean())
    scaled = rp.attention_score_vs_distance(inv_freq, torch.arange(0, 8), attention_factor=1.5)
    torch.testing.assert_close(scaled, 2.25 * scores[:8])


def test_decay_plot_draws_each_type_up_to_the_length(ax):
    rp.plot_attention_decay(ax, factor=4.0, length=8192)
    assert len(ax.get_lines()) == len(rp.SCALING_TYPES)
    assert ax.get_lines()[0].get_xdata()[-1] == pytest.approx(8192, rel=1e-6)


def test_fitted_score_explodes_beyond_the_trained_length_but_not_between_integers():
    result = rp.fit_and_extrapolate()
    assert result["max_inside"] < 2.0
    assert result["max_beyond"] > 100 * result["max_inside"]
    fig, axes = plt.subplots(1, 2)
    rp.plot_interpolation_vs_extrapolation(axes, result)
    assert "beyond the trained length" in axes[0].get_title()
    plt.close(fig)


def test_panel_figure_changes_with_the_factor():
    fig2 = rp.draw_panel_figure("linear", 2.0, 8192)
    fig8 = rp.draw_panel_figure("linear", 8.0, 8192)
    y2, y8 = fig2.axes[0].get_lines()[0].get_ydata(), fig8.axes[0].get_lines()[0].get_ydata()
    np.testing.assert_allclose(y2, 0.5, rtol=1e-6)
    np.testing.assert_allclose(y8, 0.125, rtol=1e-6)
    plt.close(fig2)
    plt.close(fig8)


def test_panel_has_a_factor_slider_that_redraws_the_figure():
    import ipywidgets as widgets

    panel = rp.rope_panel("linear", 2.0, 8192)
    sliders = [w for w in panel.widget.children[0].children if getattr(w, "description", None) == "factor"]
    assert len(sliders) == 1 and isinstance(sliders[0], widgets.FloatSlider)
    assert isinstance(panel.output, widgets.Output)
    assert panel.draws == 1  # interactive_output draws once when built
    before = panel.figure.axes[0].get_lines()[0].get_ydata().copy()
    sliders[0].value = 8.0
    assert panel.draws == 2 and panel.history[-1] == ("linear", 8.0, 8192)
    after = panel.figure.axes[0].get_lines()[0].get_ydata()
    assert not np.allclose(before, after)
    panel.controls["rope_type"].value = "llama3"
    assert panel.history[-1] == ("llama3", 8.0, 8192)
    assert "Llama 3" in panel.figure.axes[0].get_title()


def test_clock_hands_point_at_position_times_frequency_and_linear_scaling_slows_every_hand(ax):
    default = ROPE_INIT_FUNCTIONS["default"](rp.example_config("default"))[0]
    linear = ROPE_INIT_FUNCTIONS["linear"](rp.example_config("linear", 4.0))[0]
    pairs = (0, 8, 16)
    rp.plot_clock_hands(ax, default, 10, pairs)
    hands = ax.get_lines()[1:]
    assert [h.get_label() for h in hands] == [
        f"pair {i}: {10 * float(default[i]) / (2 * math.pi):.2f} turns" for i in pairs
    ]
    for hand, i in zip(hands, pairs, strict=True):
        x, y = hand.get_xdata()[1], hand.get_ydata()[1]
        assert math.isclose(
            math.atan2(y, x) % (2 * math.pi), (10 * float(default[i])) % (2 * math.pi), abs_tol=1e-6
        )
    radii = [math.hypot(h.get_xdata()[1], h.get_ydata()[1]) for h in hands]
    assert radii == sorted(radii, reverse=True)  # the fastest pair is the longest hand
    fig, other = plt.subplots()
    rp.plot_clock_hands(other, linear, 10, pairs)
    slowed = [math.atan2(h.get_ydata()[1], h.get_xdata()[1]) for h in other.get_lines()[1:]]
    plt.close(fig)
    for angle, i in zip(slowed, pairs, strict=True):
        assert math.isclose(angle % (2 * math.pi), (10 * float(default[i]) / 4) % (2 * math.pi), abs_tol=1e-6)
