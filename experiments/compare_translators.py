"""Train SimVP-frame translators (TAU, gSTA, TimeSformer, TPS) on the same toy data, same budget.

Data are synthetic and made here with numpy: **bouncing squares**, a Moving-MNIST-like toy (not
Moving MNIST). Each clip has two white squares (side 4-8 px at 32x32) on black, moving at a
constant velocity of up to 3 px per frame and bouncing off the borders; overlapping squares
saturate at 1. The model sees T frames and predicts the next T. The clips are written as a
`custom` dataset (train/ and test/ arrays, no normalisation) with one clip per training sample
(steps x batch clips, each seen once); the test set is a fixed seeded set of clips.

Every model is trained by the library's trainer (`tau_jax.train.train_and_evaluate`) with the
same encoder/decoder sizes, number of steps, batch, loss (MSE + 0.1 DDR), optimiser (Adam,
OneCycle to `--lr`, OpenSTL's Moving MNIST recipe shortened) and seed. Translator sizes are each
family's natural ones at width hid_T and depth
N_T (TAU/gSTA: MLP ratio 8 on T*hid_S folded channels; TimeSformer/TPS: MLP ratio 4 on per-frame
tokens), so parameters and FLOPs differ and are recorded next to the scores. Recorded per model:
parameters, XLA forward FLOPs of a batch-1 eval pass (tau_jax.summary.summarize; 2 per
multiply-add), compile time and steps per second as the trainer logs them, the last logged
training loss, and the trainer's test MSE / MAE / SSIM / PSNR under OpenSTL's definitions (MSE is
a per-frame sum over pixels), next to two trivial predictors on the same test clips (all zeros;
the last input frame repeated).

The defaults take about 5-6 minutes on a shared 2-core CPU; the results say nothing about
converged quality, only about what each translator learns in the same small budget.

    python experiments/compare_translators.py [--steps 150] [--batch 8] [--models tau,tps]
"""

from __future__ import annotations

import argparse
import pathlib
import re
import tempfile
import time

import numpy as np

from common import write_result
from tau_jax import metrics
from tau_jax.config import base_config
from tau_jax.summary import summarize
from tau_jax.train import train_and_evaluate

MODELS = ("tau", "gsta", "timesformer", "tps")


