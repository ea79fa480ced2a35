"""Train SimVP-frame translators (TAU, gSTA, TimeSformer, TPS) on the same toy data, same budget.

Data are synthetic and made here with numpy: **bouncing squares**, a Moving-MNIST-like toy (not
Moving MNIST). Each clip has two white squares (side 4-8 px at 32x32) on black, moving at a
constant velocity of up to 3 px per frame and bouncing off the borders; overlapping squares
saturate at 1. The model sees T frames and predicts the next T. Training draws fresh clips every
step (seeded, as the on-the-fly Moving MNIST stream); the test set is a fixed seeded set of clips.

Every model gets the same encoder/decoder sizes, number of steps, batch, loss (MSE + 0.1 DDR,
tau_jax.losses.tau_loss), optimiser (Adam, OneCycle to `--lr`, OpenSTL's Moving MNIST recipe
shortened) and seed. Translator sizes are each family's natural ones at width hid_T and depth
N_T (TAU/gSTA: MLP ratio 8 on T*hid_S folded channels; TimeSformer/TPS: MLP ratio 4 on per-frame
tokens), so parameters and FLOPs differ and are recorded next to the scores. Recorded per model:
parameters, XLA forward FLOPs of a batch-1 eval pass (tau_jax.summary.summarize; 2 per
multiply-add), compile time, median step time, final training loss, and test MSE / MAE / SSIM /
PSNR under OpenSTL's definitions (tau_jax.metrics.evaluate; MSE is a per-frame sum over pixels),
next to two trivial predictors on the same test clips (all zeros; the last input frame repeated).

This is a short local training loop for a like-for-like comparison, not the training system.
The defaults take about 5-6 minutes on a shared 2-core CPU; the results say nothing about converged
quality, only about what each translator learns in the same small budget.

    python experiments/compare_translators.py [--steps 150] [--batch 8] [--models tau,tps]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from common import write_result
from tau_jax import metrics, models
from tau_jax.config import default_model_config
from tau_jax.losses import tau_loss
from tau_jax.summary import summarize

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


def make_config(name: str, args):
    shape = dict(in_shape=(args.frames, args.size, args.size, 1), out_frames=args.frames,
                 hid_S=args.hid_S, N_S=args.N_S, hid_T=args.hid_T, N_T=args.N_T, drop_path=0.0)
    if name in ("tau", "gsta"):
        cfg = default_model_config("tau")
        cfg.update(name=name, drop_path_schedule="linear", **shape)  # no stochastic depth
    else:
        cfg = default_model_config(name)
        latent = args.size // 2 ** (args.N_S // 2)
        cfg.update(num_heads=args.heads, window_size=min(args.window, latent), **shape)
    return cfg


def train_and_evaluate(name: str, args, test_x, test_y) -> dict:
    cfg = make_config(name, args)
    model = models.build(cfg)
    info = summarize(cfg)
    variables = nn.meta.unbox(
        jax.jit(lambda key: models.init(cfg, key))(jax.random.key(args.seed)))
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    mutable = list(state) or False  # TAU / gSTA carry BatchNorm statistics
    schedule = optax.cosine_onecycle_schedule(args.steps, args.lr)
    opt = optax.adam(schedule)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, state, opt_state, x, y, key):
        def loss_fn(p):
            out = model.apply({"params": p, **state}, x, train=True, mutable=mutable,
                              rngs={"drop_path": key, "dropout": key})
            pred, new_state = out if mutable else (out, {})
            return tau_loss(pred, y, args.alpha), new_state
        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), dict(new_state), opt_state, loss

    predict = jax.jit(lambda params, state, x: model.apply({"params": params, **state}, x))

    rng = np.random.default_rng(args.seed)
    key = jax.random.key(args.seed)
    losses, times = [], []
    compile_start = time.perf_counter()
    for i in range(args.steps):
        clips = bouncing_squares(rng, args.batch, 2 * args.frames, args.size)
        x, y = jnp.asarray(clips[:, :args.frames]), jnp.asarray(clips[:, args.frames:])
        key, sub = jax.random.split(key)
        start = time.perf_counter()
        params, state, opt_state, loss = step(params, state, opt_state, x, y, sub)
        loss = float(loss)  # blocks
        if i == 0:
            compile_s = time.perf_counter() - compile_start
        else:
            times.append(time.perf_counter() - start)
        losses.append(loss)
        if (i + 1) % max(1, args.steps // 5) == 0:
            print(f"  {name:12s} step {i + 1:5d} loss {np.mean(losses[-20:]):.5f}", flush=True)

    preds = []
    for b in range(0, len(test_x), args.batch):
        preds.append(np.asarray(predict(params, state, jnp.asarray(test_x[b:b + args.batch]))))
    scores = metrics.evaluate(np.concatenate(preds), test_y, ("mse", "mae", "ssim", "psnr"))
    return {
        "model": name,
        "params": info["params"],
        "translator_params": info["params_by_module"]["translator"],
        "forward_flops": info["forward_flops"],
        "compile_s": compile_s,
        "step_ms_median": 1e3 * statistics.median(times) if times else float("nan"),
        "final_train_loss": float(np.mean(losses[-20:])),
        "first_train_loss": losses[0],
        **{f"test_{k}": float(v) for k, v in scores.items()},
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
    parser.add_argument("--alpha", type=float, default=0.1, help="DDR weight of tau_loss")
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

    # trivial predictors on the same test set, to read the scores against
    baselines = {}
    for label, pred in (("zeros", np.zeros_like(test_y)),
                        ("repeat_last_frame", np.repeat(test_x[:, -1:], args.frames, axis=1))):
        scores = metrics.evaluate(pred, test_y, ("mse", "mae", "ssim", "psnr"))
        baselines[label] = {f"test_{k}": float(v) for k, v in scores.items()}
        print(f"{label:18s} MSE {scores['mse']:8.2f}  SSIM {scores['ssim']:.4f}", flush=True)

    rows = []
    for name in names:
        start = time.perf_counter()
        row = train_and_evaluate(name, args, test_x, test_y)
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
        print(f"{name:12s} params {row['params']:>9,d}  fwd {row['forward_flops'] / 1e9:7.3f} "
              f"GFLOP  step {row['step_ms_median']:7.1f} ms  loss {row['final_train_loss']:.5f}  "
              f"MSE {row['test_mse']:8.2f}  SSIM {row['test_ssim']:.4f}  ({row['wall_s']:.0f} s)",
              flush=True)
    settings = {k: v for k, v in vars(args).items() if k != "name"}
    settings["data"] = ("bouncing squares (numpy, 2 squares per clip, fresh clips each step), "
                        f"{args.frames} -> {args.frames} frames of {args.size}x{args.size}x1")
    path = write_result(args.name, {"settings": settings, "baselines": baselines,
                                    "results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
