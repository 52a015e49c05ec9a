r"""Merge the models of later `bench_checkpointing_front.py` runs into one record, keeping each run's
provenance.

A 10-minute device call does not fit all three models, so they are measured in separate runs on the same kind
of machine. Each merged model gets a `run` block (the command, the machine and the date it was measured with),
the model leaves `not_measured`, and its cold-compile runs are appended.

    python benchmarks/merge_front_records.py benchmarks/results/checkpointing_front_gpu.json \
        part1.json part2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def merge(base: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """`base` with every model of `part` added (replacing a model of the same name), provenance kept per
    model."""
    merged = dict(base)
    merged["models"] = dict(base["models"])
    not_measured = dict(base.get("not_measured", {}))
    cold = list(base.get("cold_runs", []))
    for name, model in part["models"].items():
        model = dict(model, run={"command": part["command"], "machine": part["machine"]})
        merged["models"][name] = model
        not_measured.pop(name, None)
        cold = [c for c in cold if f"--models {name} " not in c["command"]]
        cold += [c for c in part.get("cold_runs", []) if f"--models {name} " in c["command"]]
    merged["not_measured"] = not_measured
    merged["cold_runs"] = cold
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", type=Path, help="the record to extend, rewritten in place")
    parser.add_argument("parts", type=Path, nargs="+", help="records of later runs")
    args = parser.parse_args()
    record = json.loads(args.record.read_text())
    for path in args.parts:
        record = merge(record, json.loads(path.read_text()))
    args.record.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{args.record}: models {sorted(record['models'])}, not measured {sorted(record['not_measured'])}")


if __name__ == "__main__":
    main()
