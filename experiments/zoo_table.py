"""The README's zoo table: every model of the library on its Moving MNIST config, parameters and
forward FLOPs (XLA's cost analysis, one batch-1 eval forward, halved to multiply-adds) beside the
numbers OpenSTL publishes (docs/en/model_zoos/video_benchmarks.md, MMNIST tables, fvcore: one
FLOP per multiply-add), and how its weights import.

XLA's cost analysis counts the body of a loop once: the models that scan over the T + T' - 1
steps of OpenSTL's forward (the recurrent family, PhyDNet, SwinLSTM) are scaled by that count.

    python experiments/zoo_table.py      # writes experiments/results/zoo_mmnist.json, prints rows
"""

from __future__ import annotations

import pathlib

from common import write_result
from tau_jax import models
from tau_jax.config import load_config_file
from tau_jax.summary import summarize

ROOT = pathlib.Path(__file__).parents[1]

# model.name -> (OpenSTL's row, its published params in M, its published FLOPs in G)
PUBLISHED = {
    "tau": ("TAU", 44.7, 16.0), "gsta": ("SimVP+gSTA-S", 46.8, 16.5),
    "incepu": ("SimVP+IncepU", 58.0, 19.4), "convmixer": ("ConvMixer", 3.9, 5.5),
    "convnext": ("ConvNeXt", 37.3, 14.1), "hornet": ("HorNet", 45.7, 16.3),
    "mlpmixer": ("MLP-Mixer", 38.2, 14.7), "moganet": ("MogaNet", 46.8, 16.5),
    "poolformer": ("Poolformer", 37.1, 14.1), "swin": ("Swin Transformer", 46.1, 16.4),
    "uniformer": ("Uniformer", 44.8, 16.5), "van": ("VAN", 44.5, 16.0),
    "vit": ("ViT", 46.1, 16.9), "predrnn": ("PredRNN", 23.8, 116.0),
    "predrnnv2": ("PredRNN.V2", 23.9, 116.6), "convlstm": ("ConvLSTM-S", 15.0, 56.8),
    "predrnnpp": ("PredRNN++", 38.6, 171.7), "mim": ("MIM", 38.0, 179.2),
    "e3dlstm": ("E3D-LSTM", 51.0, 298.9), "mau": ("MAU", 4.5, 17.8),
    "phydnet": ("PhyDNet", 3.1, 15.3),
}
NOT_OPENSTL = {"predformer": "official PredFormer code's weights import exactly",
               "timesformer": "not an OpenSTL model", "tps": "not an OpenSTL model"}


SCANNED = ("phydnet", "swinlstm_d", "swinlstm_b")  # frame models whose forward is one nn.scan


def weights(name: str) -> str:
    if name in NOT_OPENSTL:
        return NOT_OPENSTL[name]
    return "OpenSTL's weights import exactly (float64 bundles)"


def main():
    rows = []
    for name in models.names():
        cfg = load_config_file(ROOT / "configs" / "mmnist" / f"{name}.py").model
        if "dw_impl" in cfg:
            cfg.dw_impl = "lax"  # depthwise convs counted as convolutions
        info = summarize(cfg)
        steps = 1
        if name in SCANNED or models.family_of(name).OPENSTL_FEED == "patches":
            steps = cfg.in_shape[0] + cfg.out_frames - 1  # one scan body counted
        openstl = PUBLISHED.get(name)
        row = {"model": name, "params": info["params"], "scan_steps": steps,
               "xla_gmac": steps * info["forward_flops"] / 2e9,
               "input_shapes": info["input_shapes"], "weights": weights(name),
               "openstl_row": openstl and openstl[0],
               "openstl_params_m": openstl and openstl[1], "openstl_gflops": openstl and openstl[2]}
        rows.append(row)
        published = f"{openstl[1]}M {openstl[2]}G" if openstl else "-"
        print(f"| {name} | {row['params'] / 1e6:.2f}M | {row['xla_gmac']:.1f} | {published} | "
              f"{row['weights']} |", flush=True)
    print(f"wrote {write_result('zoo_mmnist', {'batch': 1, 'rows': rows})}")


if __name__ == "__main__":
    main()
