"""Forward FLOPs by XLA's cost analysis for every shipped SimVP-family config (TAU, gSTA, IncepU
and the MetaFormer zoo), next to OpenSTL's
fvcore count (one FLOP per multiply-add; reference/param_flops.json, copied in tests/data).

XLA counts 2 FLOPs per multiply-add plus element-wise work, so `xla_flops / 2` is the comparable
figure. Two systematic differences remain: XLA also counts activations, bias adds and the
attention products (+1-5%), and it skips the multiply-adds that fall on zero padding while
fvcore counts every kernel tap (measured: a 3x3 conv on 16x16 counts 17.33M FLOPs in XLA vs
18.87M = 2 x MACs analytically). The second dominates IncepU, whose 7x7 and 11x11 kernels run on
16x16 latents. OpenSTL reports one pass; for T' > T (KTH 10 -> 20) the per-pass figure is the
whole roll-out divided by the number of passes. Depthwise convs use the grouped-conv lowering
here so that they are counted as convolutions.

    python experiments/flops.py
"""

from __future__ import annotations

import json
import pathlib

from common import write_result
from tau_jax.config import load_config_file
from tau_jax.summary import summarize

ROOT = pathlib.Path(__file__).parents[1]
OPENSTL = json.loads((ROOT / "tests" / "data" / "param_flops.json").read_text())
OPENSTL_NAME = {"tau": "tau", "gsta": "gSTA", "incepu": "IncepU", "convmixer": "ConvMixer",
                "convnext": "ConvNeXt", "hornet": "HorNet", "mlpmixer": "MLPMixer",
                "moganet": "MogaNet", "poolformer": "Poolformer", "swin": "Swin",
                "uniformer": "Uniformer", "van": "VAN", "vit": "ViT"}  # OpenSTL's file names


def main():
    rows = []
    for path in sorted((ROOT / "configs").glob("*/*.py")):
        cfg = load_config_file(path).model
        if path.stem not in OPENSTL_NAME:  # OpenSTL configs only (not e.g. quickstart.py)
            continue
        cfg.dw_impl = "lax"
        info = summarize(cfg)
        ref = OPENSTL[f"{path.parent.name}/{OPENSTL_NAME[cfg.name]}"]
        passes = -(-cfg.out_frames // cfg.in_shape[0])
        row = {"config": str(path.relative_to(ROOT)), "params": info["params"],
               "openstl_params": ref["params"], "passes": passes,
               "xla_flops": info["forward_flops"] / passes,
               "xla_macs": info["forward_flops"] / passes / 2, "openstl_fvcore_flops": ref["flops"],
               "openstl_conv_macs": ref["by_op"]["conv"]}
        row["xla_macs_over_fvcore"] = row["xla_macs"] / ref["flops"]
        rows.append(row)
        print(f"{row['config']:26s} params {row['params']:>11,d} (OpenSTL {ref['params']:>11,d})  "
              f"XLA/pass {row['xla_flops'] / 1e9:8.3f} GFLOP = {row['xla_macs'] / 1e9:8.3f} G-MAC  "
              f"fvcore {ref['flops'] / 1e9:8.3f} G  ratio {row['xla_macs_over_fvcore']:.4f}",
              flush=True)
    print(f"wrote {write_result('flops', {'batch': 1, 'rows': rows})}")


if __name__ == "__main__":
    main()
