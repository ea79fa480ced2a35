"""Input-pipeline throughput next to TAU's training-step throughput on the same machine.

The pipeline must outrun training: this measures sequences/s of `train_batches` (source read,
decode, batch, global jax.Array) alone, then sequences/s of a jitted TAU training step (forward,
MSE + DDR, backward, Adam) on batches already on the device, for the same config.

    python experiments/pipeline_bench.py --config configs/mmnist/tau.py [--batch 16] [--steps 20]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from common import write_result
from tau_jax import data, losses, models
from tau_jax.config import load_config_file
from tau_jax.data.pipeline import train_batches


def pipeline_rate(source, batch: int, mesh: Mesh, steps: int) -> float:
    it = train_batches(source, batch, mesh, seed=0)
    jax.block_until_ready(next(it))  # threads started, first batch read
    start = time.perf_counter()
    for _ in range(steps):
        jax.block_until_ready(next(it))
    return steps * batch / (time.perf_counter() - start)


def train_step_rate(model_config, alpha: float, frames, steps: int) -> float:
    model = models.build(model_config)
    t = model_config.in_shape[0]
    variables = models.init(model_config, jax.random.key(0))
    opt = optax.adam(1e-3)
    opt_state = opt.init(variables["params"])

    @jax.jit
    def step(params, batch_stats, opt_state, frames, key):
        def loss_fn(params):
            pred, state = model.apply({"params": params, "batch_stats": batch_stats},
                                      frames[:, :t], train=True, mutable=["batch_stats"],
                                      rngs={"drop_path": key, "dropout": key})
            return losses.tau_loss(pred, frames[:, t:], alpha), state["batch_stats"]
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    params, stats = variables["params"], variables["batch_stats"]
    key = jax.random.key(1)
    params, stats, opt_state, loss = step(params, stats, opt_state, frames, key)  # compile
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in range(steps):
        params, stats, opt_state, loss = step(params, stats, opt_state, frames, key)
    jax.block_until_ready(loss)
    return steps * frames.shape[0] / (time.perf_counter() - start)


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
    mesh = Mesh(np.array(jax.devices()).reshape(-1, 1), ("data", "fsdp"))
    source = data.get_source(config.data, "train")
    pipe = pipeline_rate(source, args.batch, mesh, args.pipeline_steps)
    print(f"pipeline: {pipe:.1f} sequences/s", flush=True)
    frames = next(train_batches(source, args.batch, mesh, seed=0))
    train = train_step_rate(config.model, config.loss.alpha, frames, args.train_steps)
    print(f"TAU train step: {train:.2f} sequences/s; pipeline / train = {pipe / train:.1f}x")
    path = write_result(f"pipeline_{jax.default_backend()}", {
        "config": args.config, "batch": args.batch, "pipeline_sequences_per_s": pipe,
        "train_sequences_per_s": train, "pipeline_over_train": pipe / train})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
