"""Dataset builders and sources on tiny files written in the upstream formats (OpenSTL's TaxiBJ
npz, KTH JPEG folders, WeatherBench NetCDF, the Moving MNIST test file, MNIST IDX files,
image folders and videos)."""

import datetime
import gzip
import os
import pathlib
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
tfds.disable_progress_bar()

from tau_jax import data  # noqa: E402
from tau_jax.config import base_config  # noqa: E402
from tau_jax.data import base, digits, kth, moving_mnist, readers, weatherbench  # noqa: E402

ROOT = pathlib.Path(__file__).parents[1]


def cfg(tmp_path, name, **kw):
    c = base_config().data
    c.name = name
    c.data_dir = str(tmp_path / "tfds")
    c.manual_dir = str(tmp_path / "manual")
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def files_under(path):
    path = pathlib.Path(path)
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def items(source):
    return np.stack([source[i] for i in range(len(source))])


# ------------------------------------------------------------------------------------------
# Moving MNIST


def test_bounce_rule():
    # moving right from x = 0.75: 0.85, 0.95, then 1.05 is clamped to 1 and the velocity flips
    ys, xs = moving_mnist.bounce_positions(0.5, 0.75, 0.0, 6)
    np.testing.assert_allclose(xs, [0.85, 0.95, 1.0, 0.9, 0.8, 0.7], atol=1e-12)
    np.testing.assert_allclose(ys, 0.5)
    # moving left from 0.15: 0.05, then -0.05 -> 0 (flip), 0.1, 0.2
    ys, xs = moving_mnist.bounce_positions(0.5, 0.15, np.pi, 4)
    np.testing.assert_allclose(xs, [0.05, 0.0, 0.1, 0.2], atol=1e-12)
    # diagonal: both coordinates bounce independently, always within [0, 1]
    ys, xs = moving_mnist.bounce_positions(0.02, 0.98, -np.pi / 4, 40)
    assert ys.min() >= 0 and ys.max() <= 1 and xs.min() >= 0 and xs.max() <= 1
    assert ys[0] == 0.0 and xs[0] == 1.0  # first step already crosses both walls
    steps = np.hypot(np.diff(ys), np.diff(xs))
    free = (ys[1:] > 0) & (ys[1:] < 1) & (xs[1:] > 0) & (xs[1:] < 1) & \
           (ys[:-1] > 0) & (ys[:-1] < 1) & (xs[:-1] > 0) & (xs[:-1] < 1)
    np.testing.assert_allclose(steps[free], 0.1, atol=1e-12)
    # trajectory(): draws y, x, angle in that order, scales by 64 - 28 = 36 and truncates
    tops, lefts = moving_mnist.trajectory(np.random.default_rng(3), 20)
    y, x, a = np.random.default_rng(3).random(3)
    ys, xs = moving_mnist.bounce_positions(y, x, a * 2 * np.pi, 20)
    np.testing.assert_array_equal(tops, np.floor(36 * ys).astype(int))
    np.testing.assert_array_equal(lefts, np.floor(36 * xs).astype(int))
    assert tops.min() >= 0 and tops.max() <= 36


def test_pixelwise_max_composition():
    images = np.stack([np.full((28, 28), 100, np.uint8), np.full((28, 28), 200, np.uint8)])
    for seed in range(50):  # find a sequence where the two digits overlap
        seq = moving_mnist.generate_sequence(np.random.default_rng(seed), images, 20)
        replay = np.random.default_rng(seed)
        masks = []
        for _ in range(2):
            tops, lefts = moving_mnist.trajectory(replay, 20)
            value = images[replay.integers(2)][0, 0]
            m = np.zeros((20, 64, 64), bool)
            for t in range(20):
                m[t, tops[t]:tops[t] + 28, lefts[t]:lefts[t] + 28] = True
            masks.append((m, value))
        expected = np.maximum(masks[0][0] * masks[0][1], masks[1][0] * masks[1][1])
        np.testing.assert_array_equal(seq[..., 0], expected)
        if (masks[0][0] & masks[1][0]).any() and masks[0][1] != masks[1][1]:
            overlap = masks[0][0] & masks[1][0]
            assert (seq[..., 0][overlap] == 200).all()  # max, not a sum or an overwrite
            break
    else:
        pytest.fail("no overlapping pair of different digits in 50 seeds")


