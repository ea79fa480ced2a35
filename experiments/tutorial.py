# %% [markdown]
# # tau-jax in six steps
#
# A notebook written as a script (the `# %%` lines are cells for VS Code / Jupytext; run it
# top to bottom with `python experiments/tutorial.py`). It trains a tiny TAU on Moving MNIST
# for a few minutes on a laptop CPU, compares it with the copy-the-last-frame baseline,
# predicts 20 frames ahead, writes a GIF, and exports the predictor as a self-contained
# StableHLO program that runs without tau-jax's model code.
#
#     python experiments/tutorial.py [--workdir runs/tutorial] [--data_dir DIR] [--tiny]
#
# `--tiny` shrinks everything to a smoke test (2 steps, 5 -> 5 frames) in well under a minute.
# Training resumes from the newest checkpoint in the workdir: a second run only re-evaluates.

# %%
from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np

from tau_jax import predict
from tau_jax.config import base_config
from tau_jax.data import moving_mnist
from tau_jax.train import evaluate, train_and_evaluate
from tau_jax.visualize import save_samples

parser = argparse.ArgumentParser(description="The tau-jax tutorial.")
parser.add_argument("--workdir", default="runs/tutorial", help="run directory")
parser.add_argument("--data_dir", default="", help="prepared datasets ('' = tfds' default)")
parser.add_argument("--tiny", action="store_true", help="a 2-step smoke test")
args, _ = parser.parse_known_args()  # (a notebook kernel adds arguments of its own)
workdir = pathlib.Path(args.workdir)
start = time.time()

# %% [markdown]
# ## 1. A config, in Python
#
# Every experiment is one `ml_collections.ConfigDict` with four sections (`model`, `data`,
# `optim`, `train`; `loss` holds the DDR weight). `base_config()` declares every field with a
# comment and is locked, so a typo is an error. Here: TAU with a narrow encoder (hid_S 8) and a
# two-block translator (157K parameters instead of OpenSTL's 44.7M), 10 frames in, 10 out.
# Moving MNIST is generated on first use from the 5,000 MNIST digits bundled with tau-jax:
# no download.

# %%
T = 5 if args.tiny else 10
config = base_config()
config.model.update(name="tau", in_shape=(T, 64, 64, 1), out_frames=T,
                    hid_S=8, hid_T=64, N_S=4, N_T=2, mlp_ratio=4.0)
config.data.update(name="moving_mnist", in_frames=T, out_frames=T, data_dir=args.data_dir,
                   mmnist_train_size=960, mmnist_test_size=200,  # one epoch: 60 steps of 16
                   batch_size=16, eval_batch_size=50)
config.optim.update(lr=3e-3, sched="onecycle")  # Adam with OpenSTL's one-cycle schedule
config.train.update(epochs=1, log_every_steps=20, num_samples=4)
if args.tiny:  # a smoke test: 2 steps of 4 clips; grouped convolutions compile faster on CPU
    config.data.update(mmnist_train_size=8, mmnist_test_size=4, batch_size=4, eval_batch_size=4)
    config.train.update(max_steps=2, log_every_steps=1, num_samples=2)
    config.model.dw_impl = "lax"
print({k: config.model[k] for k in ("name", "in_shape", "out_frames", "hid_S", "hid_T", "N_T")})

# %% [markdown]
# ## 2. Train
#
# `train_and_evaluate` is what `tau-jax train --config FILE --workdir DIR` runs: it prepares the
# data once (array_record files under `data_dir`), compiles one jitted training step, trains,
# evaluates on the test split and writes checkpoints, TensorBoard logs and sample PNG/GIFs to the
# workdir. Loss: MSE + 0.1 x TAU's differential divergence regularisation (DDR).

# %%
train_and_evaluate(config, workdir)
print(f"trained in {time.time() - start:.0f} s; {workdir} holds",
      sorted(p.name for p in workdir.iterdir()))

