"""Recorded benchmark results: provenance in every record, and the README's table generated from them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def _summarize():
    spec = importlib.util.spec_from_file_location("summarize", ROOT / "benchmarks" / "summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.name)
def test_every_record_says_what_it_was_measured_on(path: Path) -> None:
    machine = json.loads(path.read_text())["machine"]
    for key in ("date_utc", "processor", "torch", "transformers", "gpu"):
        assert key in machine, f"{path.name}: machine block lacks {key!r}"
    if path.stem.endswith("_gpu"):
        assert machine["gpu"], f"{path.name} is a GPU record but names no GPU"


def test_benchmarks_readme_table_is_generated_from_the_records() -> None:
    summarize = _summarize()
    readme = (ROOT / "benchmarks" / "README.md").read_text()
    assert summarize.render_readme(readme) == readme, "run `python benchmarks/summarize.py --write`"


def test_every_component_record_has_a_headline_extractor() -> None:
    summarize = _summarize()
    missing = [p.name for p in RECORDS if summarize.extractor_for(p.stem) is None]
    assert not missing, f"add an extractor to benchmarks/summarize.py for {missing}"
