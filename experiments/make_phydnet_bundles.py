"""Make the PhyDNet reference bundles in tests/data/openstl_bundles/phydnet/ with OpenSTL's code.

    PYTHONPATH=PATH_TO_OPENSTL_CHECKOUT python experiments/make_phydnet_bundles.py
    PYTHONPATH=... python experiments/make_phydnet_bundles.py --check-public PHYDNET_NPZ

Needs PyTorch (and what `openstl.modules` imports: timm, scipy). OpenSTL (commit c74deb5) is not
part of tau-jax; only the bundles are. Everything runs in float64 on CPU, one thread.

The weights are not stored: `seeded_state_dict(keys, seed)` makes them from numpy's
`default_rng(seed)`, one `standard_normal` draw per canonical state-dict key in sorted order
(scaled like PyTorch's default init: std 1 / sqrt(3 fan_in) for conv weights and biases,
GroupNorm weights 1 + 0.1 N, biases 0.1 N); tests/test_phydnet.py has the same function. The
JSON lists the canonical keys and shapes; OpenSTL's `encoder.phycell.*` / `encoder.convcell.*`
copies hold the same tensors. Each NAME.npz holds `batch_x`, `batch_y` (B, T|T', C, H, W), the
train-mode per-step images `images_tf1` / `images_tf0` (B, T - 1 + T', C, H, W; a forward hook on
the encoder, as the public bundle), OpenSTL's `loss_model_tf*` (its moment term rounded to float32),
`loss_moment` (rounded) and `loss_moment_f64`, `loss_method_tf1` (the method's broadcast bug) and
`pred_y_test` from `model.inference`.

`--check-public NPZ` runs the same code on the public bundle's weights and inputs (OpenSTL's
45 MB reference `phydnet.npz`, not in this repository) and checks every stored output is
reproduced exactly: this generator computes what that bundle holds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib
import sys
import types
import warnings

import numpy as np

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "openstl_bundles" / "phydnet"
# name -> OpenSTL config: patch 4 and 2, T != T', two channels, non-square frames
CASES = {
    "phydnet_p4_c2": dict(in_shape=[3, 2, 8, 12], pre_seq_length=3, aft_seq_length=2,
                          patch_size=4, batch=2, seed=9100),
    "phydnet_p2": dict(in_shape=[2, 1, 8, 6], pre_seq_length=2, aft_seq_length=3,
                       patch_size=2, batch=2, seed=9110),
}
TWINS = (("encoder.phycell.", "phycell."), ("encoder.convcell.", "convcell."))


def seeded_state_dict(keys, seed: int) -> dict:
    """{key: float64 array} for [(key, shape), ...] in sorted key order (module docstring)."""
    rng, shapes, out = np.random.default_rng(seed), {k: tuple(s) for k, s in keys}, {}
    for key in sorted(shapes):
        z = rng.standard_normal(shapes[key])
        if ".main.1." in key or ".bn1." in key:  # GroupNorm affine
            out[key] = 1.0 + 0.1 * z if key.endswith("weight") else 0.1 * z
        else:  # conv (O, I, k, k) / transposed conv (I, O, k, k) weights and their biases
            w = shapes[key[:-len("bias")] + "weight"] if key.endswith("bias") else shapes[key]
            out[key] = z / np.sqrt(3.0 * w[1] * w[2] * w[3])
    return out


def openstl():
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules[name] = types.ModuleType(name)
    import torch
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    from openstl.models import PhyDNet_Model
    return torch, PhyDNet_Model


def build(torch, cls, meta):
    cfg = types.SimpleNamespace(**dict(meta, in_shape=tuple(meta["in_shape"]), device="cpu"))
    with contextlib.redirect_stdout(io.StringIO()):  # PhyD_ConvLSTM prints its layer sizes
        return cls(cfg)


def constraints(torch):
    cons = torch.zeros((49, 7, 7))  # PhyDNet._get_constraints
    for k in range(49):
        cons[k, k // 7, k % 7] = 1
    return cons


def run(torch, model, x, y):
    """Every stored output, from the model's current weights (fresh states each call)."""
    mse, cons, out, imgs = torch.nn.MSELoss(), constraints(torch), {}, []
    hook = model.encoder.register_forward_hook(lambda m, i, o: imgs.append(o[2]))
    with torch.no_grad():
        for r in (1, 0):
            model.train()
            imgs.clear()
            out[f"loss_model_tf{r}"] = model(x, y, cons, float(r))
            out[f"images_tf{r}"] = torch.stack(imgs, 1)
        hook.remove()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the broadcast *is* OpenSTL's training_step
            out["loss_method_tf1"] = mse(out["loss_model_tf1"], y)
        model.eval()
        out["pred_y_test"], out["loss_inference"] = model.inference(x, y, cons, return_loss=True)
        w = model.encoder.phycell.cell_list[0].F.conv1.weight
        out["loss_moment"] = sum(mse(model.k2m(w[:, b].double()).float(), cons)
                                 for b in range(w.shape[1]))
        out["loss_moment_f64"] = sum(mse(model.k2m(w[:, b].double()), cons.double())
                                     for b in range(w.shape[1]))
    return {k: v.detach().numpy() for k, v in out.items()}


def make(torch, cls, name, case):
    meta = dict(case, total_length=case["pre_seq_length"] + case["aft_seq_length"])
    model = build(torch, cls, meta)
    full = model.state_dict()
    keys = [(k, list(v.shape)) for k, v in full.items()
            if not k.startswith(("encoder.phycell.", "encoder.convcell.", "k2m."))]
    sd = seeded_state_dict(keys, meta["seed"])
    for copy, canonical in TWINS:
        sd.update({copy + k[len(canonical):]: v for k, v in list(sd.items())
                   if k.startswith(canonical)})
    sd.update({k: v.numpy() for k, v in full.items() if k.startswith("k2m.")})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    t, c, h, w = meta["in_shape"]
    rng = np.random.default_rng(meta["seed"] + 2)
    x = rng.uniform(size=(meta["batch"], t, c, h, w))
    y = rng.uniform(size=(meta["batch"], meta["aft_seq_length"], c, h, w))
    out = run(torch, model, torch.from_numpy(x), torch.from_numpy(y))
    meta.update(model="PhyDNet_Model", method="PhyDNet", keys=sorted(keys),
                n_params=sum(p.numel() for p in model.parameters()))
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / f"{name}.npz", batch_x=x, batch_y=y, **out)
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(name, meta["n_params"], {k: float(v) for k, v in out.items() if v.ndim == 0})


def check_public(torch, cls, path):
    z = np.load(path)
    meta = json.loads(pathlib.Path(path).with_suffix(".json").read_text())
    model = build(torch, cls, meta)
    model.load_state_dict({k[6:]: torch.from_numpy(z[k]) for k in z.files
                           if k.startswith("param/")}, strict=True)
    out = run(torch, model, torch.from_numpy(z["batch_x"]), torch.from_numpy(z["batch_y"]))
    diffs = {k: float(np.max(np.abs(v - z[k]))) for k, v in out.items()}
    print("public bundle reproduced, max |diff|:", diffs)
    assert all(d == 0.0 for d in diffs.values()), diffs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check-public", metavar="NPZ")
    args = parser.parse_args()
    torch, cls = openstl()
    if args.check_public:
        check_public(torch, cls, args.check_public)
        return
    for name, case in CASES.items():
        make(torch, cls, name, case)


if __name__ == "__main__":
    main()
