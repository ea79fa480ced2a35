"""Moving MNIST, generated as OpenSTL generates it (reference spec 5.1).

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

import numpy as np

from tau_jax.data import base, digits as digits_lib

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
  learning group (also fetched by OpenSTL's tools/prepare_data/download_mmnist.sh); when it is
  present it is the test split.
* `{digits_lib.IDX_TRAIN}` (and `{digits_lib.IDX_TEST}`): MNIST's image files from Yann
  LeCun's MNIST page; when present they are the digits (all 60,000 training digits, as
  OpenSTL uses). Otherwise a prepared tfds 'mnist' or the 5,000 MNIST digits bundled with tau-jax are used.
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
    kind = digits_lib.resolve(str(data_config.get("mmnist_digits", "auto")), manual, data_dir)
    num_digits = int(data_config.get("mmnist_num_digits", 2))
    if num_digits < 1:
        raise ValueError(f"config.data.mmnist_num_digits must be >= 1; got {num_digits}.")
    train_size = int(data_config.get("mmnist_train_size", 10000))
    test_size = int(data_config.get("mmnist_test_size", 10000))
    if train_size < 1 or (test_size < 1 and not use_file):
        raise ValueError("config.data.mmnist_train_size and mmnist_test_size must be >= 1.")
    return {
        "in_frames": t_in, "out_frames": t_out, "seed": int(data_config.get("mmnist_seed", 0)),
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


def builder_class():
    global _Builder
    if _Builder is not None:
        return _Builder
    import tensorflow_datasets as tfds

    class MovingMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Moving MNIST sequences (T+T', 64, 64, 1) uint8, generated as OpenSTL does."""

        name = "tau_moving_mnist"
        VERSION = tfds.core.Version(base.VERSION)
        RELEASE_NOTES = {base.VERSION: "OpenSTL's generator, per-example seeding."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

        def _info(self):
            p = self.builder_config.params
            n = p["in_frames"] + p["out_frames"]
            return tfds.core.DatasetInfo(
                builder=self,
                description=__doc__,
                features=tfds.features.FeaturesDict(
                    {"frames": base.frames_feature((n, SIZE, SIZE, 1), np.uint8)}),
                disable_shuffling=True,
                metadata=tfds.core.MetadataDict(),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            p = self.builder_config.params
            self.info.metadata.update(base.json_safe(_identity(p)))
            digits = load_digits(p)
            self.info.metadata["digit_counts"] = {
                "train": len(digits.train), "test": 0 if digits.test is None else len(digits.test)}
            gens = {"train": self._generate_examples(split="train", digits=digits.train)}
            if p["test_file"]:
                gens["test"] = self._file_examples(pathlib.Path(p["test_file"]))
            else:
                gens["test"] = self._generate_examples(split="test", digits=digits.test)
            return gens

        def _generate_examples(self, split, digits):
            p = self.builder_config.params
            n = p["in_frames"] + p["out_frames"]
            size = p["train_size"] if split == "train" else p["test_size"]
            for i in range(size):
                rng = sequence_rng(p["seed"], split, i)
                frames = generate_sequence(rng, digits, n, p["num_digits"])
                yield base.ordered_key(i, size), {"frames": frames}

        def _file_examples(self, path):
            arr = np.load(path, mmap_mode="r")
            for i in range(arr.shape[1]):
                frames = np.ascontiguousarray(arr[:, i, :, :, None])
                yield base.ordered_key(i, arr.shape[1]), {"frames": frames}

    _Builder = MovingMnist
    return _Builder


_Builder = None


def builder(data_config, s: dict | None = None):
    s = spec(data_config) if s is None else s
    cls = builder_class()
    cfg = base.params_config_class()(
        name=base.config_name(f"seed{s['seed']}_{s['digits']}", _identity(s)),
        version=base.VERSION, description="Moving MNIST variant", params=s)
    return cls(data_dir=s["data_dir"], config=cfg, file_format="array_record")


# ----------------------------------------------------------------------------------------
# Sources


class OnlineSource(base.Source):
    """Fresh training sequences every epoch, generated on access (no storage): index i ->
    `generate_sequence(default_rng([seed, 0, i]))`, so indices below `epoch_size` give the
    stored train split's sequences and later epochs new ones."""

    def __init__(self, s: dict, digit_images: np.ndarray, epochs: int):
        self.name, self.split = NAME, "train"
        self.in_frames, self.out_frames = s["in_frames"], s["out_frames"]
        self.mean, self.std = np.zeros(1, np.float32), np.ones(1, np.float32)
        self._seed, self._num_digits = s["seed"], s["num_digits"]
        self._epoch_size, self._epochs = s["train_size"], int(epochs)
        self._digits = np.ascontiguousarray(digit_images)

    @property
    def epoch_size(self) -> int:
        return self._epoch_size

    def __len__(self) -> int:
        return self._epoch_size * self._epochs

    def __getitem__(self, i) -> np.ndarray:
        i = self._index(i)
        rng = sequence_rng(self._seed, "train", i)
        frames = generate_sequence(rng, self._digits, self.in_frames + self.out_frames,
                                   self._num_digits)
        return frames.astype(np.float32) / np.float32(255.0)


def get_source(data_config, split: str) -> base.Source:
    base.check_split(NAME, split, ("train", "test"),
                     "OpenSTL validates Moving MNIST on 'test'.")
    s = spec(data_config)
    if split == "train" and bool(data_config.get("mmnist_online", False)):
        epochs = int(data_config.get("mmnist_online_epochs", 10000))
        if epochs < 1:
            raise ValueError(f"config.data.mmnist_online_epochs must be >= 1; got {epochs}.")
        return OnlineSource(s, load_digits(s).train, epochs)
    b = builder(data_config, s)
    base.ensure_prepared(b, pathlib.Path(s["manual_dir"]))
    return base.RecordSource(base.open_split(b, split), name=NAME, split=split,
                             in_frames=s["in_frames"], out_frames=s["out_frames"], channels=1,
                             sub=0.0, div=255.0)


def prepare(data_config):
    s = spec(data_config)
    b = builder(data_config, s)
    base.ensure_prepared(b, pathlib.Path(s["manual_dir"]))
    return b
