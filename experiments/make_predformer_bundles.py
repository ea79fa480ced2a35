"""Make the PredFormer reference bundles in tests/data/predformer_bundles/ with the official code.

    python experiments/make_predformer_bundles.py --official PATH_TO_PREDFORMER_CHECKOUT

Needs PyTorch and einops (not tau-jax's dependencies: run it from a separate environment). The
official repository (github yyyujintang/PredFormer) is not part of tau-jax; only the bundles are.
Its model files import timm, fvcore and the fork's `openstl.utils` for things the forward pass in
eval mode does not use (DropPath is the identity in eval mode, trunc_normal_ only initialises,
the FLOP counter is unused), so small stand-ins are put in `sys.modules` and the two official
files (`openstl/modules/PredFormer_modules.py`, `openstl/models/PredFormer_<Variant>.py`) are
loaded by path.

Each bundle: `NAME.npz` with `param/<state dict key>` (float64, PyTorch layout), `x` (B, T, C, H,
W), `y_eval` (the official model in eval mode, float64) and `y_rollout` (the official `_predict`
for T' = 2T + 1: passes chained, the last cropped); `NAME.json` with the official model_config,
the variant and T'.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import types

import numpy as np

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "predformer_bundles"
FILES = {"full": "FullAttention", "fac_st": "FacST", "fac_ts": "FacTS", "binary_st": "Binary_ST",
         "binary_ts": "Binary_TS", "triplet_tst": "Triplet_TST", "triplet_sts": "Triplet_STS",
         "quadruplet_tsst": "Quadruplet_TSST", "quadruplet_stts": "Quadruplet_STTS"}
# variant -> config changes from BASE: every variant on a non-square, several-channel frame; one
# with heads * dim_head != dim, one with a single head as wide as the token (no output projection)
BASE = dict(height=8, width=12, num_channels=2, pre_seq=3, after_seq=3, patch_size=4, dim=16,
            heads=2, dim_head=8, dropout=0.1, attn_dropout=0.1, drop_path=0.1, scale_dim=2,
            depth=1, Ndepth=2)
# The official Ndepth of each variant (the comment in the official configs: equal budgets)
OFFICIAL_NDEPTH = {
    "mmnist": dict(full=24, fac_st=12, fac_ts=12, binary_st=12, binary_ts=12, triplet_tst=8,
                   triplet_sts=8, quadruplet_tsst=6, quadruplet_stts=6),
    "taxibj": dict(full=8, fac_st=4, fac_ts=4, binary_st=4, binary_ts=4, triplet_tst=3,
                   triplet_sts=3, quadruplet_tsst=2, quadruplet_stts=2),
    "weather/t2m_5_625": dict(full=8, fac_st=4, fac_ts=4, binary_st=4, binary_ts=4,
                              triplet_tst=3, triplet_sts=3, quadruplet_tsst=2, quadruplet_stts=2),
}
CHANGES = {"binary_ts": dict(heads=3, dim_head=6), "full": dict(heads=1, dim_head=16),
           "triplet_sts": dict(depth=2, patch_size=2)}


def stand_ins(torch):
    """Modules the official files import for what the eval-mode forward pass never uses."""
    nn = torch.nn

    class DropPath(nn.Module):
        def __init__(self, rate=0.0):
            super().__init__()

        def forward(self, x):
            return x  # eval mode

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    layers.trunc_normal_ = lambda t, std=1.0: nn.init.trunc_normal_(t, std=std)
    fvcore = types.ModuleType("fvcore.nn")
    fvcore.FlopCountAnalysis = fvcore.flop_count_table = None
    utils = types.ModuleType("openstl.utils")
    utils.measure_throughput = None
    for name, module in {"timm": types.ModuleType("timm"),
                         "timm.models": types.ModuleType("timm.models"),
                         "timm.models.layers": layers, "fvcore": types.ModuleType("fvcore"),
                         "fvcore.nn": fvcore, "openstl": types.ModuleType("openstl"),
                         "openstl.utils": utils}.items():
        sys.modules[name] = module


def load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def official_predict(model, x, horizon: int):
    """The official method's `_predict` (openstl/methods/PredFormer.py) for T' > T."""
    import torch
    t = x.shape[1]
    preds, cur = [], x
    for _ in range(horizon // t):
        cur = model(cur)
        preds.append(cur)
    if horizon % t:
        preds.append(model(cur)[:, :horizon % t])
    return torch.cat(preds, dim=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, type=pathlib.Path,
                        help="a checkout of github yyyujintang/PredFormer")
    args = parser.parse_args()
    import torch
    stand_ins(torch)
    load(args.official / "openstl" / "modules" / "PredFormer_modules.py", "openstl.modules")
    OUT.mkdir(parents=True, exist_ok=True)
    for i, (variant, file) in enumerate(FILES.items()):
        official = load(args.official / "openstl" / "models" / f"PredFormer_{file}.py",
                        f"predformer_{variant}")
        config = dict(BASE, **CHANGES.get(variant, {}))
        torch.manual_seed(i)
        model = official.PredFormer_Model(config).double().eval()
        with torch.no_grad():  # non-zero biases and LayerNorm affines, so every key matters
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        x = torch.rand(2, config["pre_seq"], config["num_channels"], config["height"],
                       config["width"], dtype=torch.float64)
        horizon = 2 * config["pre_seq"] + 1
        with torch.no_grad():
            y_eval, y_rollout = model(x), official_predict(model, x, horizon)
        arrays = {f"param/{k}": v.numpy() for k, v in model.state_dict().items()}
        arrays.update(x=x.numpy(), y_eval=y_eval.numpy(), y_rollout=y_rollout.numpy())
        name = f"predformer_{variant}"
        np.savez_compressed(OUT / f"{name}.npz", **arrays)
        n = sum(p.numel() for p in model.parameters())
        meta = dict(model="PredFormer_Model", file=f"openstl/models/PredFormer_{file}.py",
                    variant=variant, model_config=config, out_frames=horizon, params=n,
                    torch=torch.__version__)
        (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{name}: {n:,} parameters, {len(model.state_dict())} keys")
    counts = {}
    for dataset, depths in OFFICIAL_NDEPTH.items():
        namespace = {}
        exec((args.official / "configs" / dataset / "PredFormer.py").read_text(), namespace)
        for variant in FILES:
            official = sys.modules[f"predformer_{variant}"]
            config = dict(namespace["model_config"], Ndepth=depths[variant])
            model = official.PredFormer_Model(config)
            counts[f"{dataset}/{variant}"] = dict(
                model_config=config, params=sum(p.numel() for p in model.parameters()))
    (OUT / "official_param_counts.json").write_text(json.dumps(counts, indent=1) + "\n")
    print({k: v["params"] for k, v in counts.items()})


if __name__ == "__main__":
    main()
