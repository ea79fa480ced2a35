"""MMVP: OpenSTL parity (the public bundle and held-out ones made with OpenSTL's own code in
float64 by third_party/make_mmvp_bundles.py: C = 2 with its output scramble, non-square frames,
T != T', T' = 1, downsample_setting '4,2'), PyTorch's interpolations, parameter counts of
OpenSTL's configs, config errors, and a tiny run trained, evaluated, restored, predicted beyond
T' and exported."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA, load_bundle
from tau_jax import config as config_lib
from tau_jax import models, predict, summary, train
from tau_jax.config import load_config_file
from tau_jax.convert import from_openstl
from tau_jax.models import mmvp
from tau_jax.models.mmvp import ops
from tau_jax.train import loop

BUNDLES = ["mmvp", "mmvp_c2_rect_t3_to_5", "mmvp_ds4_2_t5_to_1"]
FIELDS = ("hid_S", "hid_T", "rrdb_encoder_num", "rrdb_decoder_num", "rrdb_enhance_num",
          "downsample_setting", "shuffle_setting", "use_direct_predictor")
# OpenSTL's MMVP_Model built from configs/<dataset>/MMVP.py (c74deb5); no taxibj / weather config
OPENSTL_COUNTS = {"mmnist/mmvp.py": 14_828_581, "kth/mmvp.py": 4_544_725}


def bundle_config(meta, dtype="float64"):
    config = config_lib.base_config("mmvp")
    t, c, h, w = meta["in_shape"]
    config.model.update(in_shape=(t, h, w, c), out_frames=meta["aft_seq_length"], dtype=dtype,
                        param_dtype=dtype, **{f: meta[f] for f in FIELDS})
    return config


def nhwc(x):
    return np.transpose(x, (0, 1, 3, 4, 2))


def rel(got, ref):
    return float(np.max(np.abs(np.asarray(got) - ref)) / np.max(np.abs(ref)))


def n_params(cfg) -> int:
    return models.count_params(jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))["params"])


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_reproduces_openstl_float64(bundle, x64):
    """The training forward on cat(x, y) with batch statistics, its loss, and the test path, to
    1e-6 relative (measured <= 2e-14)."""
    meta, arrays, state_dict = load_bundle(f"zoo_rnn/{bundle}")
    config = bundle_config(meta)
    assert [list(s) for s in mmvp.mat_sizes(config.model.in_shape, mmvp.downsample_factors(
        config.model))] == meta["derived_mat_size"]
    variables = from_openstl(config.model, state_dict)
    assert models.count_params(variables["params"]) == meta["n_params"]
    model = models.build(config.model)
    x, y = nhwc(arrays["batch_x"]), nhwc(arrays["batch_y"])
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    y_train, _ = apply(variables, np.concatenate([x, y], 1), train=True,
                       mutable=("batch_stats",))
    assert y_train.dtype == jnp.float64
    assert rel(y_train, nhwc(arrays["y_train"])) < 1e-6
    loss = np.mean((np.asarray(y_train) - y) ** 2)
    assert abs(loss - float(arrays["loss"])) <= 1e-6 * abs(float(arrays["loss"]))
    assert rel(apply(variables, x, train=False), nhwc(arrays["pred_y_test"])) < 1e-6


def test_family_loss_is_openstls_training_step_and_eval_ignores_extra_frames(x64):
    """`mmvp.loss` (train_feed 'openstl') is OpenSTL's training_step loss; 'inputs' feeds only
    the T inputs, which changes the BatchNorm statistics; eval mode ignores frames beyond T."""
    meta, arrays, state_dict = load_bundle("zoo_rnn/mmvp")
    config = bundle_config(meta)
    variables = from_openstl(config.model, state_dict)
    model = models.build(config.model)
    x, y = nhwc(arrays["batch_x"]), nhwc(arrays["batch_y"])
    frames = np.concatenate([x, y], 1)
    loss_fn = jax.jit(lambda v, f: mmvp.loss(model, config, v, f, {}, None, 0))
    loss, mutated = loss_fn(variables, frames)
    assert abs(float(loss) - float(arrays["loss"])) <= 1e-6 * abs(float(arrays["loss"]))
    assert set(mutated["batch_stats"]) == {"filter", "hid"}  # the BatchNorms there
    config.model.train_feed = "inputs"
    loss_inputs, _ = jax.jit(lambda v, f: mmvp.loss(model, config, v, f, {}, None, 0))(
        variables, frames)
    assert abs(float(loss_inputs) - float(loss)) > 1e-9
    pred = jax.jit(model.apply)(variables, frames)
    assert rel(pred, nhwc(arrays["pred_y_test"])) < 1e-6


def test_c2_output_is_openstls_channel_scramble(x64):
    """With C = 2 OpenSTL re-reads the NHWC output as (C, H, W): undoing the scramble would
    miss its output by far more than the tolerance."""
    meta, arrays, state_dict = load_bundle("zoo_rnn/mmvp_c2_rect_t3_to_5")
    config = bundle_config(meta)
    pred = jax.jit(models.build(config.model).apply)(
        from_openstl(config.model, state_dict), nhwc(arrays["batch_x"]))
    b, tp, h, w, c = pred.shape
    unscrambled = np.asarray(pred).transpose(0, 1, 4, 2, 3).reshape(b, tp, h, w, c)
    assert rel(unscrambled, nhwc(arrays["pred_y_test"])) > 0.1


def test_float32_import_is_close():
    meta, arrays, state_dict = load_bundle("zoo_rnn/mmvp")
    config = bundle_config(meta, dtype="float32")
    pred = jax.jit(models.build(config.model).apply)(
        from_openstl(config.model, state_dict), nhwc(arrays["batch_x"]).astype(np.float32))
    assert rel(pred, nhwc(arrays["pred_y_test"])) < 1e-5


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize("size_in, size_out", [((4, 6), (2, 3)), ((3, 5), (7, 4)),
                                               ((8, 8), (8, 5)), ((2, 3), (1, 1))])
def test_interpolation_is_pytorchs(mode, size_in, size_out, x64):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(2, 3) + size_in)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=size_out, mode=mode).numpy()
    got = ops.resize2d(jnp.asarray(x), size_out, mode, axes=(2, 3))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)


def test_pixel_shuffles_are_pytorchs():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 12)).astype(np.float32)
    un = torch.nn.functional.pixel_unshuffle(torch.from_numpy(x), 2).numpy()
    got = ops.pixel_unshuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), 2)
    np.testing.assert_array_equal(np.asarray(got).transpose(0, 3, 1, 2), un)
    np.testing.assert_array_equal(ops.pixel_shuffle(got, 2), x.transpose(0, 2, 3, 1))


def test_bicubic_of_a_constant_is_the_constant_and_weights_sum_to_one():
    for n_in, n_out in ((4, 2), (5, 3), (3, 7)):
        for mode in ("bilinear", "bicubic"):
            np.testing.assert_allclose(ops.interp_matrix(n_in, n_out, mode).sum(1), 1.0,
                                       atol=1e-15)


def test_param_counts_are_openstls():
    assert n_params(config_lib.default_model_config("mmvp")) == 14_828_581
    for path, count in OPENSTL_COUNTS.items():
        assert n_params(load_config_file(DATA.parents[1] / "configs" / path).model) == count


@pytest.mark.parametrize("overrides, message", [
    (dict(downsample_setting="2,3"), r"model\.downsample_setting must be a comma string"),
    (dict(downsample_setting="2"), r"model\.downsample_setting must be a comma string"),
    (dict(in_shape=(1, 64, 64, 1)), r"model\.in_shape T = 1 must be >= 2"),
    (dict(use_direct_predictor=False), r"model\.use_direct_predictor must be True"),
    (dict(hid_S=1), r"model\.hid_S must be an int >= 2, got 1"),
    (dict(out_frames=0), r"model\.out_frames must be an int >= 1, got 0"),
    (dict(rrdb_decoder_num=-1), r"model\.rrdb_decoder_num must be an int >= 0"),
    (dict(train_feed="targets"), r"model\.train_feed must be one of"),
    (dict(in_shape=(10, 64, 64)), r"model\.in_shape must be four positive ints"),
])
def test_bad_config_is_one_sentence_naming_the_field(overrides, message):
    cfg = config_lib.default_model_config("mmvp")
    cfg.update(overrides)
    with pytest.raises(ValueError, match=message):
        models.build(cfg)


def test_summary():
    cfg = config_lib.default_model_config("mmvp")
    cfg.update(in_shape=(3, 32, 48, 2), out_frames=2, hid_S=4, hid_T=4)
    info = summary.summarize(cfg)
    assert info["params"] == n_params(cfg) and info["forward_flops"] > 0
    assert info["output_shape"] == (1, 2, 32, 48, 2)
    assert set(info["params_by_module"]) == {"enc", "filter", "hid", "dec", "enhance"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from test_train import make_dataset
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


def tiny_config(dataset):
    clips, data_dir = dataset
    config = config_lib.base_config("mmvp")  # 16x16 frames: matrices on 4x4 and 2x2 grids
    config.model.update(in_shape=(4, 16, 16, 1), out_frames=4, hid_S=4, hid_T=4,
                        rrdb_encoder_num=1, rrdb_decoder_num=0, rrdb_enhance_num=1,
                        downsample_setting="2,2")
    config.data.update(name="custom", custom_path=str(clips), custom_layout="NTHWC",
                       custom_normalize="none", custom_stride=8, custom_test_fraction=0.25,
                       in_frames=4, out_frames=4, data_dir=str(data_dir), batch_size=8,
                       eval_batch_size=8)
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.update(epochs=3, log_every_steps=1, num_samples=2, max_steps=2)
    return config


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("mmvp") / "run"
    metrics = loop.train_and_evaluate(tiny_config(dataset), run)
    return run, metrics


def test_trains_evaluates_and_restores(run):
    run, metrics = run
    for key in ("mse", "mae", "ssim", "psnr"):
        assert np.isfinite(metrics[key]), (key, metrics[key])
    assert {p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()} == {"2"}
    saved = json.loads((run / "config.json").read_text())["model"]
    assert saved["name"] == "mmvp" and saved["train_feed"] == "openstl"
    assert train.evaluate(run)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)


def test_training_moved_the_batchnorm_statistics(run):
    predictor = predict.load(run[0])
    stats = predictor.variables["batch_stats"]["filter"]["filter_block"]["0"]["1"]
    assert not np.allclose(stats["mean"], 0.0) and not np.allclose(stats["var"], 1.0)


def test_predict_any_horizon_export_and_frame_sizes(run, dataset, tmp_path):
    predictor = predict.load(run[0])
    clips = np.load(dataset[0])[:3, :4]
    long = predictor.predict(clips, 9)
    assert long.shape == (3, 9, 16, 16, 1) and np.all(np.isfinite(long))
    np.testing.assert_allclose(predictor.predict(clips, 3), long[:, :3], atol=1e-5)
    # frames 5.. are a second pass fed the last 4 frames known (inputs and predictions)
    np.testing.assert_allclose(predictor.predict(long[:, :4], 4), long[:, 4:8], atol=1e-5)
    path = predictor.export(tmp_path / "mmvp.jaxexport", horizon=9)
    np.testing.assert_allclose(predict.load_exported(path).predict(clips), long, atol=1e-5)
    # no parameter depends on the frame size: multiples of 8 (2 * 2 * 2), others padded
    assert predictor.padded_size(13, 9) == (16, 16)
    assert predictor.predict(np.repeat(np.repeat(clips, 2, 2), 2, 3), 4).shape == (3, 4, 32, 32, 1)
