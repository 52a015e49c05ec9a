"""`beside` and `source_of`: our source next to transformers', docstrings trimmed, never a pasted copy."""

from __future__ import annotations

import pytest
from transformers import pytorch_utils

from reference_impl.conv1d import Conv1D
from reference_impl.workbook.source import beside, source_of


def test_source_of_drops_the_docstring_and_keeps_the_code() -> None:
    src = source_of(Conv1D.forward)
    assert src.startswith("def forward(self, x")
    assert '"""' not in src and "torch.addmm" in src
    assert '"""' in source_of(Conv1D.forward, docstring=True)


def test_beside_names_both_sides_and_shows_both_bodies() -> None:
    shown = beside(Conv1D.forward, pytorch_utils.Conv1D.forward)
    text = repr(shown)
    assert "ours: reference_impl.conv1d.Conv1D.forward" in text
    assert "theirs: transformers.pytorch_utils.Conv1D.forward" in text
    assert text.count("def forward") == 2
    html = shown._repr_html_()
    assert html.count("<td") == 2 and "Conv1D.forward" in html


def test_an_object_without_source_is_refused_naming_it() -> None:
    with pytest.raises(TypeError, match=r"builtins\.len has no Python source"):
        source_of(len)
