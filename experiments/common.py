"""Provenance recorded with every benchmark result: machine, versions, commit, date, command."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys

import jax

RESULTS = pathlib.Path(__file__).parent / "results"


def provenance() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    device = jax.devices()[0]
    return {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([pathlib.Path(sys.executable).name] + sys.argv),
        "commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "device": f"{device.platform}: {device.device_kind}",
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def write_result(name: str, payload: dict) -> pathlib.Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"provenance": provenance(), **payload}, indent=2) + "\n")
    return path