# %% [markdown]
# ## 3. Evaluate
#
# `evaluate(workdir)` (`tau-jax eval`) reloads the saved config and the newest checkpoint and
# scores the whole test split with OpenSTL's metric definitions: MSE and MAE are per-frame sums
# over the 64x64 pixels (so Moving MNIST MSEs are in the tens to hundreds), SSIM and PSNR on
# the clipped prediction. The same metrics of copying the last input frame are the baseline a
# model must beat. 60 steps is far too short to converge, but enough to roughly halve the
# baseline's MSE (measured: 144 vs 279); SSIM still favours the baseline, as the predictions are
# blurred.

# %%
metrics = evaluate(workdir)
for name in ("mse", "mae", "ssim", "psnr"):
    baseline = metrics["copy_last_" + name]
    print(f"{name:>4}: TAU {metrics[name]:8.3f}   copy last frame {baseline:8.3f}")

# %% [markdown]
# ## 4. A predictor
#
# `predict.load(workdir)` gives a `Predictor`: the model, its weights and the data's
# normalisation. It takes frames in the data's stored units (uint8 images as 0..255) and returns
# predictions in the same units, for any horizon: past the model's 10 frames it feeds its own
# predictions back in, 10 frames at a time (OpenSTL's roll-out). Frames of other sizes are padded
# to a size the encoder takes and cropped back.
#
# The test split's clips have 20 frames, so to see 20 frames ahead against the truth we draw
# three longer clips with the dataset's own generator (test digits, a seed of our own).

# %%
predictor = predict.load(workdir)
HORIZON = 20
spec = moving_mnist.spec(config.data)
digits = moving_mnist.load_digits(spec)
pool = digits.test if digits.test is not None else digits.train
rng = np.random.default_rng(2023)
clips = np.stack([moving_mnist.generate_sequence(rng, pool, T + HORIZON) for _ in range(3)])
inputs, truth = clips[:, :T], clips[:, T:].astype(np.float32)   # uint8 0..255
t0 = time.time()
future = predictor.predict(inputs, horizon=HORIZON)              # (3, 20, 64, 64, 1), 0..255
print(f"predicted {future.shape} in {time.time() - t0:.1f} s (compilation included)")
per_step = (((future - truth) / 255) ** 2).sum(axis=(2, 3, 4)).mean(axis=0)  # MSE as in step 3
print("MSE per lead time (frames 1, 5, 10, 15, 20):", np.round(per_step[[0, 4, 9, 14, 19]], 1))
# Other sizes work too: 62x62 frames are padded (replicating their borders) to 64x64, the next
# multiple of the encoder's stride 4, and the predictions cropped back to 62x62.
print("62x62 inputs ->", predictor.predict(inputs[:, :, 1:-1, 1:-1], horizon=T).shape)

# %% [markdown]
# ## 5. A GIF
#
# `save_samples` writes a labelled PNG grid (per clip: inputs, targets, predictions with the
# clip's MSE) and a GIF (the truth above the prediction, frame by frame, titled with the lead). (The
# CLI does the same: `tau-jax predict --workdir DIR --input clips.npy --horizon 20
# --output pred.npy --gif`.)

# %%
png, gif = save_samples(inputs, truth, future, workdir / "tutorial_prediction")
print(f"wrote {png} and {gif}")

# %% [markdown]
# ## 6. Export, reload, run without the model code
#
# `Predictor.export` traces the whole roll-out (normalisation, 20-frame horizon, weights) into a
# serialised `jax.export` program with a symbolic batch size. `load_exported` needs only JAX:
# ship the file to a service that does not install tau-jax. It runs frames of one size
# (`frame_size`, default the model's 64x64).

# %%
path = predictor.export(workdir / "tau.jaxexport", horizon=HORIZON)
exported = predict.load_exported(path)
again = exported.predict(inputs)
print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB); takes {exported.in_shape}, "
      f"predicts {exported.horizon} frames; max |exported - predictor| = "
      f"{np.abs(again - future).max():.2e} (0..255 units)")
print(f"tutorial done in {time.time() - start:.0f} s")
