"""Plan TPU jobs from this CPU host: `tau_jax.bench.tpu_plan.plan` (what `tau-jax compile` runs)
for four configs x global batches x two slices x data parallel / FSDP, and the README table.

Every number is XLA's (libtpu's) ahead-of-time view of the real train step: memory per device,
collective bytes per step, and an estimated step time (XLA's TPU cost model, or a roofline where
it gives none). They are compiler estimates, not measurements. The 200-epoch time multiplies the
step time by 200 x (training sequences // batch), with the training-set sizes of the SimVP
paper's dataset table (Moving MNIST 10,000; TaxiBJ 19,627; KTH 5,200).

Results accumulate in experiments/results/tpu_plans.json (a rerun skips the plans it has).

    python experiments/tpu_plans.py [--batches 256,16,1024] [--topologies v5e-8,v4-32]

One compile takes about 3 minutes on a 2-core CPU for the full-size TAU, so the batches come in
the order given (the most telling first) and a run can be stopped and resumed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from common import RESULTS, write_result
from tau_jax.bench import tpu_plan
from tau_jax.config import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {"mmnist/tau.py": 10_000, "taxibj/tau.py": 19_627, "kth/tau.py": 5_200,
           "mmnist/predrnn.py": 10_000}
MESHES = {"DP": (-1, 1), "FSDP": (1, -1)}
NAME = "tpu_plans"


def row(plan: dict, train_size: int) -> str:
    gib, mib = 2 ** 30, 2 ** 20
    if "bytes_per_device" not in plan:
        return (f"| {plan['config']} | {plan['topology']} | {plan['global_batch']} | "
                f"{plan['mesh_kind']} | no (compile: out of HBM) | - | - | - | - |")
    moved = sum(v["bytes"] for v in plan["collectives"].values())
    steps = 200 * (train_size // plan["global_batch"])
    return (f"| {plan['config']} | {plan['topology']} | {plan['global_batch']} | "
            f"{plan['mesh_kind']} | {'yes' if plan['fits'] else 'no'} | "
            f"{plan['bytes_per_device'] / gib:.2f} | {moved / mib:.1f} | "
            f"{plan['estimated_step_s'] * 1e3:.2f} | {steps * plan['estimated_step_s'] / 3600:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="256,16,1024")
    parser.add_argument("--topologies", default="v5e-8,v4-32")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--table", action="store_true", help="print the recorded plans only")
    args = parser.parse_args()
    path = RESULTS / f"{NAME}.json"
    done = json.loads(path.read_text())["plans"] if path.exists() else []
    have = {(p["config"], p["topology"], p["global_batch"], p["mesh_kind"]) for p in done}
    for batch in ([] if args.table else (int(b) for b in args.batches.split(","))):
        for topology in args.topologies.split(","):
            for config_name in args.configs.split(","):
                for kind, mesh in MESHES.items():
                    if (config_name, topology, batch, kind) in have:
                        continue
                    config = load_config_file(ROOT / "configs" / config_name)
                    config.data.batch_size = batch
                    config.train.mesh = mesh
                    start = time.perf_counter()
                    plan = tpu_plan.plan(config, topology)
                    plan.update(config=config_name, mesh_kind=kind,
                                compile_s=time.perf_counter() - start)
                    done.append(plan)
                    print(row(plan, CONFIGS[config_name]), f"({plan['compile_s']:.0f} s)",
                          flush=True)
                    write_result(NAME, {"plans": done})
    print("| config | slice | batch | mesh | fits | GiB / device | collectives MiB / step | "
          "est. step ms | est. 200 epochs h |")
    print("|---|---|---|---|---|---|---|---|---|")
    order = {c: i for i, c in enumerate(CONFIGS)}
    for plan in sorted(done, key=lambda p: (order[p["config"]], p["topology"], p["global_batch"],
                                            p["mesh_kind"])):
        print(row(plan, CONFIGS[plan["config"]]))


if __name__ == "__main__":
    main()