def test_moving_mnist_build_is_exact_and_reproducible(tmp_path):
    c = cfg(tmp_path, "moving_mnist", mmnist_train_size=6, mmnist_test_size=4, mmnist_seed=7,
            mmnist_digits="bundled")
    train, test = data.get_source(c, "train"), data.get_source(c, "test")
    assert (len(train), len(test)) == (6, 4)
    assert (train.in_frames, train.out_frames, train.name) == (10, 10, "moving_mnist")
    np.testing.assert_array_equal(train.mean, [0.0])
    np.testing.assert_array_equal(train.std, [1.0])
    x = items(train)
    assert x.shape == (6, 20, 64, 64, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and 0.9 < x.max() <= 1.0
    np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-4)  # uint8 / 255
    # item i is exactly sequence i of rng([seed, split, i]) from the (disjoint) digit sets
    d = digits.load("bundled", tmp_path, tmp_path, need_test=True)
    for split, source, images in (("train", train, d.train), ("test", test, d.test)):
        for i in (0, len(source) - 1):
            ref = moving_mnist.generate_sequence(moving_mnist.sequence_rng(7, split, i), images, 20)
            np.testing.assert_array_equal(source[i], ref.astype(np.float32) / 255)
    # a second build in another data dir is byte-identical
    c2 = cfg(tmp_path / "again", "moving_mnist", mmnist_train_size=6, mmnist_test_size=4,
             mmnist_seed=7, mmnist_digits="bundled")
    b1, b2 = data.prepare(c), data.prepare(c2)
    f1, f2 = files_under(b1.data_dir), files_under(b2.data_dir)
    assert [f.name for f in f1] == [f.name for f in f2] and len(f1) >= 4
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(f1, f2))
    # another seed gives other data
    c3 = cfg(tmp_path / "other", "moving_mnist", mmnist_train_size=6, mmnist_test_size=4,
             mmnist_seed=8, mmnist_digits="bundled")
    assert not np.array_equal(data.get_source(c3, "train")[0], x[0])
    with pytest.raises(ValueError, match="no 'val' split"):
        data.get_source(c, "val")


def test_digit_sets_are_disjoint(tmp_path):
    d = digits.load("bundled", tmp_path, tmp_path, need_test=True)
    assert d.train.shape == (4000, 28, 28) and d.test.shape == (1000, 28, 28)
    train = {a.tobytes() for a in d.train}
    assert not any(a.tobytes() in train for a in d.test)
    # with the standard test file no test digits are needed: all 5000 train
    assert digits.load("bundled", tmp_path, tmp_path, need_test=False).train.shape[0] == 5000


def write_idx(path, images):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(images), 28, 28) + images.tobytes())


def test_mnist_idx_files_and_standard_test_file(tmp_path):
    rng = np.random.default_rng(0)
    man = tmp_path / "manual" / "moving_mnist"  # OpenSTL's data/moving_mnist layout
    man.mkdir(parents=True)
    train_digits = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    write_idx(man / "train-images-idx3-ubyte.gz", train_digits)
    test_seq = rng.integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    np.save(man / "mnist_test_seq.npy", test_seq)
    c = cfg(tmp_path, "mmnist", mmnist_train_size=3)
    test = data.get_source(c, "test")
    assert len(test) == 3
    for i in range(3):  # frames x sequences x H x W -> sequence i, channels-last, / 255
        np.testing.assert_array_equal(test[i], test_seq[:, i, :, :, None] / np.float32(255))
    train = data.get_source(c, "train")  # digits from the IDX file ('auto' prefers it)
    ref = moving_mnist.generate_sequence(moving_mnist.sequence_rng(0, "train", 2), train_digits, 20)
    np.testing.assert_array_equal(train[2], ref / np.float32(255))
    # the file fixes 20 frames
    with pytest.raises(ValueError, match="mnist_test_seq.npy"):
        data.get_source(cfg(tmp_path, "mmnist", in_frames=5, out_frames=5), "test")
    # a wrong file is named in the error, before anything is written
    np.save(man / "mnist_test_seq.npy", test_seq[:, :, :32])
    c_bad = cfg(tmp_path / "bad", "mmnist", manual_dir=str(tmp_path / "manual"))
    with pytest.raises(ValueError, match=r"mnist_test_seq\.npy has shape"):
        data.get_source(c_bad, "test")
    assert files_under(tmp_path / "bad") == []
    (man / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 12))
    with pytest.raises(ValueError, match="bad.gz.*2051"):
        digits.read_idx_images(man / "bad.gz")


def test_online_source_fresh_every_epoch(tmp_path):
    c = cfg(tmp_path, "moving_mnist", mmnist_train_size=4, mmnist_test_size=2,
            mmnist_digits="bundled", mmnist_online=True, mmnist_online_epochs=3)
    online = data.get_source(c, "train")
    assert (len(online), online.epoch_size) == (12, 4)
    assert not (tmp_path / "tfds").exists()  # nothing stored for the online train split
    c.mmnist_online = False
    stored = data.get_source(c, "train")
    for i in range(4):  # epoch 0 = the stored train split
        np.testing.assert_array_equal(online[i], stored[i])
    # the same normalisation, which predict applies to raw 0..255 frames (online runs once
    # saved div 1 and fed predict 0..255 inputs for a model trained on [0, 1])
    for attr in ("sub", "div", "mean", "std"):
        np.testing.assert_array_equal(getattr(online, attr), getattr(stored, attr))
    assert float(online.div[0]) == 255.0
    assert not np.array_equal(online[4], online[0])  # epoch 1: new sequences
    again = pickle.loads(pickle.dumps(online))
    np.testing.assert_array_equal(again[9], online[9])
    with pytest.raises(IndexError):
        online[12]


