"""SwinLSTM-D and -B: parameter counts of OpenSTL's configs, OpenSTL's outputs reproduced from its
weights (float64 bundles in tests/data/openstl_bundles/zoo_rnn/: the two public cases and three
held-out ones made with OpenSTL's code: odd windows, 2 channels, three D levels, T != T'), config
errors, and a tiny run trained, evaluated, restored, predicted beyond T' and exported."""

import json

import jax
import ml_collections
import numpy as np
import pytest

from conftest import DATA, load_bundle
from test_train_families import tiny_family_config
from tau_jax import config as config_lib
from tau_jax import convert, models, predict, summary, train
from tau_jax.config import load_config_file
from tau_jax.models.swinlstm.model import drop_path_slices
from tau_jax.train import loop

CASES = ("swinlstm_d", "swinlstm_b", "swinlstm_d_odd_window_c2", "swinlstm_d_3levels",
         "swinlstm_b_odd_window_c2")
FIELDS = ("depths_downsample", "depths_upsample", "depths", "num_heads", "patch_size",
          "window_size", "embed_dim")


def section(meta: dict, dtype="float64", drop_path_rate=0.0):
    """Our model section for a bundle's OpenSTL fields."""
    name = "swinlstm_d" if meta["model"] == "SwinLSTM_D_Model" else "swinlstm_b"
    t, c, h, w = meta["in_shape"]
    cfg = config_lib.default_model_config(name)
    cfg.update(in_shape=(t, h, w, c), out_frames=meta["aft_seq_length"], dtype=dtype,
               param_dtype=dtype, drop_path_rate=drop_path_rate,
               **{f: tuple(meta[f]) if isinstance(meta[f], list) else meta[f]
                  for f in FIELDS if f in meta})
    return cfg


def n_params(cfg) -> int:
    return models.count_params(jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))["params"])


def assert_relative(y, ref, tol):
    y, ref = np.asarray(y), np.asarray(ref)
    assert y.shape == ref.shape, (y.shape, ref.shape)
    err = np.max(np.abs(y - ref)) / np.max(np.abs(ref))
    assert err <= tol, err


def test_param_counts_of_openstl_configs():
    assert n_params(config_lib.default_model_config("swinlstm_d")) == 20_191_969
    assert n_params(config_lib.default_model_config("swinlstm_b")) == 2_778_417
    root = DATA.parents[1] / "configs" / "mmnist"
    assert n_params(load_config_file(root / "swinlstm_d.py").model) == 20_191_969
    assert n_params(load_config_file(root / "swinlstm_b.py").model) == 2_778_417
    # OpenSTL's configs give the lists as comma strings
    strings = dict(config_lib.default_model_config("swinlstm_d"), depths_downsample="2,6",
                   depths_upsample="6,2", num_heads="4,8")
    assert n_params(ml_collections.ConfigDict(strings)) == 20_191_969


@pytest.mark.parametrize("case", CASES)
def test_openstl_weights_reproduce_openstl_float64(case, x64):
    meta, a, state_dict = load_bundle(f"zoo_rnn/{case}")
    cfg = section(meta)
    variables = convert.from_openstl(cfg, state_dict)
    assert models.count_params(variables["params"]) == meta["n_params"]
    family, model = models.family_of(cfg.name), models.build(cfg)
    t = cfg.in_shape[0]
    ims = a["ims"]
    config = ml_collections.ConfigDict({"model": cfg})
    rngs = {"dropout": jax.random.key(0), "drop_path": jax.random.key(1)}

    @jax.jit
    def paths(v, ims):
        next_frames = model.apply(v, ims[:, :t], train=False, horizon=ims.shape[1] - t)
        loss, _ = family.loss(model, config, v, ims, rngs, None, 0)  # train mode, DropPath 0
        return next_frames, loss, family.predict(model, cfg, v, ims[:, :t])

    next_frames, loss, pred = paths(variables, ims)
    assert_relative(next_frames, a["next_frames"], 1e-6)
    assert_relative(loss, a["loss"], 1e-6)
    assert_relative(pred, np.transpose(a["pred_y_test"], (0, 1, 3, 4, 2)), 1e-6)


@pytest.mark.parametrize("case", ["swinlstm_d", "swinlstm_d_3levels", "swinlstm_b"])
def test_windows_shifts_and_drop_path_rates_are_openstl_s(case):
    """Every block's window, shift and DropPath rate against the bundle's `derived_blocks`."""
    from tau_jax.models.swinlstm.model import block_window
    meta, _, _ = load_bundle(f"zoo_rnn/{case}")
    k_levels = len(meta.get("depths_downsample", [1]))
    grid = meta["in_shape"][2] // meta["patch_size"]
    if meta["model"] == "SwinLSTM_D_Model":
        down = drop_path_slices(tuple(meta["depths_downsample"]), 0.1, reverse=False)
        up = drop_path_slices(tuple(meta["depths_upsample"]), 0.1, reverse=True)
    for block in meta["derived_blocks"]:
        parts = block["name"].split(".")
        i = int(parts[-1])
        if parts[0] == "ST":
            res, rate = grid, 0.1
        elif parts[0] == "Downsample":
            level = int(parts[2])
            res, rate = grid // 2 ** level, down[level][i]
        else:
            j = int(parts[2])
            res, rate = grid // 2 ** (k_levels - j), up[k_levels - 1 - j][i]
        assert block["input_resolution"] == [res, res]
        assert block_window(res, meta["window_size"], i) == (block["window_size"],
                                                              block["shift_size"])
        assert rate == pytest.approx(block["openstl_drop_path"])


