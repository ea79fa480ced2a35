"""Where experiments record their results: JSON under experiments/results/ with the provenance
(machine, versions, commit, date, command) of `tau-jax benchmark`."""

from __future__ import annotations

import json
import pathlib

from tau_jax.bench.benchmark import provenance

RESULTS = pathlib.Path(__file__).parent / "results"


def write_result(name: str, payload: dict) -> pathlib.Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"provenance": provenance(), **payload}, indent=2) + "\n")
    return path
