"""Fault campaign: a tiny TAU run through `tau-jax train`, hit again and again until it ends.

Faults, drawn at random moments: SIGKILL, SIGTERM (preemption), a second `train` on the same
workdir (must be refused), and a corrupted newest checkpoint between runs. After every fault the
same command is run again. At the end the final parameters must equal, bit for bit, those of an
uninterrupted run, every checkpoint on disk must be finite, and no temporary folder or lock may
remain. Writes experiments/results/fault_campaign_cpu.json.

    cd experiments && python fault_campaign.py --faults 30 --seed 1
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from common import write_result
from tau_jax.config import base_config
from tau_jax.train import checkpoint, lock, loop
from tau_jax.train.sharding import make_mesh

ROOT = pathlib.Path(__file__).parents[1]
CONFIG_FILE = """
import json, pathlib
from tau_jax.config import base_config
def get_config():
    config = base_config()
    for section, values in json.loads(pathlib.Path(__file__).with_suffix(".json").read_text()).items():
        config[section].update(values)
    return config
"""


def tiny_config(root: pathlib.Path, steps: int):
    rng = np.random.default_rng(0)
    base = rng.uniform(size=(24, 1, 16, 16, 1))
    drift = np.linspace(0, 1, 8)[None, :, None, None, None]
    np.save(root / "clips.npy",
            np.clip(0.5 * base + 0.5 * np.sin(3 * drift + 6 * base), 0, 1).astype(np.float32))
    config = base_config()
    config.model.update(in_shape=(4, 16, 16, 1), out_frames=4, hid_S=8, hid_T=16, N_S=2, N_T=2)
    config.data.update(name="custom", custom_path=str(root / "clips.npy"), custom_layout="NTHWC",
                       custom_normalize="none", custom_stride=8, custom_test_fraction=0.25,
                       in_frames=4, out_frames=4, data_dir=str(root / "tfds"), batch_size=8,
                       eval_batch_size=8)
    config.train.update(epochs=steps // 2, max_steps=steps, log_every_steps=1,
                        eval_every_steps=50, checkpoint_every_steps=5, keep_checkpoints=2,
                        num_samples=2)
    (root / "tiny.py").write_text(CONFIG_FILE)
    (root / "tiny.json").write_text(config.to_json())
    return config


def train(root, workdir):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # restarts reuse the programs
    return subprocess.Popen([sys.executable, "-m", "tau_jax.cli", "train",
                             f"--config={root / 'tiny.py'}", f"--workdir={workdir}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def params_of(workdir, config):
    step, state = loop.restore_state(config, workdir, make_mesh((1, 1), jax.devices()[:1]))
    return step, [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


def complete_steps(workdir):
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=12)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--max_delay", type=float, default=25.0,
                        help="seconds after a start by which each fault strikes (uniform)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = pathlib.Path(tempfile.mkdtemp(prefix="tau_jax_faults_"))
    config = tiny_config(root, args.steps)
    t0 = time.time()

    straight = train(root, root / "straight")
    out, _ = straight.communicate()
    assert straight.returncode == 0, out[-2000:]
    single_run_s = time.time() - t0

    run = root / "faulted"
    counts = {"sigkill": 0, "sigterm": 0, "second_train_refused": 0, "corrupt_newest": 0}
    log, runs = [], 0

    def corrupt_newest():
        steps = complete_steps(run)
        if steps:
            for f in (run / "checkpoints" / str(steps[-1]) / "state").rglob("*"):
                if f.is_file():
                    f.write_bytes(os.urandom(64))
            counts["corrupt_newest"] += 1

    while True:
        runs += 1
        proc = train(root, run)
        left = sum(counts.values()) < args.faults
        fault = rng.choice(["sigkill", "sigterm", "second_train"]) if left else None
        if fault:
            time.sleep(rng.uniform(1.0, args.max_delay))
        if fault == "second_train" and proc.poll() is None:
            second = train(root, run)
            out2, _ = second.communicate()
            if second.returncode == 0:  # the first run ended before the second took the lock
                assert proc.poll() is not None, out2[-2000:]
            else:
                assert second.returncode == 1 and "in use by another training process" in out2, \
                    out2[-2000:]
                counts["second_train_refused"] += 1
            fault = rng.choice(["sigkill", "sigterm"])
        if fault in ("sigkill", "sigterm") and proc.poll() is None:
            proc.send_signal(signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
            counts[fault] += 1
        out, _ = proc.communicate()
        # 143: preempted after saving; -SIGTERM: signalled before training started (nothing to
        # save yet); -SIGKILL: killed
        assert proc.returncode in (0, 143, -signal.SIGTERM, -signal.SIGKILL), out[-2000:]
        log.append({"run": runs, "fault": fault, "returncode": proc.returncode,
                    "checkpoints_after": complete_steps(run)})
        print(log[-1], flush=True)
        if proc.returncode == 0 and sum(counts.values()) >= args.faults:
            break
        if proc.returncode == 0 or rng.random() < 0.25:
            corrupt_newest()  # the next run moves it aside and trains that stretch again
            log[-1]["then_corrupted_newest"] = True

    step_a, a = params_of(root / "straight", config)
    step_b, b = params_of(run, config)
    equal = step_a == step_b == args.steps and all(np.array_equal(x, y) for x, y in zip(a, b))
    finite = all(np.isfinite(x).all() for x in b if np.issubdtype(x.dtype, np.floating))
    leftovers = [str(p) for p in run.rglob("*") if checkpoint.TMP_MARK in p.name
                 or p.name == lock.LOCK_FILE]
    moved = sorted(p.name for p in (run / "checkpoints" / "unreadable").iterdir()) \
        if (run / "checkpoints" / "unreadable").is_dir() else []
    result = {"faults": counts, "runs": runs, "steps": args.steps,
              "final_params_bitwise_equal_to_uninterrupted": bool(equal),
              "final_state_finite": bool(finite), "leftover_temporary_or_lock_files": leftovers,
              "corrupt_checkpoints_moved_aside": moved, "wall_s": round(time.time() - t0, 1),
              "uninterrupted_run_s": round(single_run_s, 1), "log": log,
              "command": f"cd experiments && python fault_campaign.py --faults {args.faults} "
                         f"--steps {args.steps} --max_delay {args.max_delay} --seed {args.seed}"}
    print({k: v for k, v in result.items() if k != "log"})
    print(f"wrote {write_result('fault_campaign_cpu', result)}")
    shutil.rmtree(root, ignore_errors=True)
    if not (equal and finite and not leftovers):
        sys.exit(1)


if __name__ == "__main__":
    main()
