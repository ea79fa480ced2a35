"""Training losses of a fixed short run, to compare two versions of the code (issue: training
speed, "float32 losses of a fixed run stay within float32 rounding of before").

The run: a config's model and optimiser, `--steps` train steps on uniform-random frames from a
fixed NumPy seed, float32. Run it in each checkout (a `git worktree` of the old commit, with
PYTHONPATH pointing at it) and compare the two files:

    cd experiments && python loss_trajectory.py --config ../configs/mmnist/quickstart.py \
        --name loss_trajectory_quickstart_NEW
    python loss_trajectory.py --compare loss_trajectory_quickstart_OLD loss_trajectory_quickstart_NEW

`--set model.num_hidden="(32, 32)"` (repeatable) overrides a config field with a Python literal.
"""

from __future__ import annotations

import argparse
import ast
import json

import jax
import jax.numpy as jnp
import numpy as np

from common import RESULTS, write_result
from tau_jax import models
from tau_jax.config import load_config_file
from tau_jax.train import loop, optim
from tau_jax.train.sharding import batch_sharding, make_mesh


def losses(config, steps: int) -> list[float]:
    mesh = make_mesh((-1, 1))
    mc, batch = config.model, int(config.data.batch_size)
    t, h, w, c = (int(v) for v in mc.in_shape)
    model = models.build(mc)
    tx, _ = optim.create_optimizer(config.optim, steps_per_epoch=100, epochs=10)
    state, shardings = loop.init_state(config, tx, mesh)
    step = loop.make_train_step(model, config, tx, shardings, mesh)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(steps):
        frames = rng.uniform(size=(batch, t + int(mc.out_frames), h, w, c)).astype(np.float32)
        state, metrics = step(state, jax.device_put(jnp.asarray(frames), batch_sharding(mesh)))
        out.append(float(metrics["loss"]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--name", help="results file name (experiments/results/NAME.json)")
    parser.add_argument("--compare", nargs=2, metavar="NAME", help="two results to compare")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field with a Python literal")
    args = parser.parse_args()
    if args.compare:
        a, b = (np.array(json.loads((RESULTS / f"{n}.json").read_text())["losses"])
                for n in args.compare)
        print(f"largest relative difference over {len(a)} steps: "
              f"{float(np.max(np.abs(a - b) / np.abs(a))):.2e}")
        return
    config = load_config_file(args.config)
    config.data.batch_size = args.batch
    for item in args.set:
        key, value = item.split("=", 1)
        section, field = key.split(".")
        config[section][field] = ast.literal_eval(value)
    result = losses(config, args.steps)
    print(write_result(args.name, {"config": args.config, "batch": args.batch, "set": args.set,
                                   "losses": result}))


if __name__ == "__main__":
    main()
