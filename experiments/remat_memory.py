"""What `model.remat` buys the recurrent family: XLA's memory estimate and FLOPs of one compiled
train step with and without rematerialising each scanned time step (compiled, not run).

    cd experiments && python remat_memory.py [--config ../configs/mmnist/predrnn.py] [--batch 16]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from common import write_result
from tau_jax import models
from tau_jax.config import load_config_file
from tau_jax.train import loop, optim
from tau_jax.train.sharding import make_mesh


def compiled_step(config, batch: int):
    mesh = make_mesh((-1, 1))
    tx, _ = optim.create_optimizer(config.optim, steps_per_epoch=1000, epochs=1000)
    abstract, shardings, _ = loop.state_template(config, tx, mesh)
    step = loop.make_train_step(models.build(config.model), config, tx, shardings, mesh)
    t, h, w, c = config.model.in_shape
    frames = jax.ShapeDtypeStruct((batch, t + config.model.out_frames, h, w, c), jnp.float32)
    return step.lower(abstract, frames).compile()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="../configs/mmnist/predrnn.py")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    rows = {}
    for remat in (False, True):
        config = load_config_file(args.config)
        config.model.remat = remat
        compiled = compiled_step(config, args.batch)
        memory, cost = compiled.memory_analysis(), compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        rows[f"remat={remat}"] = {"temp_mib": memory.temp_size_in_bytes / 2 ** 20,
                                  "argument_mib": memory.argument_size_in_bytes / 2 ** 20,
                                  "step_gflops": cost["flops"] / 1e9}
        print(f"remat={remat}: XLA temporaries {rows[f'remat={remat}']['temp_mib']:.0f} MiB, "
              f"{rows[f'remat={remat}']['step_gflops']:.0f} GFLOP a step")
    print("wrote", write_result("remat_memory_cpu", {"config": args.config, "batch": args.batch,
                                                      "rows": rows}))


if __name__ == "__main__":
    main()