def test_float32_checkpoint_prefixes_and_timm_buffers():
    meta, a, state_dict = load_bundle("zoo_rnn/swinlstm_d")
    cfg = section(meta, dtype="float32")
    t = cfg.in_shape[0]
    # checkpoints saved with timm 0.6 also hold the recomputable Swin buffers
    state_dict = dict(state_dict, **{
        "Downsample.layers.0.STBs.1.attn_mask": np.zeros((16, 4, 4)),
        "Downsample.layers.0.STBs.1.attn.relative_position_index": np.zeros((4, 4), np.int64)})
    for prefix in ("", "module.", "model."):
        variables = convert.from_openstl(cfg, {prefix + k: v for k, v in state_dict.items()})
        pred = models.family_of(cfg.name).predict(models.build(cfg), cfg, variables,
                                                  a["ims"][:, :t].astype(np.float32))
        assert_relative(pred, np.transpose(a["pred_y_test"], (0, 1, 3, 4, 2)), 1e-5)


def test_weights_of_another_window_are_refused_with_their_keys():
    meta, _, state_dict = load_bundle("zoo_rnn/swinlstm_b")
    cfg = section(meta, dtype="float32")
    cfg.window_size = 2
    with pytest.raises(ValueError, match=r"does not fit the model config.*"
                                         r"relative_position_bias_table"):
        convert.from_openstl(cfg, state_dict)


@pytest.mark.parametrize("name, overrides, message", [
    ("swinlstm_d", dict(in_shape=(10, 64, 32, 1)), r"model\.in_shape must have square frames"),
    ("swinlstm_b", dict(patch_size=4), r"model\.patch_size must be 2"),
    ("swinlstm_b", dict(in_shape=(10, 6, 6, 1)), r"H = 6 must be a multiple of 2 \* "
                                                 r"model\.patch_size"),
    ("swinlstm_d", dict(in_shape=(10, 12, 12, 1), depths_downsample=(2, 2, 2),
                        depths_upsample=(2, 2, 2), num_heads=(1, 1, 1)),
     r"H / patch_size = 6 must be divisible by 2\^3"),
    ("swinlstm_d", dict(depths_upsample=(2,)), r"model\.depths_upsample \(1 levels\) and "
                                               r"model\.num_heads \(2\)"),
    ("swinlstm_d", dict(num_heads=(3, 8)), r"model\.num_heads: 3 heads do not divide a "
                                           r"level's width 128"),
    ("swinlstm_b", dict(num_heads=5), r"model\.num_heads: 5 heads do not divide"),
    ("swinlstm_b", dict(window_size=3), r"model\.window_size 3 does not tile a level's 32 x 32"),
    ("swinlstm_d", dict(depths_downsample=(2, 0)), r"model\.depths_downsample must be positive"),
    ("swinlstm_b", dict(depths=0), r"model\.depths must be a positive int, got 0"),
    ("swinlstm_b", dict(drop_path_rate=1.0), r"model\.drop_path_rate must lie in \[0, 1\)"),
])
def test_bad_config_is_one_sentence_naming_the_field(name, overrides, message):
    cfg = config_lib.default_model_config(name)
    cfg.update(overrides)
    with pytest.raises(ValueError, match=message):
        models.build(cfg)


def tiny(name, dataset):
    config = tiny_family_config("predrnn", dataset)
    config.model = config_lib.default_model_config(name)
    config.model.update(in_shape=(4, 16, 16, 1), out_frames=4, embed_dim=8, window_size=4,
                        drop_path_rate=0.1)
    if name == "swinlstm_b":
        config.model.update(depths=2, num_heads=2)
    else:
        config.model.update(depths_downsample=(2, 1), depths_upsample=(1, 2), num_heads=(2, 2))
    return config


def test_summary_of_both_variants(tmp_path):
    for name in ("swinlstm_d", "swinlstm_b"):
        cfg = tiny(name, (tmp_path / "none.npy", tmp_path)).model
        out = summary.summarize(cfg)
        assert out["params"] == n_params(cfg) and out["forward_flops"] > 0, out
        assert out["output_shape"] == (1, 7, 16, 16, 1)  # OpenSTL's next_frames: T + T' - 1


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from test_train import make_dataset
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("swinlstm") / "run"
    metrics = loop.train_and_evaluate(tiny("swinlstm_b", dataset), run)
    return run, metrics


def test_trains_evaluates_and_restores(run):
    """Two steps with DropPath on, evaluation, checkpoint; the restored run gives the same
    metrics."""
    run, metrics = run
    for key in ("mse", "mae", "ssim", "psnr"):
        assert np.isfinite(metrics[key]), (key, metrics[key])
    assert {p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()} == {"2"}
    assert json.loads((run / "config.json").read_text())["model"]["name"] == "swinlstm_b"
    assert train.evaluate(run)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)


def test_predict_beyond_out_frames_and_export(run, dataset, tmp_path):
    predictor = predict.load(run[0])
    clips = np.load(dataset[0])[:3, :4]
    long = predictor.predict(clips, 9)
    assert long.shape == (3, 9, 16, 16, 1) and np.all(np.isfinite(long))
    np.testing.assert_allclose(predictor.predict(clips, 3), long[:, :3], atol=1e-5)
    path = predictor.export(tmp_path / "swinlstm.jaxexport", horizon=9)
    np.testing.assert_allclose(predict.load_exported(path).predict(clips), long, atol=1e-5)
    with pytest.raises(ValueError, match=r"'swinlstm_b' takes only 16x16 frames"):
        predictor.predict(np.zeros((1, 4, 20, 20, 1), np.float32), 4)
