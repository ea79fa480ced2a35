"""Train-step throughput of models on their Moving MNIST configs (TAU, PredRNN, PredFormer) on
this machine, side by side.

Every model runs the training system's own jitted step (tau_jax.train.loop.make_train_step: loss,
backward, the config's optimiser and schedule, donated state), timed as `tau-jax benchmark` times
it (tau_jax.bench.benchmark.measure_ours): TAU with MSE + 0.1 DDR on the 10 -> 10 prediction,
PredRNN with its scheduled-sampling mask drawn inside the step and the MSE over all 19 one-step
predictions, PredFormer (Quadruplet-TSST, 6 blocks; AdamW) with MSE. Input: random frames
(B, 20, 64, 64, 1), the same for all. Reported per model: parameters, XLA's forward FLOP count
(batch 1), compile time, the step time of each timed call after `--warmup` calls, the median,
and sequences/s = batch / median. The official PredFormer and TAU Moving MNIST models are of
equal size by compute: 33.1 and 32.3 forward GFLOP (XLA's count).

Scaling for a small CPU (recorded in the result): `--batch` (OpenSTL trains with 16) and
`--width_div` (integer divisor of the widths: PredRNN num_hidden 128 -> 128/div, TAU hid_S 64 ->
64/div and hid_T 512 -> 512/div, PredFormer dim 256 -> 256/div and dim_head 32 -> 32/div; 1 = the
real models, 23.8M, 44.7M and 25.3M parameters). Depth, frame size, patch size, kernel sizes,
heads and sequence lengths are never changed.

    python experiments/train_speed.py [--models predrnn,tau] [--batch 2] [--width_div 1]
                                      [--steps 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics

import jax
import numpy as np

from common import write_result
from tau_jax.bench import benchmark
from tau_jax.config import load_config_file
from tau_jax.summary import summarize

ROOT = pathlib.Path(__file__).parents[1]
CONFIGS = {"predrnn": "configs/mmnist/predrnn.py", "tau": "configs/mmnist/tau.py",
           "predformer": "configs/mmnist/predformer.py"}


def scaled_config(name: str, batch: int, width_div: int):
    config = load_config_file(ROOT / CONFIGS[name])
    m = config.model
    if width_div > 1:
        if name == "predrnn":
            m.num_hidden = tuple(max(1, n // width_div) for n in m.num_hidden)
        elif name == "predformer":
            m.dim, m.dim_head = max(1, m.dim // width_div), max(1, m.dim_head // width_div)
        else:
            m.hid_S = max(2, m.hid_S // width_div // 2 * 2)  # even (GroupNorm(2))
            m.hid_T = max(1, m.hid_T // width_div)
    config.data.batch_size = batch
    return config


def step_times(config, warmup: int, steps: int) -> dict:
    """`tau-jax benchmark`'s training measurement (one step per timed repeat) on one device."""
    ours = benchmark.measure_ours(config, config.data.batch_size, infer_batch=1, warmup=warmup,
                                  repeats=steps, steps=1, infer_steps=1)
    assert np.isfinite(ours["final_loss"]), ours["final_loss"]
    return {"params": ours["params"], "compile_s": ours["train_compile_s"],
            "step_s": ours["train_step_s"], "median_step_s": statistics.median(ours["train_step_s"]),
            "final_loss": ours["final_loss"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width_div", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
    parser.add_argument("--models", default="predrnn,tau")
    args = parser.parse_args()
    if args.batch < 1 or args.width_div < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--batch, --width_div and --steps must be >= 1, --warmup >= 0.")

    results = {}
    for name in args.models.split(","):
        config = scaled_config(name, args.batch, args.width_div)
        r = step_times(config, args.warmup, args.steps)
        r["sequences_per_s"] = args.batch / r["median_step_s"]
        r["forward_flops"] = summarize(config.model)["forward_flops"]
        r["model"] = {k: (list(v) if isinstance(v, tuple) else v)
                      for k, v in config.model.to_dict().items()}
        results[name] = r
        print(f"{name}: {r['params']:,} params, {r['forward_flops'] / 1e9:.1f} GFLOP, "
              f"compile {r['compile_s']:.1f} s, "
              f"median step {r['median_step_s']:.3f} s -> {r['sequences_per_s']:.3f} sequences/s",
              flush=True)
    payload = {"batch": args.batch, "width_div": args.width_div, "timed_steps": args.steps,
               "warmup_steps": args.warmup, "frames": [args.batch, 20, 64, 64, 1],
               "configs": {k: CONFIGS[k] for k in results}, "results": results}
    if "tau" in results:
        for name in set(results) - {"tau"}:
            ratio = results["tau"]["sequences_per_s"] / results[name]["sequences_per_s"]
            payload[f"tau_over_{name}"] = ratio
            print(f"TAU / {name} train throughput: {ratio:.2f}x")
    path = write_result(f"train_speed_{'_'.join(results)}_{jax.default_backend()}", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
