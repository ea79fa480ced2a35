"""PredRNN++ and MIM: OpenSTL parity (weight-import bundles made with OpenSTL's own code in float64,
parameter counts of OpenSTL's configs), config errors, and a tiny run of each trained, evaluated,
restored, predicted beyond T' and exported.

Bundles in data/openstl_bundles/zoo_rnn/: `predrnnpp` and `mim` are the public reference cases
(1 channel, 16x16, T = T' = 4, 2 layers); the `*_heldout_*` ones were made with
OpenSTL's own code by the project's bundle generator (kept outside the repository; see
data/openstl_bundles/zoo_rnn/README.md): 2 channels, non-square frames,
T != T', three and four layers, MIM with layer_norm = 1, reverse scheduled sampling for both.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_bundle
from test_train_families import tiny_family_config
from tau_jax import config, models, predict, train
from tau_jax.config import load_config_file
from tau_jax.convert import from_openstl
from tau_jax.models import recurrent
from tau_jax.models.recurrent import patches as rpatches
from tau_jax.train import loop

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
BUNDLE_MODELS = {"PredRNNpp_Model": "predrnnpp", "MIM_Model": "mim"}
BUNDLES = ["predrnnpp", "predrnnpp_heldout_c2_3l_rss", "predrnnpp_heldout_t5",
           "mim", "mim_heldout_c2_3l_ln_rss", "mim_heldout_4l"]


def make_cfg(name, in_shape=(3, 8, 8, 1), out_frames=2, num_hidden=(4, 4), patch_size=2,
             filter_size=3, dtype="float32", **overrides):
    cfg = config.default_model_config(name)
    cfg.in_shape, cfg.out_frames, cfg.num_hidden = tuple(in_shape), out_frames, tuple(num_hidden)
    cfg.patch_size, cfg.filter_size = patch_size, filter_size
    cfg.dtype = cfg.param_dtype = dtype
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def param_count(cfg) -> int:
    shapes = jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))
    return models.count_params(shapes["params"])


# ----------------------------------------------------------------------------------------------
# OpenSTL weight-import bundles (float64)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_reproduces_openstl_float64(bundle, x64):
    """Training-mode roll-out with the bundle's mask, OpenSTL's training loss, and the test path
    (pure autoregression after the T inputs), all from the converted state dict."""
    meta, arrays, state_dict = load_bundle(f"zoo_rnn/{bundle}")
    t, c, h, w = meta["in_shape"]
    t_out, p = meta["aft_seq_length"], meta["patch_size"]
    cfg = make_cfg(BUNDLE_MODELS[meta["model"]], (t, h, w, c), t_out, meta["num_hidden"], p,
                   meta["filter_size"], "float64", layer_norm=meta["layer_norm"],
                   reverse_scheduled_sampling=meta["reverse_scheduled_sampling"])
    variables = from_openstl(cfg, state_dict)
    assert models.count_params(variables["params"]) == meta["n_params"]

    frames = jnp.asarray(np.transpose(arrays["video"], (0, 1, 3, 4, 2)))  # -> (B, L, H, W, C)
    np.testing.assert_array_equal(np.asarray(rpatches.reshape_patch(frames, p)),
                                  arrays["patches"])
    mask = arrays["mask"]
    flags = mask[:, :, 0, 0, 0]
    assert np.all(mask == flags[:, :, None, None, None])
    assert flags.tolist() == meta["mask_per_batch_step"]

    model = models.build(cfg)
    next_frames, aux = model.apply(variables, frames, mask=jnp.asarray(flags), train=True)
    assert next_frames.dtype == jnp.float64
    ref = arrays["next_frames"]
    got = np.asarray(rpatches.reshape_patch(next_frames, p))
    assert got.shape == ref.shape
    rel = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    assert rel < 1e-6, rel  # measured <= 2e-14

    loss = float(recurrent.recurrent_loss(next_frames, frames, aux))
    assert abs(loss - float(arrays["loss"])) <= 1e-6 * abs(float(arrays["loss"])), loss

    test_frames, _ = model.apply(variables, frames[:, :t], train=False)
    pred = np.transpose(np.asarray(test_frames[:, -t_out:]), (0, 1, 4, 2, 3))  # (B, T', C, H, W)
    ref = arrays["pred_y_test"]
    assert pred.shape == ref.shape
    rel = np.max(np.abs(pred - ref)) / np.max(np.abs(ref))
    assert rel < 1e-6, rel

    if cfg.name == "mim":  # every call starts from S = 0, unlike OpenSTL's second call
        again = np.asarray(rpatches.reshape_patch(
            model.apply(variables, frames, mask=jnp.asarray(flags), train=True)[0], p))
        np.testing.assert_array_equal(again, got)
        assert np.max(np.abs(got - arrays["next_frames_2nd_call"])) > 1e-6


@pytest.mark.parametrize("bundle", ["predrnnpp", "mim_heldout_c2_3l_ln_rss"])
def test_float32_remat_gradient_and_unused_parameters(bundle):
    """float32 with remat is within OpenSTL's own float32 deviation, and exactly the parameters
    OpenSTL never uses (PredRNN++'s conv_o, MIMN's conv_last) get a zero gradient."""
    meta, arrays, state_dict = load_bundle(f"zoo_rnn/{bundle}")
    t, c, h, w = meta["in_shape"]
    cfg = make_cfg(BUNDLE_MODELS[meta["model"]], (t, h, w, c), meta["aft_seq_length"],
                   meta["num_hidden"], meta["patch_size"], meta["filter_size"],
                   layer_norm=meta["layer_norm"], remat=True,
                   reverse_scheduled_sampling=meta["reverse_scheduled_sampling"])
    params = from_openstl(cfg, state_dict)["params"]
    frames = jnp.asarray(np.transpose(arrays["video"], (0, 1, 3, 4, 2)), jnp.float32)
    mask = jnp.asarray(arrays["mask"][:, :, 0, 0, 0], jnp.float32)
    model = models.build(cfg)

    def loss_fn(params):
        next_frames, aux = model.apply({"params": params}, frames, mask=mask, train=True)
        return recurrent.recurrent_loss(next_frames, frames, aux), next_frames

    (loss, next_frames), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    got = np.asarray(rpatches.reshape_patch(next_frames, cfg.patch_size))
    np.testing.assert_allclose(got, arrays["next_frames"], atol=5e-5)
    assert abs(float(loss) - float(arrays["loss"])) < 1e-5
    zero = {recurrent.openstl_key("params", tuple(k.key for k in path), g.shape, cfg)[0]
            for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]
            if not np.any(np.asarray(g))}
    assert zero == set(meta["params_without_effect"])


# ----------------------------------------------------------------------------------------------
# Parameter counts (OpenSTL's numbers, counted with its PredRNNpp_Model / MIM_Model)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,count", [
    ("mmnist/predrnnpp.py", 38_584_320), ("taxibj/predrnnpp.py", 38_404_096),
    ("kth/predrnnpp.py", 38_313_984), ("mmnist/mim.py", 38_043_648),
    ("taxibj/mim.py", 37_863_424), ("kth/mim.py", 39_813_120)])
def test_config_param_counts_match_openstl(path, count):
    assert param_count(load_config_file(str(CONFIGS / path)).model) == count


def test_small_param_counts_match_openstl():
    """Three layers, 2 channels, non-square, filter 3; MIM with layer_norm = 1."""
    shape = (3, 8, 12, 2)
    assert param_count(make_cfg("predrnnpp", shape, num_hidden=(4, 4, 4))) == 12_080
    assert param_count(make_cfg("mim", shape, num_hidden=(4, 4, 4), layer_norm=1)) == 25_680
    assert param_count(make_cfg("predrnnpp")) == 7_568
    assert param_count(make_cfg("mim")) == 6_688


# ----------------------------------------------------------------------------------------------
# Config errors
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,overrides,match", [
    ("predrnnpp", dict(layer_norm=1), r"^model\.layer_norm must be 0 for predrnnpp"),
    ("predrnnpp", dict(num_hidden=(4, 8)), r"^model\.num_hidden must list at least 2 layers"),
    ("predrnnpp", dict(num_hidden=(4,)), r"^model\.num_hidden must list at least 2 layers"),
    ("mim", dict(num_hidden=(4, 4, 8)), r"^model\.num_hidden must use one width"),
])
def test_config_errors_are_one_sentence(name, overrides, match):
    with pytest.raises(ValueError, match=match) as err:
        models.build(make_cfg(name, **overrides))
    message = str(err.value)
    assert message.endswith(".") and ". " not in message.rstrip("."), message


def test_mim_frames_fixed_to_in_shape_and_one_layer_runs():
    cfg = make_cfg("mim", num_hidden=(4,))
    assert param_count(cfg) > 0  # a single ST-LSTM layer, no MIM blocks (OpenSTL allows it)
    m, why = models.family_of("mim").frame_rule(make_cfg("mim"))
    assert m == 2 and "ct_weight" in why
    assert models.family_of("predrnnpp").frame_rule(make_cfg("predrnnpp")) == (2, None)


# ----------------------------------------------------------------------------------------------
# A tiny run of each: train 2 steps, evaluate, restore, predict beyond T', export
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from test_train import make_dataset
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


@pytest.fixture(scope="module", params=["predrnnpp", "mim"])
def run(request, dataset, tmp_path_factory):
    name = request.param
    cfg = tiny_family_config("predrnn", dataset)
    cfg.model.name = name
    run = tmp_path_factory.mktemp(name) / "run"
    return name, run, loop.train_and_evaluate(cfg, run)


def test_trains_evaluates_restores_predicts_and_exports(run, dataset, tmp_path):
    name, run, metrics = run
    for key in ("mse", "mae", "ssim", "psnr"):
        assert np.isfinite(metrics[key]), (key, metrics[key])
    assert {p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()} == {"2"}
    assert train.evaluate(run)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)

    assert json.loads((run / "config.json").read_text())["model"]["name"] == name
    predictor = predict.load(run)
    clips = np.load(dataset[0])[:3, :4]
    long = predictor.predict(clips, 9)  # T' = 4: passes chained on the model's own outputs
    assert long.shape == (3, 9, 16, 16, 1) and np.all(np.isfinite(long))
    np.testing.assert_allclose(predictor.predict(clips, 3), long[:, :3], atol=1e-5)
    path = predictor.export(tmp_path / f"{name}.jaxexport", horizon=9)
    np.testing.assert_allclose(predict.load_exported(path).predict(clips), long, atol=1e-5)
    if name == "mim":  # ct_weight / oc_weight span the grid: larger frames are refused
        with pytest.raises(ValueError, match=r"'mim' takes only 16x16 frames.*ct_weight"):
            predictor.predict(np.zeros((1, 4, 20, 16, 1), np.float32), 4)
