"""Tune the quickstart's recipe: which width, depth, batch, steps and schedule give the best TAU
on Moving MNIST in the quickstart's ten minutes on a 2-core CPU (same data and loss)?

Each candidate is a `tau-jax train` of configs/mmnist/quickstart.py with overrides, timed end to
end (compilation and evaluation included; the first run also generated the data); its test
metrics are set beside copying the last input frame. The runs of 2026-12-03 shared the two cores
with other work (tests, compiles), so their wall times are upper bounds; the committed recipe's
time is measured alone on a fresh clone (README). Before them the quickstart was batch 16 for 400
steps (6,400 sequences): MSE 116.9, SSIM 0.567 (README, 2026-11-21). Results accumulate in
experiments/results/quickstart_recipe_cpu.json
(a candidate already recorded is not run again), so the script can be stopped and rerun.

    python experiments/quickstart_recipe.py [NAME ...]    # default: every candidate
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import time

from common import RESULTS, write_result

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = "configs/mmnist/quickstart.py"

# name -> overrides of configs/mmnist/quickstart.py, each naming every field it varies
CANDIDATES = {
    "b8_lr3e-3": {"data.batch_size": 8, "data.mmnist_train_size": 6400, "optim.lr": 3e-3},
    "b8_lr6e-3": {"data.batch_size": 8, "data.mmnist_train_size": 6400, "optim.lr": 6e-3},
    "b4_lr3e-3": {"data.batch_size": 4, "data.mmnist_train_size": 5600, "optim.lr": 3e-3},
    "b2_lr2e-3": {"data.batch_size": 2, "data.mmnist_train_size": 5600, "optim.lr": 2e-3},
}
# Tried and stopped: hid_S 16 at batch 8 (lr 5e-3, 600 steps) ran at 0.4 steps/s, 25 minutes for
# the run: outside the quickstart's ten minutes whatever it scores.


def run(name: str, overrides: dict) -> dict:
    workdir = ROOT / "runs" / "recipe" / name
    shutil.rmtree(workdir, ignore_errors=True)
    command = ["tau-jax", "train", "--config", CONFIG, "--workdir", str(workdir)]
    command += [f"--config.{k}={v}" for k, v in overrides.items()]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    metrics = json.loads((workdir / "eval_metrics.json").read_text())
    config = json.loads((workdir / "config.json").read_text())
    return {"overrides": overrides, "command": " ".join(command[:5] + command[6:]),
            "wall_s": round(wall, 1),
            "batch_size": config["data"]["batch_size"], "lr": config["optim"]["lr"],
            "steps": config["train"]["max_steps"] or config["train"]["epochs"]
            * config["data"]["mmnist_train_size"] // config["data"]["batch_size"],
            "metrics": {k: v for k, v in metrics.items() if not isinstance(v, list)}}


def main(names: list[str]) -> None:
    path = RESULTS / "quickstart_recipe_cpu.json"
    done = json.loads(path.read_text())["runs"] if path.exists() else {}
    for name in names or CANDIDATES:
        if name in done:
            continue
        done[name] = run(name, CANDIDATES[name])
        m = done[name]["metrics"]
        print(f"{name}: {done[name]['wall_s']:.0f} s, " + ", ".join(
            f"{k} {m[k]:.4g} (copy-last {m['copy_last_' + k]:.4g})"
            for k in ("mse", "mae", "ssim", "psnr")), flush=True)
        write_result("quickstart_recipe_cpu", {
            "question": "best quickstart recipe within ten minutes on 2 CPU cores",
            "runs": done})


if __name__ == "__main__":
    main(sys.argv[1:])
