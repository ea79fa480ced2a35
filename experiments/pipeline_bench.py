"""Input-pipeline throughput next to TAU's training-step throughput on the same machine.

The pipeline must outrun training: this measures sequences/s of `train_batches` (source read,
decode, batch, global jax.Array) alone, then sequences/s of the training system's jitted step for
the same config on a batch already on the device, as `tau-jax benchmark` measures it.

    python experiments/pipeline_bench.py --config configs/mmnist/tau.py [--batch 16] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import jax
from jax.sharding import Mesh

from common import write_result
from tau_jax import data
from tau_jax.bench import benchmark
from tau_jax.config import load_config_file
from tau_jax.data.pipeline import train_batches
from tau_jax.train.sharding import batch_sharding
from tau_jax.train.sharding import make_mesh


def pipeline_rate(source, batch: int, mesh: Mesh, steps: int) -> float:
    it = train_batches(source, batch, batch_sharding(mesh), seed=0)
    jax.block_until_ready(next(it))  # threads started, first batch read
    start = time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(next(it))
    return steps * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/mmnist/tau.py")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--pipeline_steps", type=int, default=50)
    parser.add_argument("--train_steps", type=int, default=3)
    parser.add_argument("--data_dir", default=None, help="overrides config.data.data_dir")
    args = parser.parse_args()

    config = load_config_file(args.config)
    if args.data_dir:
        config.data.data_dir = args.data_dir
    mesh = make_mesh((-1, 1))
    source = data.get_source(config.data, "train")
    pipe = pipeline_rate(source, args.batch, mesh, args.pipeline_steps)
    print(f"pipeline: {pipe:.1f} sequences/s", flush=True)
    config.data.batch_size = args.batch
    train = benchmark.measure_ours(config, args.batch, infer_batch=1, warmup=1, repeats=1,
                                   steps=args.train_steps, infer_steps=1)["train_seq_per_s"]
    print(f"TAU train step: {train:.2f} sequences/s; pipeline / train = {pipe / train:.1f}x")
    path = write_result(f"pipeline_{jax.default_backend()}", {
        "config": args.config, "batch": args.batch, "pipeline_sequences_per_s": pipe,
        "train_sequences_per_s": train, "pipeline_over_train": pipe / train})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
