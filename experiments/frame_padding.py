"""Which padding suits video frames the model's strides do not divide: 'edge', 'reflect' or
'zeros' (tau_jax/models/framing.py; `data.frame_padding`)?

Moving MNIST sequences (the quickstart's generator) cropped to 61 x 61, so the quickstart's TAU
(N_S 4: stride 4) runs them padded to 64 x 64 (1 row / column before, 2 after); digits leave and
enter the crop at its borders, as objects do in real video. Each mode trains the same model on
the same data for the same steps, with two seeds, and is evaluated on the same test sequences
(the loss and the metrics on the 61 x 61 frames only). Results:
experiments/results/frame_padding_cpu.json.

    python experiments/frame_padding.py [--steps 500]
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import numpy as np

from common import write_result
from tau_jax import data
from tau_jax.config import load_config_file
from tau_jax.train import loop

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODES = ("edge", "reflect", "zeros")
CROP = 61


def cropped_clips(folder: pathlib.Path, sequences: int) -> pathlib.Path:
    """`sequences` Moving MNIST clips of 20 frames, cropped to CROP x CROP, uint8 NTHWC .npy."""
    config = load_config_file(str(ROOT / "configs/mmnist/quickstart.py"))
    config.data.update(mmnist_train_size=sequences, data_dir=str(folder / "tfds"))
    source = data.get_source(config.data, "train")
    start = (64 - CROP) // 2
    clips = np.stack([np.rint(source[i] * 255) for i in range(sequences)]).astype(np.uint8)
    path = folder / "mmnist_61.npy"
    np.save(path, clips[:, :, start:start + CROP, start:start + CROP])
    return path


def run(clips: pathlib.Path, folder: pathlib.Path, mode: str, seed: int, steps: int) -> dict:
    config = load_config_file(str(ROOT / "configs/mmnist/quickstart.py"))
    config.model.in_shape = (10, CROP, CROP, 1)
    config.data.update(name="custom", custom_path=str(clips), custom_layout="NTHWC",
                       custom_stride=20, custom_test_fraction=0.2, frame_padding=mode,
                       in_frames=10, out_frames=10, data_dir=str(folder / "tfds"),
                       eval_batch_size=50)
    config.train.update(max_steps=steps, seed=seed, log_every_steps=steps, num_samples=0)
    start = time.perf_counter()
    metrics = loop.train_and_evaluate(config, folder / f"{mode}_{seed}")
    keys = ("mse", "mae", "ssim", "psnr")
    return {"mode": mode, "seed": seed, "steps": steps, "seconds": time.perf_counter() - start,
            **{k: float(metrics[k]) for k in keys},
            **{f"copy_last_{k}": float(metrics[f"copy_last_{k}"]) for k in keys}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--sequences", type=int, default=2500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        clips = cropped_clips(folder, args.sequences)
        runs = []
        for seed in (0, 1):
            for mode in MODES:
                runs.append(run(clips, folder, mode, seed, args.steps))
                print(runs[-1], flush=True)
    summary = {mode: {k: float(np.mean([r[k] for r in runs if r["mode"] == mode]))
                      for k in ("mse", "mae", "ssim", "psnr")} for mode in MODES}
    path = write_result("frame_padding_cpu", {
        "command": f"python experiments/frame_padding.py --steps {args.steps} "
                   f"--sequences {args.sequences}",
        "setup": f"quickstart TAU on Moving MNIST cropped to {CROP}x{CROP} (padded to 64x64), "
                 f"batch 4, {args.steps} steps, OneCycle over them, 2 seeds; test = 20% of "
                 f"{args.sequences} sequences", "runs": runs, "mean_over_seeds": summary})
    print(path)
    for mode, m in summary.items():
        print(mode, {k: round(v, 4) for k, v in m.items()})


if __name__ == "__main__":
    main()
