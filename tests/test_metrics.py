"""Metrics against values computed with OpenSTL's code, scikit-image, and their own invariants."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tau_jax.metrics import MetricAccumulator, evaluate

# OpenSTL prints float32 results; float64 accumulation agrees to a few float32 ulps.
RTOL = 1e-6


def reference_pair():
    """The reference inputs, (B, T, C, H, W) = (2, 10, 1, 16, 16) made channels-last."""
    idx = np.arange(2 * 10 * 1 * 16 * 16, dtype=np.float64)
    pred = (0.5 + 0.5 * np.sin(0.37 * idx)).reshape(2, 10, 1, 16, 16).transpose(0, 1, 3, 4, 2)
    true = (0.5 + 0.5 * np.cos(0.11 * idx)).reshape(2, 10, 1, 16, 16).transpose(0, 1, 3, 4, 2)
    return (1.3 * pred - 0.15).astype(np.float32), true.astype(np.float32)


def random_pair(shape=(3, 4, 12, 10, 3), seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 1, shape).astype(np.float32)
    pred = (true + rng.normal(0, spread, shape)).astype(np.float32)  # partly outside [0, 1]
    return pred, true


def test_openstl_reference_values():
    p, t = reference_pair()
    r = evaluate(p, t)
    np.testing.assert_allclose(r["mse"], 86.07888793945312, rtol=RTOL)
    np.testing.assert_allclose(r["mae"], 122.2955551147461, rtol=RTOL)
    np.testing.assert_allclose(r["ssim"], 0.013202011585235596, rtol=RTOL)  # data_range 1: 0.00335
    np.testing.assert_allclose(r["psnr"], 5.4182634353637695, rtol=RTOL)
    w = evaluate(p, t, ("mse", "rmse"), spatial_norm=True)
    np.testing.assert_allclose(w["mse"], 0.33624565601348877, rtol=RTOL)
    np.testing.assert_allclose(w["rmse"], 0.5798669457435608, rtol=RTOL)


def test_ssim_and_psnr_match_scikit_image():
    pred, true = random_pair()
    # float64 copies: skimage now keeps float32 in float32; OpenSTL's (<= 0.19) used float64
    clipped, true64 = np.clip(pred, 0, 1).astype(np.float64), true.astype(np.float64)
    frames = [(clipped[n, k], true64[n, k])
              for n in range(pred.shape[0]) for k in range(pred.shape[1])]
    ssim = np.mean([structural_similarity(a, b, channel_axis=-1, data_range=2.0)
                    for a, b in frames])
    psnr = np.mean([peak_signal_noise_ratio(b, a, data_range=1.0) for a, b in frames])
    r = evaluate(pred, true, ("ssim", "psnr"))
    np.testing.assert_allclose(r["ssim"], ssim, rtol=1e-12)
    np.testing.assert_allclose(r["psnr"], psnr, rtol=1e-6)  # ours is float32 per frame, as OpenSTL


def test_error_metrics_definition_and_clip_only_for_ssim_psnr():
    pred, true = random_pair()
    d = pred.astype(np.float64) - true
    r = evaluate(pred, true, ("mse", "mae", "rmse"))
    np.testing.assert_allclose(r["mse"], (d ** 2).sum(axis=(2, 3, 4)).mean(), rtol=1e-12)
    np.testing.assert_allclose(r["mae"], np.abs(d).sum(axis=(2, 3, 4)).mean(), rtol=1e-12)
    np.testing.assert_allclose(r["rmse"], np.sqrt(r["mse"]), rtol=1e-12)
    # clip_range only changes the clipped metrics
    wide = evaluate(pred, true, clip_range=(-10, 10))
    narrow = evaluate(pred, true)
    assert wide["mse"] == narrow["mse"] and wide["mae"] == narrow["mae"]
    assert wide["psnr"] < narrow["psnr"]


def test_denormalisation_applies_to_both_arrays():
    pred, true = random_pair()
    mean, std = np.array([1.0, -2.0, 3.0]), np.array([2.0, 0.5, 4.0])
    r = evaluate(pred, true, ("mse", "mae"), mean=mean, std=std)
    direct = evaluate(pred * std + mean, true * std + mean, ("mse", "mae"))
    for k in r:
        np.testing.assert_allclose(r[k], direct[k], rtol=1e-6)


def test_identical_inputs():
    _, t = reference_pair()
    r = evaluate(t, t, ("mse", "mae", "rmse", "ssim", "psnr"), per_frame=True)
    assert r["mse"] == r["mae"] == r["rmse"] == 0.0
    np.testing.assert_allclose(r["ssim"], 1.0, rtol=1e-12)
    assert r["psnr"] == np.inf and np.all(r["psnr_per_frame"] == np.inf)


def test_accumulator_with_masked_padding_equals_one_call():
    pred, true = random_pair(shape=(7, 4, 12, 10, 2), seed=1)
    names = ("mse", "mae", "rmse", "ssim", "psnr")
    acc = MetricAccumulator(names)
    for start in (0, 3):
        acc.update(pred[start:start + 3], true[start:start + 3])
    pad = lambda a: np.concatenate([a[6:], np.full_like(a[:2], 7.0)])  # junk in the padding
    acc.update(pad(pred), pad(true), mask=np.array([True, False, False]))
    acc.update(pred[:0], true[:0])  # an empty batch changes nothing
    got = acc.result(per_frame=True)
    want = evaluate(pred, true, names, per_frame=True)
    assert acc.count == 7 and got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10)


def test_update_chunks_large_batches(monkeypatch):
    pred, true = random_pair(shape=(5, 3, 8, 8, 1), seed=2)
    want = evaluate(pred, true, per_frame=True)
    monkeypatch.setattr("tau_jax.metrics._CHUNK_ELEMENTS", 400)  # 2 samples per chunk
    got = evaluate(pred, true, per_frame=True)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12)


def test_per_frame_curves_average_to_scalars():
    pred, true = random_pair()
    r = evaluate(pred, true, ("mse", "mae", "rmse", "ssim", "psnr"), per_frame=True)
    for k in ("mse", "mae", "ssim", "psnr"):
        assert r[k + "_per_frame"].shape == (pred.shape[1],)
        np.testing.assert_allclose(r[k + "_per_frame"].mean(), r[k], rtol=1e-12)
    np.testing.assert_allclose(r["rmse_per_frame"] ** 2, r["mse_per_frame"], rtol=1e-12)
    d = pred.astype(np.float64) - true
    np.testing.assert_allclose(r["mse_per_frame"], (d ** 2).sum(axis=(2, 3, 4)).mean(axis=0),
                               rtol=1e-12)
    assert "mse_per_frame" not in evaluate(pred, true)


def test_channel_groups_weather_style():
    pred, true = random_pair(shape=(2, 3, 8, 6, 4), seed=3)
    names = ["t2m", "tcc"]
    r = evaluate(pred, true, ("mse", "rmse", "mae"), spatial_norm=True, channel_names=names,
                 per_frame=True)
    for i, name in enumerate(names):
        g = evaluate(pred[..., 2 * i:2 * i + 2], true[..., 2 * i:2 * i + 2], ("mse", "rmse", "mae"),
                     spatial_norm=True)
        d = pred[..., 2 * i:2 * i + 2].astype(np.float64) - true[..., 2 * i:2 * i + 2]
        np.testing.assert_allclose(g["mse"], (d ** 2).mean(), rtol=1e-12)  # global mean
        np.testing.assert_allclose(g["rmse"], np.sqrt((d ** 2).mean()), rtol=1e-12)
        for m in ("mse", "rmse", "mae"):
            np.testing.assert_allclose(r[f"{m}_{name}"], g[m], rtol=1e-12)
    for m in ("mse", "rmse", "mae"):
        np.testing.assert_allclose(r[m], (r[f"{m}_t2m"] + r[f"{m}_tcc"]) / 2, rtol=1e-12)
        np.testing.assert_allclose(r[m + "_per_frame"],
                                   (r[f"{m}_t2m_per_frame"] + r[f"{m}_tcc_per_frame"]) / 2,
                                   rtol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(metrics=("mse", "fvd")), "Unknown metric 'fvd'"),
    (dict(metrics=("lpips",)), "LPIPS is not available"),
    (dict(metrics=()), "metrics is empty"),
    (dict(mean=0.5), "mean and std must be given together"),
    (dict(clip_range=(1.0, 0.0)), "low < high"),
    (dict(channel_names=["a", "a"]), "distinct"),
])
def test_bad_options(kwargs, message):
    pred, true = random_pair()
    with pytest.raises(ValueError, match=message):
        evaluate(pred, true, **kwargs)


def test_bad_inputs():
    pred, true = random_pair()
    cases = [
        ((pred, true[:, :3]), {}, "shapes differ"),
        ((pred[0], true[0]), {}, r"\(N, T, H, W, C\)"),
        ((np.where(pred > 0.9, np.nan, pred), true), {}, "NaN"),
        ((pred, true), dict(channel_names=["a", "b"]), "equal groups"),
        ((pred, true), dict(mean=np.zeros(2), std=np.ones(2)), "does not broadcast"),
        ((pred[:, :, :6], true[:, :, :6]), {}, "at least 7x7"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            evaluate(*args, **kwargs)
    acc = MetricAccumulator()
    with pytest.raises(ValueError, match="No samples"):
        acc.result()
    with pytest.raises(ValueError, match="mask must be a bool array"):
        acc.update(pred, true, mask=np.ones(pred.shape[0], int))
    acc.update(pred, true)
    with pytest.raises(ValueError, match="differ from earlier batches"):
        acc.update(pred[:, :2], true[:, :2])


frames = st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(7, 9), st.integers(7, 9),
                   st.integers(1, 2), st.integers(0, 2 ** 32 - 1))


@settings(max_examples=25, deadline=None)
@given(frames)
def test_properties(spec):
    *shape, seed = spec
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 1, (2, *shape))
    xy, yx = evaluate(x, y, ("mse", "mae", "psnr")), evaluate(y, x, ("mse", "mae", "psnr"))
    assert xy["mse"] >= 0 and xy["mae"] >= 0
    for k in xy:  # both in [0, 1], so clipping is a no-op and the metrics are symmetric
        np.testing.assert_allclose(xy[k], yx[k], rtol=1e-12)
    assert xy["mse"] <= xy["mae"]  # |d| <= 1 per pixel
    same = evaluate(x, x, ("ssim",))
    np.testing.assert_allclose(same["ssim"], 1.0, rtol=1e-12)
    assert evaluate(x, y, ("ssim",))["ssim"] <= 1.0 + 1e-12
