"""Moving MNIST, generated as OpenSTL generates it.

Each sequence: `num_digits` (2) MNIST digits of 28x28 on a 64x64 black canvas, each moving on
its own trajectory - start (x, y) ~ U[0, 1)^2, angle ~ U[0, 2pi), per frame a step of 0.1
along (cos, sin), then a bounce at the walls (clamp to 0 / 1 and flip that velocity
component) - with positions scaled by the free range 64 - 28 = 36 and truncated to ints;
digits combine by pixel-wise maximum; frames / 255 -> [0, 1]; 10 -> 10 frames; mean 0, std 1.

Sequence i of a split is drawn from `numpy.random.default_rng([seed, split_id, i])`, so the
data does not depend on how generation is sharded, and two builds with one seed are
identical. The test split is the standard `mnist_test_seq.npy` (uint8 (20, 10000, 64, 64))
when it is in the manual dir, otherwise sequences generated from test digits disjoint from
the training digits. With `config.data.mmnist_online=True` the train split is not stored: a
generating source draws fresh sequences every epoch as OpenSTL does (index i -> rng([seed, 0,
i]); its index space covers `mmnist_online_epochs` epochs of `mmnist_train_size`).
"""

from __future__ import annotations

import pathlib
from typing import ClassVar

import numpy as np

from tau_jax.data import base, sources, tfds_base
from tau_jax.data import digits as digits_lib

NAME = "moving_mnist"
SIZE = 64
DIGIT = 28
STEP = 0.1
SPLIT_IDS = {"train": 0, "test": 1}
TEST_FILE = "mnist_test_seq.npy"
MANUAL_SUBDIRS = ("moving_mnist", "mmnist")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
Nothing is required: training (and, without the file below, test) sequences are generated.
Optional files, in the manual dir or its `moving_mnist/` folder:
* `{TEST_FILE}`: the standard Moving MNIST test set of Srivastava et al. (uint8 array
  (20, 10000, 64, 64)) from the Moving MNIST page of the University of Toronto's machine
  learning group (also fetched by OpenSTL's Moving MNIST download script); when it is present
  it is the test split.
* `{digits_lib.IDX_TRAIN}` (and `{digits_lib.IDX_TEST}`): MNIST's image files from Yann
  LeCun's MNIST page; when present they are the digits (all 60,000 training digits, as
  OpenSTL uses). Otherwise a prepared tfds 'mnist' or the 5,000 MNIST digits bundled with
  tau-jax are used.