def bouncing_squares(rng: np.random.Generator, clips: int, frames: int, size: int,
                     squares: int = 2) -> np.ndarray:
    """(clips, frames, size, size, 1) float32 videos of bouncing white squares in [0, 1]."""
    out = np.zeros((clips, frames, size, size, 1), np.float32)
    lo, hi = max(2, size // 8), max(3, size // 4)
    for i in range(clips):
        for _ in range(squares):
            side = int(rng.integers(lo, hi + 1))
            pos = rng.uniform(0, size - side, 2)
            vel = rng.uniform(-3, 3, 2)
            for t in range(frames):
                r, c = np.round(pos).astype(int)
                out[i, t, r:r + side, c:c + side, 0] = 1.0
                pos = pos + vel
                for axis in range(2):
                    if pos[axis] < 0 or pos[axis] > size - side:
                        vel[axis] = -vel[axis]
                        pos[axis] = np.clip(pos[axis], 0, size - side)
    return out


def make_config(name: str, args, clips: pathlib.Path, run: pathlib.Path):
    """Experiment config of translator `name` on the clips written under `clips`."""
    config = base_config(name)
    config.model.update(in_shape=(args.frames, args.size, args.size, 1), out_frames=args.frames,
                        hid_S=args.hid_S, N_S=args.N_S, hid_T=args.hid_T, N_T=args.N_T,
                        drop_path=0.0)
    if name in ("tau", "gsta"):
        config.model.drop_path_schedule = "linear"  # no stochastic depth
    else:
        latent = args.size // 2 ** (args.N_S // 2)
        config.model.update(num_heads=args.heads, window_size=min(args.window, latent))
    config.data.update(name="custom", custom_path=str(clips), custom_normalize="none",
                       data_dir=str(run / "data"), in_frames=args.frames, out_frames=args.frames,
                       batch_size=args.batch, eval_batch_size=args.batch)
    config.loss.alpha = args.alpha
    config.optim.update(lr=args.lr, sched="onecycle")
    config.train.update(epochs=1, seed=args.seed, log_every_steps=max(1, args.steps // 5),
                        num_samples=0)
    return config


def logged(log: str, pattern: str) -> list[float]:
    """Every number the trainer's log shows for `pattern` (a regex with one group)."""
    return [float(v) for v in re.findall(pattern, log)]


def train_one(name: str, args, clips: pathlib.Path, run: pathlib.Path) -> dict:
    config = make_config(name, args, clips, run)
    info = summarize(config.model)
    start = time.perf_counter()
    scores = train_and_evaluate(config, run / name)
    wall = time.perf_counter() - start
    log = (run / name / "train.log").read_text()
    return {
        "model": name,
        "params": info["params"],
        "translator_params": info["params_by_module"]["translator"],
        "forward_flops": info["forward_flops"],
        "compile_s": logged(log, r"First step done in ([\d.]+) s")[0],
        "step_ms_median": 1e3 / float(np.median(logged(log, r"steps_per_s ([\d.]+)"))),
        "final_train_loss": logged(log, r"train: .*\bloss ([\d.e+-]+)")[-1],
        "wall_s": wall,
        **{f"test_{k}": float(scores[k]) for k in ("mse", "mae", "ssim", "psnr")},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="training steps per model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=5, help="T input frames -> T output frames")
    parser.add_argument("--size", type=int, default=32, help="frame height = width")
    parser.add_argument("--hid_S", type=int, default=16)
    parser.add_argument("--N_S", type=int, default=4, help="4: 8x8 latents at 32x32")
    parser.add_argument("--hid_T", type=int, default=64)
    parser.add_argument("--N_T", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4, help="attention heads (TimeSformer, TPS)")
    parser.add_argument("--window", type=int, default=4, help="TPS window on the latent grid")
    parser.add_argument("--lr", type=float, default=2e-3, help="OneCycle peak learning rate")
    parser.add_argument("--alpha", type=float, default=0.1, help="DDR weight (loss.alpha)")
    parser.add_argument("--test_clips", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--name", default="compare_translators_cpu", help="result file name")
    args = parser.parse_args()

    names = [m for m in args.models.split(",") if m]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {MODELS}")
    test = bouncing_squares(np.random.default_rng(args.seed + 1), args.test_clips,
                            2 * args.frames, args.size)
    test_x, test_y = test[:, :args.frames], test[:, args.frames:]
    run = pathlib.Path(tempfile.mkdtemp(prefix="compare_translators_"))
    clips = run / "clips"
    clips.mkdir()
    np.save(clips / "test.npy", test)
    np.save(clips / "train.npy", bouncing_squares(
        np.random.default_rng(args.seed), args.steps * args.batch, 2 * args.frames, args.size))

    # trivial predictors on the same test set, to read the scores against
    baselines = {}
    for label, pred in (("zeros", np.zeros_like(test_y)),
                        ("repeat_last_frame", np.repeat(test_x[:, -1:], args.frames, axis=1))):
        scores = metrics.evaluate(pred, test_y, ("mse", "mae", "ssim", "psnr"))
        baselines[label] = {f"test_{k}": float(v) for k, v in scores.items()}
        print(f"{label:18s} MSE {scores['mse']:8.2f}  SSIM {scores['ssim']:.4f}", flush=True)

    rows = []
    for name in names:
        row = train_one(name, args, clips, run)
        rows.append(row)
        print(f"{name:12s} params {row['params']:>9,d}  fwd {row['forward_flops'] / 1e9:7.3f} "
              f"GFLOP  step {row['step_ms_median']:7.1f} ms  loss {row['final_train_loss']:.5f}  "
              f"MSE {row['test_mse']:8.2f}  SSIM {row['test_ssim']:.4f}  ({row['wall_s']:.0f} s)",
              flush=True)
    settings = {k: v for k, v in vars(args).items() if k != "name"}
    settings["data"] = ("bouncing squares (numpy, 2 squares per clip, one clip per sample), "
                        f"{args.frames} -> {args.frames} frames of {args.size}x{args.size}x1")
    path = write_result(args.name, {"settings": settings, "baselines": baselines,
                                    "results": rows})
    print(f"wrote {path} (runs in {run})")


if __name__ == "__main__":
    main()
