"""TaxiBJ crowd flows: OpenSTL's `dataset.npz`, 4 -> 4 half-hourly frames of a 32x32 grid with
2 channels (inflow, outflow).

The file holds `X_train`, `Y_train`, `X_test`, `Y_test` of shape (N, 4, 2, 32, 32) scaled to
[-1, 1]; as OpenSTL does, values are mapped to [0, 1] with (x + 1) / 2 and mean = 0, std = 1, so
every metric is on the [0, 1] scale. Stored as float32 (8, 32, 32, 2) = inputs then targets.
There is no validation split (OpenSTL validates on the test set).
"""

from __future__ import annotations

import dataclasses
import pathlib
import zipfile
from typing import ClassVar

import numpy as np

from tau_jax.data import base, sources, tfds_base

NAME = "taxibj"
FILE = "dataset.npz"
KEYS = ("X_train", "Y_train", "X_test", "Y_test")
FRAME_SHAPE = (2, 32, 32)  # (C, H, W) per frame in the file
MANUAL_SUBDIRS = ("taxibj", "TaxiBJ")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
TaxiBJ needs OpenSTL's preprocessed `{FILE}` (arrays X_train, Y_train, X_test, Y_test of shape
(N, 4, 2, 32, 32) scaled to [-1, 1]). Get it from the OpenSTL project's GitHub release v0.1.0
(the TaxiBJ archive among its dataset assets, also linked from OpenSTL's docs on preparing
data), unpack it, and put `{FILE}` in the manual dir or in its `taxibj/` folder
(config.data.manual_dir, `--manual_dir`, default <data_dir>/downloads/manual). The raw TaxiBJ
data come from the ST-ResNet authors (Zhang et al., AAAI 2017).
"""


def npz_headers(path: pathlib.Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{name: (shape, dtype)} of the arrays in an .npz, read from the headers only."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
                out[info.filename[:-4]] = (tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"Cannot read {path} as an .npz archive: {e}") from None
    return out


def find_file(data_config) -> pathlib.Path:
    root = base.manual_dir_of(data_config)
    found = base.first_existing(root, MANUAL_SUBDIRS, lambda p: (p / FILE).is_file())
    if found is None:
        raise FileNotFoundError(f"TaxiBJ's {FILE} not found in {root} (nor in its taxibj/ "
                                f"folder). {MANUAL_DOWNLOAD_INSTRUCTIONS.strip()}")
    return found / FILE


def check_headers(path: pathlib.Path) -> dict[str, int]:
    """Validates names, ranks and shapes; returns {split: N}."""
    headers = npz_headers(path)
    missing = [k for k in KEYS if k not in headers]
    if missing:
        raise ValueError(f"{path} lacks arrays {missing}; OpenSTL's TaxiBJ file has {list(KEYS)}"
                         f" (it holds {sorted(headers)}).")
    sizes = {}
    for k in KEYS:
        shape, dtype = headers[k]
        if len(shape) != 5 or shape[1] != 4 or shape[2:] != FRAME_SHAPE:
            raise ValueError(f"{path}: {k} has shape {shape}; expected (N, 4, 2, 32, 32).")
        if not np.issubdtype(dtype, np.number):
            raise ValueError(f"{path}: {k} has dtype {dtype}; expected numbers.")
    for split in ("train", "test"):
        nx, ny = headers[f"X_{split}"][0][0], headers[f"Y_{split}"][0][0]
        if nx != ny:
            raise ValueError(f"{path}: X_{split} has {nx} samples but Y_{split} has {ny}.")
        if nx == 0:
            raise ValueError(f"{path}: X_{split} is empty.")
        sizes[split] = nx
    return sizes


def load_split(path: pathlib.Path, split: str) -> np.ndarray:
    """float32 (N, 8, 32, 32, 2) in [0, 1]; errors on NaN/Inf or values outside [-1, 1]."""
    with base.load_array(path) as z:
        x, y = z[f"X_{split}"], z[f"Y_{split}"]
    for key, a in ((f"X_{split}", x), (f"Y_{split}", y)):
        base.check_finite(a, f"{path}: {key}")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
            raise ValueError(f"{path}: {key} spans [{lo:.4g}, {hi:.4g}]; OpenSTL's TaxiBJ file is "
                             "scaled to [-1, 1] (its loader maps (x + 1) / 2).")
    seq = np.concatenate([x, y], axis=1).transpose(0, 1, 3, 4, 2)  # (N, 8, 32, 32, 2)
    return ((seq.astype(np.float32) + 1.0) / 2.0).astype(np.float32)


class TaxiBJ(tfds_base.Builder, skip_registration=True):
    """TaxiBJ (8, 32, 32, 2) float32 in [0, 1]: 4 input then 4 target frames."""

    name = "tau_taxibj"
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        tfds_base.VERSION: "OpenSTL's dataset.npz, (x + 1) / 2."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    FEATURE = "frames"

    def feature_spec(self):
        return (8, 32, 32, 2), np.float32

    def _split_generators(self, dl_manager):
        path = pathlib.Path(dl_manager.manual_dir) / FILE
        check_headers(path)
        arrays = {s: load_split(path, s) for s in ("train", "test")}  # validated up front
        self.info.metadata.update({"in_frames": 4, "out_frames": 4,
                                   "sizes": {s: len(a) for s, a in arrays.items()}})
        return {s: self._generate_examples(a, len(a)) for s, a in arrays.items()}


def builder(data_config) -> TaxiBJ:
    base.frames_of(data_config, 4, 4, NAME, fixed=True)
    return TaxiBJ.for_variant(data_config, "openstl", {})


def prepare(data_config) -> TaxiBJ:
    b = builder(data_config)
    if not b.is_prepared():
        path = find_file(data_config)
        check_headers(path)
        tfds_base.ensure_prepared(b, path.parent)
    return b


def get_source(data_config, split: str) -> sources.Source:
    base.check_split(NAME, split, ("train", "test"), "OpenSTL validates TaxiBJ on 'test'.")
    b = prepare(data_config)
    return sources.RecordSource(tfds_base.open_split(b, split), name=NAME, split=split,
                                in_frames=4, out_frames=4, channels=2)


def conventions(data_config) -> base.Conventions:
    """OpenSTL's TaxiBJ metrics: MSE and MAE summed over a frame's 2 x 32 x 32 values, SSIM,
    PSNR, all on the [0, 1] scale; pictures show the two channels as inflow and outflow maps."""
    del data_config
    return dataclasses.replace(base.VIDEO, labels=("inflow", "outflow"))