"""


# ----------------------------------------------------------------------------------------
# The generator


def bounce_positions(y: float, x: float, theta: float, n_frames: int,
                     step: float = STEP) -> tuple[np.ndarray, np.ndarray]:
    """Float positions in [0, 1] of OpenSTL's trajectory: per frame move by step * (sin,
    cos)(theta) first, then bounce (a coordinate <= 0 becomes 0, >= 1 becomes 1, and its
    velocity flips); the recorded position is the one after the move, so frame 0 is already
    one step from the start."""
    v_y, v_x = np.sin(theta), np.cos(theta)
    ys = np.empty(n_frames, np.float64)
    xs = np.empty(n_frames, np.float64)
    for i in range(n_frames):
        y += v_y * step
        x += v_x * step
        if x <= 0:
            x, v_x = 0.0, -v_x
        if x >= 1.0:
            x, v_x = 1.0, -v_x
        if y <= 0:
            y, v_y = 0.0, -v_y
        if y >= 1.0:
            y, v_y = 1.0, -v_y
        ys[i], xs[i] = y, x
    return ys, xs


def trajectory(rng: np.random.Generator, n_frames: int, size: int = SIZE,
               digit: int = DIGIT) -> tuple[np.ndarray, np.ndarray]:
    """Integer (top, left) per frame: draws y, x, angle from `rng`, scales the bounce
    positions by the free range `size - digit` and truncates."""
    y, x, a = rng.random(3)
    ys, xs = bounce_positions(float(y), float(x), float(a) * 2.0 * np.pi, n_frames)
    free = size - digit
    return (free * ys).astype(np.int64), (free * xs).astype(np.int64)


def generate_sequence(rng: np.random.Generator, digit_images: np.ndarray, n_frames: int,
                      num_digits: int = 2, size: int = SIZE) -> np.ndarray:
    """One sequence, uint8 (n_frames, size, size, 1): per digit a trajectory and a uniformly
    drawn image, pasted with pixel-wise maximum."""
    canvas = np.zeros((n_frames, size, size), np.uint8)
    d = digit_images.shape[-1]
    for _ in range(num_digits):
        tops, lefts = trajectory(rng, n_frames, size, d)
        image = digit_images[rng.integers(len(digit_images))]
        for t in range(n_frames):
            patch = canvas[t, tops[t]:tops[t] + d, lefts[t]:lefts[t] + d]
            np.maximum(patch, image, out=patch)
    return canvas[..., None]


def sequence_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLIT_IDS[split], int(index)])


def sequence_of(s: dict, split: str, index: int, digit_images: np.ndarray) -> np.ndarray:
    """Sequence `index` of `split` for the parameters `s` of `spec()`: the stored and the
    online sources give the same ones."""
    return generate_sequence(sequence_rng(s["seed"], split, index), digit_images,
                             s["in_frames"] + s["out_frames"], s["num_digits"])


# ----------------------------------------------------------------------------------------
# Config -> what to build


def _manual_dir(data_config) -> pathlib.Path:
    root = base.manual_dir_of(data_config)
    found = base.first_existing(
        root, MANUAL_SUBDIRS,
        lambda p: (p / TEST_FILE).is_file() or (p / digits_lib.IDX_TRAIN).is_file())
    return found or root


def check_test_file(path: pathlib.Path, n_frames: int) -> tuple[int, ...]:
    arr = base.load_array(path, mmap_mode="r")
    if arr.ndim != 4 or arr.shape[2:] != (SIZE, SIZE):
        raise ValueError(f"{path} has shape {arr.shape}; the Moving MNIST test file is "
                         f"(frames, sequences, 64, 64) = (20, 10000, 64, 64).")
    if arr.dtype != np.uint8:
        raise ValueError(f"{path} has dtype {arr.dtype}; the Moving MNIST test file is uint8.")
    if arr.shape[0] != n_frames:
        raise ValueError(f"{path} holds {arr.shape[0]}-frame sequences but config.data."
                         f"in_frames + out_frames = {n_frames}; use 10 -> 10 with this file.")
    return tuple(arr.shape)


def spec(data_config) -> dict:
    """Everything that determines the generated data."""
    t_in, t_out = base.frames_of(data_config, 10, 10, NAME)
    manual = _manual_dir(data_config)
    data_dir = base.data_dir_of(data_config)
    test_file = manual / TEST_FILE
    use_file = test_file.is_file()
    if use_file:
        check_test_file(test_file, t_in + t_out)
    kind = digits_lib.resolve(str(data_config.mmnist_digits), manual, data_dir)
    num_digits = int(data_config.mmnist_num_digits)
    if num_digits < 1:
        raise ValueError(f"config.data.mmnist_num_digits must be >= 1; got {num_digits}.")
    train_size = int(data_config.mmnist_train_size)
    test_size = int(data_config.mmnist_test_size)
    if train_size < 1 or (test_size < 1 and not use_file):
        raise ValueError("config.data.mmnist_train_size and mmnist_test_size must be >= 1.")
    return {
        "in_frames": t_in, "out_frames": t_out, "seed": int(data_config.mmnist_seed),
        "num_digits": num_digits, "train_size": train_size,
        "test_size": None if use_file else test_size,
        "test_file": str(test_file) if use_file else None, "digits": kind,
        "manual_dir": str(manual), "data_dir": str(data_dir),
    }


def _identity(s: dict) -> dict:
    """The parameters that name the prepared variant (paths excluded: a moved file is the
    same data)."""
    keep = ("in_frames", "out_frames", "seed", "num_digits", "train_size", "test_size", "digits")
    out = {k: s[k] for k in keep}
    out["test"] = "file" if s["test_file"] else "generated"
    return out


def load_digits(s: dict) -> digits_lib.Digits:
    return digits_lib.load(s["digits"], pathlib.Path(s["manual_dir"]),
                           pathlib.Path(s["data_dir"]), need_test=s["test_file"] is None)


# ----------------------------------------------------------------------------------------
# tfds builder


class MovingMnist(tfds_base.Builder, skip_registration=True):
    """Moving MNIST sequences (T+T', 64, 64, 1) uint8, generated as OpenSTL does."""

    name = "tau_moving_mnist"
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        tfds_base.VERSION: "OpenSTL's generator, per-example seeding."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
    FEATURE = "frames"

    def feature_spec(self):
        p = self.params
        return (p["in_frames"] + p["out_frames"], SIZE, SIZE, 1), np.uint8

    def _split_generators(self, dl_manager):
        del dl_manager
        p = self.params
        self.info.metadata.update(tfds_base.json_safe(_identity(p)))
        digits = load_digits(p)
        self.info.metadata["digit_counts"] = {
            "train": len(digits.train), "test": 0 if digits.test is None else len(digits.test)}
        gens = {"train": self._generate_examples(
            (sequence_of(p, "train", i, digits.train) for i in range(p["train_size"])),
            p["train_size"])}
        if p["test_file"]:
            test = np.load(p["test_file"], mmap_mode="r")  # (frames, sequences, 64, 64)
            n = test.shape[1]
            gens["test"] = self._generate_examples(
                (np.ascontiguousarray(test[:, i, :, :, None]) for i in range(n)), n)
        else:
            gens["test"] = self._generate_examples(
                (sequence_of(p, "test", i, digits.test) for i in range(p["test_size"])),
                p["test_size"])
        return gens


def builder(data_config) -> MovingMnist:
    s = spec(data_config)
    return MovingMnist.for_variant(
        data_config, tfds_base.config_name(f"seed{s['seed']}_{s['digits']}", _identity(s)), s)


def prepare(data_config) -> MovingMnist:
    b = builder(data_config)
    tfds_base.ensure_prepared(b, pathlib.Path(b.params["manual_dir"]))
    return b


# ----------------------------------------------------------------------------------------
# Sources


class OnlineSource(sources.Source):
    """Fresh training sequences every epoch, generated on access (no storage): index i ->
    `sequence_of(s, 'train', i)`, so indices below `epoch_size` give the stored train split's
    sequences and later epochs new ones."""

    def __init__(self, s: dict, digit_images: np.ndarray, epochs: int):
        self.name, self.split = NAME, "train"
        self.in_frames, self.out_frames = s["in_frames"], s["out_frames"]
        self.sub, self.div = np.zeros(1, np.float32), np.full(1, 255.0, np.float32)
        self.mean, self.std = np.zeros(1, np.float32), np.ones(1, np.float32)
        self._spec, self._epochs = s, int(epochs)
        self._digits = np.ascontiguousarray(digit_images)

    @property
    def epoch_size(self) -> int:
        return self._spec["train_size"]

    def __len__(self) -> int:
        return self.epoch_size * self._epochs

    def __getitem__(self, i) -> np.ndarray:
        frames = sequence_of(self._spec, "train", self._index(i), self._digits)
        return frames.astype(np.float32) / np.float32(255.0)


def get_source(data_config, split: str) -> sources.Source:
    base.check_split(NAME, split, ("train", "test"),
                     "OpenSTL validates Moving MNIST on 'test'.")
    if split == "train" and data_config.mmnist_online:
        s = spec(data_config)
        epochs = int(data_config.mmnist_online_epochs)
        if epochs < 1:
            raise ValueError(f"config.data.mmnist_online_epochs must be >= 1; got {epochs}.")
        return OnlineSource(s, load_digits(s).train, epochs)
    b = prepare(data_config)
    return sources.RecordSource(tfds_base.open_split(b, split), name=NAME, split=split,
                                in_frames=b.params["in_frames"],
                                out_frames=b.params["out_frames"], channels=1, sub=0.0, div=255.0)


def conventions(data_config) -> base.Conventions:
    """OpenSTL's Moving MNIST metrics: MSE and MAE summed over a frame's pixels, SSIM, PSNR."""
    del data_config
    return base.VIDEO