# ------------------------------------------------------------------------------------------
# TaxiBJ


def write_taxibj(path, n_train=5, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {f"{a}_{s}": rng.uniform(-1, 1, (n, 4, 2, 32, 32))
              for s, n in (("train", n_train), ("test", n_test)) for a in "XY"}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def test_taxibj(tmp_path):
    arrays = write_taxibj(tmp_path / "manual" / "dataset.npz")
    c = cfg(tmp_path, "taxibj")
    train, test = data.get_source(c, "train"), data.get_source(c, "test")
    assert (len(train), len(test), train.in_frames, train.out_frames) == (5, 3, 4, 4)
    np.testing.assert_array_equal(train.mean, [0, 0])
    np.testing.assert_array_equal(train.std, [1, 1])
    for i in range(3):
        ref = np.concatenate([arrays["X_test"][i], arrays["Y_test"][i]]).transpose(0, 2, 3, 1)
        np.testing.assert_allclose(test[i], (ref + 1) / 2, atol=1e-6)
    x = items(train)
    assert x.shape == (5, 8, 32, 32, 2) and x.min() >= 0 and x.max() <= 1
    with pytest.raises(ValueError, match="no 'val' split"):
        data.get_source(c, "val")
    with pytest.raises(ValueError, match="in_frames=4"):
        data.get_source(cfg(tmp_path, "taxibj", in_frames=10), "train")


def test_taxibj_bad_input_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset\.npz.*OpenSTL"):
        data.get_source(cfg(tmp_path, "taxibj"), "train")
    path = tmp_path / "manual" / "dataset.npz"
    write_taxibj(path)
    arrays = dict(np.load(path))
    cases = {
        "shape": dict(arrays, X_train=arrays["X_train"][:, :, :, :16]),
        r"X_test has shape \(4, 2, 32, 32\)": dict(arrays, X_test=arrays["X_test"][0]),
        "NaN": dict(arrays, Y_train=np.where(arrays["Y_train"] > 0.9, np.nan, arrays["Y_train"])),
        "-1, 1": dict(arrays, X_train=arrays["X_train"] * 300),
        "lacks": {k: v for k, v in arrays.items() if k != "Y_test"},
    }
    for match, content in cases.items():
        np.savez(path, **content)
        with pytest.raises(ValueError, match=match):
            data.get_source(cfg(tmp_path, "taxibj"), "train")
        assert files_under(tmp_path / "tfds") == [], match
    # a directory left by a killed prepare is not taken for a dataset
    stale = tmp_path / "tfds" / "tau_taxibj" / "openstl" / "incomplete.ABC123_1.0.0"
    stale.mkdir(parents=True)
    (stale / "junk").write_bytes(b"x")
    np.savez(path, **arrays)
    assert len(data.get_source(cfg(tmp_path, "taxibj"), "train")) == 5


# ------------------------------------------------------------------------------------------
# KTH


def test_kth_clip_rule():
    def frames(*folders):
        f, n, a = [], [], []
        for name, action, numbers in folders:
            f += [name] * len(numbers)
            n += list(numbers)
            a += [action] * len(numbers)
        return f, n, a

    # boxing, 65 frames: from the end, non-overlapping clips of 30
    assert kth.clip_starts(*frames(("b", "boxing", range(1, 66))), 30) == [5, 35]
    # jogging / running: a clip every 3 frames
    assert kth.clip_starts(*frames(("j", "jogging", range(1, 36))), 30) == [2, 5]
    assert kth.clip_starts(*frames(("r", "running", range(1, 37))), 30) == [0, 3, 6]
    # never across folders, never across a gap in the frame numbers
    f = frames(("a", "walking", range(1, 21)), ("b", "walking", range(1, 21)))
    assert kth.clip_starts(*f, 30) == []
    gap = frames(("g", "boxing", [*range(1, 21), *range(22, 62)]))  # frame 21 is missing
    assert kth.clip_starts(*gap, 30) == [30]
    # both folders, in frame-list positions
    two = frames(("b", "boxing", range(1, 31)), ("r", "running", range(1, 34)))
    assert kth.clip_starts(*two, 30) == [0, 30, 33]


def write_kth(root, layout):
    """layout: {(action, person): n_frames}; frame k has red = 4k + person, green = 255 - that."""
    from PIL import Image
    for (action, person), n in layout.items():
        d = root / action / f"person{person:02d}_{action}_d1_uncomp"
        d.mkdir(parents=True)
        for k in range(1, n + 1):
            v = 4 * k + person
            rgb = np.zeros((30, 40, 3), np.uint8)
            rgb[..., 0], rgb[..., 1] = v, 255 - v
            Image.fromarray(rgb).save(d / f"image_{k:04d}.jpg", quality=100)


def test_kth_person_split_and_frames(tmp_path):
    write_kth(tmp_path / "manual" / "kth", {
        ("boxing", 1): 31, ("walking", 2): 50, ("running", 16): 34,       # train persons
        ("handwaving", 17): 32, ("walking", 18): 50, ("jogging", 25): 30})  # test persons
    c = cfg(tmp_path, "kth")
    train, test = data.get_source(c, "train"), data.get_source(c, "test")
    assert (train.in_frames, train.out_frames, train.name) == (10, 20, "kth20")
    # (first frame number, person) of every clip, by the rule scanning from the last frame:
    # boxing p01 31 frames -> 2; walking p02 50 -> 21; running p16 34 -> 5 and 2 (stride 3)
    first = {"train": [(2, 1), (21, 2), (2, 16), (5, 16)],
             "test": [(3, 17), (21, 18), (1, 25)]}

    def check(source, clips, length):
        assert len(source) == len(clips)
        for i, (k0, person) in enumerate(clips):
            x = source[i]
            assert x.shape == (length, 128, 128, 1) and x.dtype == np.float32
            expected = (4 * (k0 + np.arange(length)) + person) / 255.0  # red = first channel
            np.testing.assert_allclose(x[:, 64, 64, 0], expected, atol=3 / 255)
            np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 0, atol=2 / 255)

    check(train, first["train"], 30)
    check(test, first["test"], 30)
    with pytest.raises(ValueError, match="no 'val' split"):
        data.get_source(c, "val")
    # 10 -> 40: only the two 50-frame walking folders hold a clip
    train40 = data.get_source(cfg(tmp_path, "kth40"), "train")
    assert (train40.out_frames, train40.name) == (40, "kth40")
    check(train40, [(1, 2)], 50)
    check(data.get_source(cfg(tmp_path, "kth", out_frames=40), "test"), [(1, 18)], 50)
    with pytest.raises(ValueError, match="out_frames=30"):
        data.get_source(cfg(tmp_path, "kth", out_frames=30), "train")


def test_kth_too_short_for_variant(tmp_path):
    write_kth(tmp_path / "manual", {("boxing", 1): 31, ("boxing", 17): 31})
    with pytest.raises(ValueError, match="50 consecutive frames"):
        data.get_source(cfg(tmp_path, "kth40"), "train")
    assert files_under(tmp_path / "tfds") == []


def test_kth_failure_mid_build_leaves_nothing(tmp_path):
    root = tmp_path / "manual"
    write_kth(root, {("walking", 3): 30, ("walking", 20): 30})
    bad = root / "walking" / "person20_walking_d1_uncomp" / "image_0007.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="image_0007.jpg"):
        data.get_source(cfg(tmp_path, "kth"), "train")
    assert files_under(tmp_path / "tfds") == []
    assert not any((tmp_path / "tfds").rglob("*")) if (tmp_path / "tfds").exists() else True
    with pytest.raises(FileNotFoundError, match="(?s)action folders.*kth_action.zip"):
        data.get_source(cfg(tmp_path / "empty", "kth"), "train")


def test_resize_bilinear_matches_opencv_convention():
    row = np.array([[[0], [255]]], np.uint8)  # 1 x 2 -> 1 x 4, half-pixel centres, edge clamp
    np.testing.assert_array_equal(base.resize_bilinear(row, (1, 4))[0, :, 0], [0, 64, 191, 255])
    x = np.random.default_rng(0).random((6, 8, 2)).astype(np.float32)
    down = base.resize_bilinear(x, (3, 4))  # a factor 2 samples between pixel pairs
    np.testing.assert_allclose(down, x.reshape(3, 2, 4, 2, 2).mean(axis=(1, 3)), atol=1e-6)
    skimage = pytest.importorskip("skimage.transform")
    up = skimage.resize(x, (10, 13, 2), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(base.resize_bilinear(x, (10, 13)), up, atol=1e-5)


# ------------------------------------------------------------------------------------------
# WeatherBench


def write_nc(man, folder, var, year, n, levels=None, fill=None):
    import netCDF4
    d = man / folder
    d.mkdir(parents=True, exist_ok=True)
    ds = netCDF4.Dataset(d / f"{folder}_{year}_5.625deg.nc", "w", format="NETCDF4")
    ds.createDimension("time", None)
    ds.createDimension("lat", 32)
    ds.createDimension("lon", 64)
    hours = (datetime.datetime(year, 1, 1) - datetime.datetime(1979, 1, 1)).total_seconds() / 3600
    t = ds.createVariable("time", "i8", ("time",))
    t.units, t.calendar = "hours since 1979-01-01", "proleptic_gregorian"
    t[:] = int(hours) + np.arange(n)
    ds.createVariable("lat", "f8", ("lat",))[:] = np.linspace(-87.1875, 87.1875, 32)
    ds.createVariable("lon", "f8", ("lon",))[:] = np.arange(64) * 5.625
    rng = np.random.default_rng(year)
    if levels is None:
        values = 250 + 10 * rng.random((n, 32, 64)) + (year - 2010)
        ds.createVariable(var, "f4", ("time", "lat", "lon"))[:] = values
    else:
        ds.createDimension("level", len(levels))
        ds.createVariable("level", "i4", ("level",))[:] = levels
        values = rng.random((n, len(levels), 32, 64)) + 100 * np.arange(len(levels))[:, None, None]
        ds.createVariable(var, "f4", ("time", "level", "lat", "lon"))[:] = values
    if fill is not None:
        ds.variables[var][fill] = np.nan
    ds.close()
    return values.astype(np.float32)


def test_weatherbench(tmp_path):
    man = tmp_path / "manual" / "weather_5_625deg"
    raw = {y: (write_nc(man, "2m_temperature", "t2m", y, 20),
               write_nc(man, "temperature", "t", y, 20, levels=[500, 850]))
           for y in (2010, 2011, 2012, 2013)}
    years = dict(weather_train_years=(2010, 2011), weather_val_years=(2012, 2012),
                 weather_test_years=(2013, 2013), in_frames=3, out_frames=2)
    c = cfg(tmp_path, "weatherbench", weather_variables=("t2m", "t@850"), **years)
    train, val, test = (data.get_source(c, s) for s in ("train", "val", "test"))
    # OpenSTL: drop the last time stamp, windows start at 0 .. n - L - 1
    assert (len(train), len(val), len(test)) == (39 - 5, 19 - 5, 19 - 5)
    series = np.concatenate([np.stack([raw[y][0], raw[y][1][:, 1]], -1) for y in (2010, 2011)])[:-1]
    np.testing.assert_allclose(train.mean, series.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(train.std, series.std((0, 1, 2)), rtol=1e-4)
    for i in (0, 17, len(train) - 1):  # windows cross the year boundary, z-scored with train stats
        np.testing.assert_allclose(train[i] * train.std + train.mean, series[i:i + 5], rtol=1e-5)
    test_series = np.stack([raw[2013][0], raw[2013][1][:, 1]], -1)
    np.testing.assert_allclose(test[3] * test.std + test.mean, test_series[3:8], rtol=1e-5)
    np.testing.assert_array_equal(test.mean, train.mean)
    assert train[0].shape == (5, 32, 64, 2)
    # OpenSTL's quirk: val/test z-scored with their own statistics, de-normalised with train's
    q = data.get_source(cfg(tmp_path, "weatherbench", weather_variables=("t2m", "t@850"),
                            weather_openstl_norm=True, **years), "test")
    own = test_series[:-1].astype(np.float64)
    np.testing.assert_allclose(q[3], (test_series[3:8] - own.mean((0, 1, 2))) / own.std((0, 1, 2)),
                               atol=2e-4)
    np.testing.assert_array_equal(q.mean, train.mean)
    # bare pressure-level name: the last level in the file; step keeps every 2nd hour
    s = data.get_source(cfg(tmp_path, "weather", weather_variables=("t",), weather_step=2,
                            **years), "train")
    series_t = np.concatenate([raw[y][1][:, -1, :, :, None] for y in (2010, 2011)])[:-1][::2]
    assert len(s) == len(series_t) - 5
    np.testing.assert_allclose(s[1] * s.std + s.mean, series_t[1:6], rtol=1e-5)


def test_weatherbench_bad_input(tmp_path):
    man = tmp_path / "manual"
    years = dict(weather_train_years=(2010, 2010), weather_val_years=(2011, 2011),
                 weather_test_years=(2012, 2012), in_frames=3, out_frames=2)
    for y in (2010, 2012):
        write_nc(man, "2m_temperature", "t2m", y, 12)
    with pytest.raises(FileNotFoundError, match=r"val year\(s\) \[2011\].*2m_temperature_2011"):
        data.get_source(cfg(tmp_path, "weatherbench", **years), "train")
    write_nc(man, "2m_temperature", "t2m", 2011, 12, fill=(5, 3, 3))
    with pytest.raises(ValueError, match=r"2m_temperature_2011_5.625deg.nc.*NaN"):
        data.get_source(cfg(tmp_path, "weatherbench", **years), "train")
    assert files_under(tmp_path / "tfds") == []
    with pytest.raises(FileNotFoundError, match="total_cloud_cover"):
        data.get_source(cfg(tmp_path, "weatherbench", weather_variables=("tcc",), **years), "test")
    with pytest.raises(ValueError, match="unknown variable 'sst'"):
        data.get_source(cfg(tmp_path, "weatherbench", weather_variables=("sst",)), "test")
    (man / "2m_temperature" / "2m_temperature_2011_5.625deg.nc").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="Cannot read NetCDF file .*2011"):
        data.get_source(cfg(tmp_path, "weatherbench", **years), "train")


# ------------------------------------------------------------------------------------------
# Custom data


def test_custom_array_layouts_windows_and_stats(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, (10, 9, 3, 16, 12)).astype(np.float32)  # N, T, C, H, W
    np.save(tmp_path / "seq.npy", x)
    c = cfg(tmp_path, "custom", custom_path=str(tmp_path / "seq.npy"), in_frames=3,
            out_frames=2, custom_stride=2, custom_test_fraction=0.2, custom_val_fraction=0.1)
    train, val, test = (data.get_source(c, s) for s in ("train", "val", "test"))
    xl = x.transpose(0, 1, 3, 4, 2)  # channels-last
    # sequences 0-6 train, 7 val, 8-9 test; windows start at 0, 2, 4 in each
    assert (len(train), len(val), len(test)) == (21, 3, 6)
    frames = xl[:7].reshape(-1, 16, 12, 3)
    np.testing.assert_allclose(train.mean, frames.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(train.std, frames.std((0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(train[4] * train.std + train.mean, xl[1, 2:7], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(test[5] * test.std + test.mean, xl[9, 4:9], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(items(train).mean((0, 1, 2, 3)), 0, atol=0.1)
    # minmax: train frames map into [0, 1], mean/std undo it
    mm = data.get_source(cfg(tmp_path, "custom", custom_path=str(tmp_path / "seq.npy"),
                             in_frames=3, out_frames=2, custom_normalize="minmax",
                             custom_test_fraction=0.2), "train")
    v = items(mm)
    assert v.min() >= 0 and v.max() <= 1 and v.max() > 0.99
    # one long sequence: cut in time, 80 % train / 20 % test
    np.save(tmp_path / "long.npy", xl[:1].repeat(5, axis=1))  # (1, 45, 16, 12, 3) NTHWC
    c1 = cfg(tmp_path, "custom", custom_path=str(tmp_path / "long.npy"), in_frames=3,
             out_frames=2, custom_test_fraction=0.2)
    assert (len(data.get_source(c1, "train")), len(data.get_source(c1, "test"))) == (32, 5)
    with pytest.raises(ValueError, match="no 'val' split"):
        data.get_source(c1, "val")


def test_layout_detection_and_variable_names():
    assert readers.detect_layout((2, 9, 3, 16, 12), "auto", "x") == "NTCHW"
    assert readers.detect_layout((2, 9, 16, 12, 3), "auto", "x") == "NTHWC"
    assert readers.detect_layout((2, 9, 8, 8, 8), "NTCHW", "x") == "NTCHW"
    labels = [c.label for c in weatherbench.parse_variables(("uv10", "t@850", "r"))]
    assert labels == ["u10", "v10", "t@850", "r"]
    with pytest.raises(ValueError, match="single-level"):
        weatherbench.parse_variables(("t2m@850",))


def test_custom_bad_arrays(tmp_path):
    def err(array, match, **kw):
        path = tmp_path / "bad.npy"
        np.save(path, array)
        c = cfg(tmp_path, "custom", custom_path=str(path), in_frames=3, out_frames=2, **kw)
        with pytest.raises(ValueError, match=match):
            data.get_source(c, "train")
        assert files_under(tmp_path / "tfds") == []

    err(np.zeros((4, 8, 8, 8), np.uint8), r"bad\.npy.*rank 4")
    err(np.zeros((4, 8, 8, 8, 8), np.uint8), "custom_layout")  # no axis is the smaller one
    err(np.zeros((4, 4, 8, 8, 1), np.uint8), r"bad\.npy\[0\] has 4 frames, fewer than T \+ T' = 5")
    nan = np.zeros((4, 8, 8, 8, 1), np.float32)
    nan[2, 3, 1, 1] = np.inf
    err(nan, r"bad\.npy \(sequence 2\).*NaN/Inf")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.get_source(cfg(tmp_path, "custom", custom_path=str(tmp_path / "no.npy"),
                            in_frames=1, out_frames=1), "train")
    with pytest.raises(ValueError, match="in_frames"):
        data.get_source(cfg(tmp_path, "custom", custom_path=str(tmp_path / "bad.npy")), "train")


def write_png_sequences(root, n_seq, n_frames, size=(12, 16), mode="RGB"):
    from PIL import Image
    out = []
    for s in range(n_seq):
        d = root / f"seq_{s}"
        d.mkdir(parents=True)
        frames = []
        for k in range(n_frames):
            rng = np.random.default_rng([s, k])
            a = rng.integers(0, 256, size + ((3,) if mode == "RGB" else ()), dtype=np.uint8)
            Image.fromarray(a).save(d / f"frame_{k}.png")  # frame_10 after frame_9
            frames.append(a if mode == "RGB" else a[..., None])
        out.append(np.stack(frames))
    return out


def test_custom_image_folders(tmp_path):
    seqs = write_png_sequences(tmp_path / "imgs", 5, 12)
    c = cfg(tmp_path, "custom", custom_path=str(tmp_path / "imgs"), in_frames=4, out_frames=4,
            custom_stride=4, custom_test_fraction=0.2)
    train, test = data.get_source(c, "train"), data.get_source(c, "test")
    assert (len(train), len(test)) == (8, 2)  # windows at 0 and 4 of each 12-frame sequence
    np.testing.assert_array_equal(train.mean, [0, 0, 0])
    np.testing.assert_array_equal(train.std, [1, 1, 1])
    np.testing.assert_array_equal(train[3], seqs[1][4:12] / np.float32(255))  # natural order
    np.testing.assert_array_equal(test[1], seqs[4][4:12] / np.float32(255))
    # grayscale + resize
    g = data.get_source(cfg(tmp_path, "custom", custom_path=str(tmp_path / "imgs"), in_frames=4,
                            out_frames=4, custom_grayscale=True, custom_resize=(24, 32)), "train")
    assert g[0].shape == (8, 24, 32, 1)
    luma = base.to_luma(seqs[0][:8])
    np.testing.assert_allclose(g[0], base.resize_bilinear(luma, (24, 32)) / 255.0, atol=1e-6)


def test_custom_bad_folders(tmp_path):
    from PIL import Image

    def err(path, match, exc=ValueError):
        c = cfg(tmp_path, "custom", custom_path=str(path), in_frames=2, out_frames=2)
        with pytest.raises(exc, match=match):
            data.get_source(c, "train")
        assert files_under(tmp_path / "tfds") == []

    (tmp_path / "empty").mkdir()
    err(tmp_path / "empty", r"empty.* is empty")
    write_png_sequences(tmp_path / "mixed", 2, 5)
    odd = tmp_path / "mixed" / "seq_1" / "frame_2.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(odd)
    err(tmp_path / "mixed", r"seq_1 have mixed sizes")
    write_png_sequences(tmp_path / "short", 2, 5)
    for f in list((tmp_path / "short" / "seq_0").iterdir())[:2]:
        f.unlink()
    err(tmp_path / "short", r"seq_0 has 3 frames, fewer than T \+ T' = 4")
    (tmp_path / "hollow" / "seq_0").mkdir(parents=True)
    err(tmp_path / "hollow", r"seq_0 has no image files")


def test_custom_videos_and_explicit_splits(tmp_path):
    import imageio.v2 as iio
    vids = tmp_path / "split" / "train"
    vids.mkdir(parents=True)
    rng = np.random.default_rng(1)
    clips = [rng.integers(0, 256, (9, 16, 24, 3), dtype=np.uint8) for _ in range(2)]
    for k, clip in enumerate(clips):  # lossless FFV1 in AVI: frames come back exactly
        iio.mimwrite(vids / f"clip{k}.avi", clip, fps=10, codec="ffv1", macro_block_size=1,
                     pixelformat="bgr0")
    smooth = np.broadcast_to(np.linspace(0, 255, 24, dtype=np.uint8)[None, None, :, None],
                             (9, 16, 24, 3))
    iio.mimwrite(tmp_path / "split" / "test.mp4", smooth, fps=10, macro_block_size=1)
    (tmp_path / "split" / "test").mkdir()
    (tmp_path / "split" / "test.mp4").rename(tmp_path / "split" / "test" / "a.mp4")
    c = cfg(tmp_path, "custom", custom_path=str(tmp_path / "split"), in_frames=3, out_frames=3,
            custom_stride=3)
    train, test = data.get_source(c, "train"), data.get_source(c, "test")
    assert (len(train), len(test)) == (4, 2)
    np.testing.assert_array_equal(train[3], clips[1][3:9] / np.float32(255))
    assert test[0].shape == (6, 16, 24, 3)
    np.testing.assert_allclose(test[1], smooth[3:9] / 255.0, atol=12 / 255)  # lossy H.264
    with pytest.raises(ValueError, match=r"no 'val' split.*val/"):
        data.get_source(c, "val")
    (vids / "broken.mp4").write_bytes(b"\x00not a video")
    with pytest.raises(ValueError, match=r"Cannot read video .*broken\.mp4"):
        data.get_source(cfg(tmp_path / "b", "custom", custom_path=str(tmp_path / "split"),
                            in_frames=3, out_frames=3), "train")
    assert files_under(tmp_path / "b" / "tfds") == []


# ------------------------------------------------------------------------------------------
# Contract: pickling, grain, CLI


def test_sources_pickle_and_feed_grain(tmp_path):
    grain = pytest.importorskip("grain")
    write_taxibj(tmp_path / "manual" / "taxibj" / "dataset.npz", n_train=6)
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((3, 8, 8, 8, 1)).astype(np.float32))
    sources = [data.get_source(cfg(tmp_path, "taxibj"), "train"),
               data.get_source(cfg(tmp_path, "custom", custom_path=str(tmp_path / "a.npy"),
                                   in_frames=2, out_frames=2, custom_test_fraction=0.0), "train")]
    for s in sources:
        again = pickle.loads(pickle.dumps(s))
        assert len(again) == len(s) and again.in_frames == s.in_frames
        np.testing.assert_array_equal(again[len(s) - 1], s[len(s) - 1])
        batches = list(grain.MapDataset.source(s).batch(2, drop_remainder=True))
        assert batches[0].shape == (2,) + s[0].shape and batches[0].dtype == np.float32
        np.testing.assert_array_equal(batches[-1][1], s[2 * len(batches) - 1])


def run_cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "tau_jax.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env=env)


def test_cli_data_prepare_and_show(tmp_path):
    write_taxibj(tmp_path / "manual" / "dataset.npz")
    r = run_cli("data", "prepare", "taxibj", f"--data_dir={tmp_path / 'tfds'}",
                f"--manual_dir={tmp_path / 'manual'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "prepared" in r.stdout and "'train': 5" in r.stdout
    out = tmp_path / "grid.png"
    r = run_cli("data", "show", "taxibj", f"--data_dir={tmp_path / 'tfds'}", f"--out={out}",
                "--num=2", "--config.data.manual_dir=/nonexistent")  # prepared: no files needed
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image
    image = np.asarray(Image.open(out))
    # 2 sequences x 2 channels rows of 64-px frames (32 x 2), 8 columns
    assert image.shape[0] == 4 * 64 + 3 * 2 and image.shape[1] > 8 * 64
    r = run_cli("data", "prepare", "kth", f"--data_dir={tmp_path / 'tfds'}",
                f"--manual_dir={tmp_path / 'nothing'}")
    assert r.returncode == 2 and "kth_action.zip" in r.stderr  # usage: files missing
    assert run_cli("data", "fly").returncode == 2


def test_prepared_tfds_mnist_is_a_digit_source(tmp_path, monkeypatch):
    """A tfds 'mnist' prepared as array_record in data_dir is used (and read without TF)."""
    import io

    from PIL import Image
    from tensorflow_datasets.image_classification import mnist

    def png(self, array):  # tfds encodes PNGs with TensorFlow; build the fake with PIL instead
        buf = io.BytesIO()
        Image.fromarray(np.asarray(array)[..., 0]).save(buf, format="PNG")
        return buf.getvalue()

    monkeypatch.setattr(tfds.features.Image, "encode_example", png)

    class FakeMnist(mnist.MNIST, skip_registration=True):
        name = "mnist"

        def _split_generators(self, dl_manager):
            return {s: self._fake(n, k) for s, n, k in (("train", 6, 0), ("test", 4, 1))}

        def _fake(self, n, k):
            for i in range(n):
                yield i, {"image": np.full((28, 28, 1), 10 * i + k, np.uint8), "label": i}

    FakeMnist(data_dir=str(tmp_path / "tfds"), file_format="array_record").download_and_prepare(
        file_format="array_record")
    c = cfg(tmp_path, "moving_mnist", mmnist_train_size=2, mmnist_test_size=2)
    assert moving_mnist.spec(c)["digits"] == "tfds"  # 'auto' prefers it to the bundled digits
    d = digits.load("tfds", tmp_path, tmp_path / "tfds", need_test=True)
    assert sorted(d.train[:, 0, 0]) == [0, 10, 20, 30, 40, 50]  # MNIST's own train / test
    assert sorted(d.test[:, 0, 0]) == [1, 11, 21, 31]
    test = data.get_source(c, "test")
    assert set(np.unique(test[0] * 255).round().astype(int)) <= {0, 1, 11, 21, 31}


def test_order_kept_when_tfds_spills_to_disk(tmp_path, monkeypatch):
    """Past tfds' in-memory buffer (1 GB; here 20 kB) examples go through its on-disk buckets:
    record i must still be example i, and the keys spread over many buckets."""
    from tensorflow_datasets.core import shuffle

    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 20_000)
    used = set()
    bucket_number = shuffle.get_bucket_number
    monkeypatch.setattr(shuffle, "get_bucket_number",
                        lambda **kw: used.add(bucket_number(**kw)) or bucket_number(**kw))
    c = cfg(tmp_path, "moving_mnist", mmnist_train_size=40, mmnist_test_size=2,
            mmnist_digits="bundled", mmnist_seed=3)
    train = data.get_source(c, "train")
    assert len(used) > 20
    d = digits.load("bundled", tmp_path, tmp_path, need_test=True)
    for i in (0, 13, 39):
        ref = moving_mnist.generate_sequence(moving_mnist.sequence_rng(3, "train", i), d.train, 20)
        np.testing.assert_array_equal(train[i], ref / np.float32(255))
