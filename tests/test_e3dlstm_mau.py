"""E3D-LSTM and MAU: OpenSTL parity (public and held-out weight-import bundles made with OpenSTL's
own code in float64, parameter counts of OpenSTL's configs), PyTorch's nearest resize and
transposed conv, config errors, and a tiny run of each trained, evaluated, restored, predicted
and exported."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA, load_bundle
from test_train_families import tiny_family_config
from tau_jax import config as config_lib
from tau_jax import models, predict, train
from tau_jax.config import load_config_file
from tau_jax.models import layers
from tau_jax.convert import from_openstl
from tau_jax.models import recurrent
from tau_jax.models.recurrent import patches as rpatches
from tau_jax.train import loop

MODELS = {"E3DLSTM_Model": "e3dlstm", "MAU_Model": "mau"}
# public (zoo_rnn README) and held-out (third_party/make_rnn_zoo_bundles.py's HELDOUT) bundles
BUNDLES = ["e3dlstm", "e3dlstm_c2_rect_3layers_ln_rss", "e3dlstm_stride2_odd_grid", "mau",
           "mau_c2_rect_3layers_sr2_tau3", "mau_residual_recall_sr4_tau2", "mau_1layer_sr1"]
FIELDS = ("patch_size", "filter_size", "stride", "layer_norm", "reverse_scheduled_sampling",
          "sr_size", "tau", "cell_mode", "model_mode")
# OpenSTL's E3DLSTM_Model / MAU_Model built from configs/<dataset>/{E3DLSTM,MAU}.py (c74deb5)
OPENSTL_COUNTS = {"mmnist/e3dlstm": 51_347_456, "mmnist/mau": 4_483_588,
                  "taxibj/e3dlstm": 50_987_008, "taxibj/mau": 4_409_868,
                  "kth/e3dlstm": 53_510_144, "kth/mau": 20_138_372}


def bundle_cfg(meta, dtype="float64"):
    cfg = config_lib.default_model_config(MODELS[meta["model"]])
    t, c, h, w = meta["in_shape"]
    cfg.in_shape, cfg.out_frames = (t, h, w, c), meta["aft_seq_length"]
    cfg.num_hidden = tuple(meta["num_hidden"])
    for f in FIELDS:
        if f in meta:
            cfg[f] = meta[f]
    cfg.dtype = cfg.param_dtype = dtype
    return cfg


def rel(got, ref):
    return float(np.max(np.abs(np.asarray(got) - ref)) / np.max(np.abs(ref)))


def n_params(cfg) -> int:
    return models.count_params(jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))["params"])


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_reproduces_openstl_float64(bundle, x64):
    """Training roll-out with the bundle's mask, training loss and test path, to 1e-6 relative
    (measured <= 4e-15)."""
    meta, arrays, state_dict = load_bundle(f"zoo_rnn/{bundle}")
    cfg = bundle_cfg(meta)
    variables = from_openstl(cfg, state_dict)
    assert models.count_params(variables["params"]) == meta["n_params"]
    mask = arrays["mask"]
    assert np.all(mask == mask[:, :, :1, :1, :1]), "one flag per (batch, step)"
    frames = jnp.asarray(np.transpose(arrays["video"], (0, 1, 3, 4, 2)))  # NCHW -> NHWC video
    model = models.build(cfg)

    next_frames, aux = model.apply(variables, frames, mask=jnp.asarray(mask[:, :, 0, 0, 0]),
                                   train=True)
    assert next_frames.dtype == jnp.float64
    if cfg.name == "mau":  # OpenSTL's MAU returns (B, L, C, H, W)
        got = np.transpose(np.asarray(next_frames), (0, 1, 4, 2, 3))
    else:  # the others return patches
        got = np.asarray(rpatches.reshape_patch(next_frames, cfg.patch_size))
    assert rel(got, arrays["next_frames"]) < 1e-6
    loss = recurrent.recurrent_loss(next_frames, frames, aux, l1=cfg.name == "e3dlstm")
    assert abs(float(loss) - float(arrays["loss"])) <= 1e-6 * abs(float(arrays["loss"]))

    pred, _ = model.apply(variables, frames[:, :cfg.in_shape[0]])  # no mask: test path
    pred = np.transpose(np.asarray(pred[:, -cfg.out_frames:]), (0, 1, 4, 2, 3))
    assert rel(pred, arrays["pred_y_test"]) < 1e-6


@pytest.mark.parametrize("case", sorted(OPENSTL_COUNTS))
def test_param_counts_equal_openstl(case):
    dataset, name = case.split("/")
    cfg = load_config_file(DATA.parents[1] / "configs" / dataset / f"{name}.py")
    assert cfg.model.name == name
    assert n_params(cfg.model) == OPENSTL_COUNTS[case]


def test_param_counts_of_the_mmnist_defaults():
    reference = json.loads((DATA / "param_flops.json").read_text())
    assert n_params(config_lib.default_model_config("e3dlstm")) == \
        reference["mmnist/E3DLSTM"]["params"] == 51_347_456
    assert n_params(config_lib.default_model_config("mau")) == \
        reference["mmnist/MAU"]["params"] == 4_483_588


def test_nearest_index_is_pytorchs():
    torch = pytest.importorskip("torch")
    for n_in, n_out in [(1, 2), (3, 5), (4, 7), (5, 10), (7, 10), (14, 20), (3, 3), (8, 5),
                        (13, 25), (4, 16)]:
        x = torch.arange(n_in, dtype=torch.float64)[None, None, :]
        want = torch.nn.functional.interpolate(x, size=n_out, mode="nearest")[0, 0].long().numpy()
        np.testing.assert_array_equal(layers.nearest_index(n_in, n_out), want)


def test_conv_transpose_is_pytorchs(x64):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 3))   # NCHW, 4 channels
    w = rng.normal(size=(4, 6, 3, 3))   # (in, out, kh, kw)
    want = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=2,
                                                padding=1, output_padding=1).numpy()
    got = layers.conv_transpose_torch(jnp.asarray(x.transpose(0, 2, 3, 1)),
                                   jnp.asarray(w.transpose(2, 3, 1, 0)), 2, 1, 1)
    assert got.shape == (2, 10, 6, 6)
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=1e-12, atol=1e-12)


def small_cfg(name, **overrides):
    cfg = config_lib.default_model_config(name)
    cfg.update(in_shape=(3, 8, 8, 1), out_frames=2, num_hidden=(4, 4), filter_size=3)
    cfg.patch_size = 2 if name == "e3dlstm" else 1
    if name == "mau":
        cfg.update(sr_size=2, tau=2)
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


@pytest.mark.parametrize("name,overrides,field", [
    ("e3dlstm", dict(num_hidden=(4, 8)), "num_hidden"),
    ("e3dlstm", dict(stride=0), "stride"),
    ("predrnn", dict(stride=2), "stride"),
    ("mau", dict(num_hidden=(4, 8)), "num_hidden"),
    ("mau", dict(patch_size=2), "patch_size"),
    ("mau", dict(reverse_scheduled_sampling=1), "reverse_scheduled_sampling"),
    ("mau", dict(sr_size=3), "sr_size"),
    ("mau", dict(sr_size=16), "sr_size"),
    ("mau", dict(tau=0), "tau"),
    ("mau", dict(cell_mode="gated"), "cell_mode"),
    ("mau", dict(model_mode="skip"), "model_mode"),
])
def test_config_errors_are_one_sentence(name, overrides, field):
    cfg = small_cfg(name if name != "predrnn" else "e3dlstm", **overrides)
    if name == "predrnn":
        cfg.name = "predrnn"
    with pytest.raises(ValueError, match=rf"model\.{field}") as err:
        models.build(cfg)
    message = str(err.value)
    assert message.endswith(".") and ". " not in message[:-1], message


def test_small_configs_build_and_e3dlstm_stride_2():
    """KTH's E3D-LSTM uses stride 2; MAU's sr_size 1 has no encoder / decoder stages."""
    for cfg in (small_cfg("e3dlstm", stride=2), small_cfg("mau", sr_size=1, tau=1)):
        frames = jnp.zeros((1, 5, 8, 8, 1))
        shapes = jax.eval_shape(lambda c=cfg: models.init(c, jax.random.key(0)))
        variables = jax.tree_util.tree_map(lambda s: jnp.full(s.shape, 0.1, s.dtype), shapes)
        out, _ = models.build(cfg).apply(variables, frames, mask=jnp.zeros((1, 1)))
        assert out.shape == (1, 4, 8, 8, 1)


# ----------------------------------------------------------------------------------------------
# A tiny run of each: trained, evaluated, restored, predicted beyond T', exported
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from test_train import make_dataset
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


def tiny_config(name, dataset):
    config = tiny_family_config("predrnn", dataset)
    section = config_lib.default_model_config(name)
    section.update(in_shape=(4, 16, 16, 1), out_frames=4, num_hidden=(4, 4), filter_size=3,
                   patch_size=4 if name == "e3dlstm" else 1)
    if name == "mau":
        section.update(sr_size=4, tau=2)
    config.model = section
    return config


@pytest.fixture(scope="module", params=["e3dlstm", "mau"])
def run(request, dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp(request.param) / "run"
    metrics = loop.train_and_evaluate(tiny_config(request.param, dataset), run)
    return request.param, run, metrics


def test_trains_evaluates_restores_predicts_and_exports(run, dataset, tmp_path):
    name, run, metrics = run
    for key in ("mse", "mae", "ssim", "psnr"):
        assert np.isfinite(metrics[key]), (key, metrics[key])
    assert {p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()} == {"2"}
    assert json.loads((run / "config.json").read_text())["model"]["name"] == name
    assert train.evaluate(run)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)

    predictor = predict.load(run)
    clips = np.load(dataset[0])[:2, :4]
    long = predictor.predict(clips, 6)
    assert long.shape == (2, 6, 16, 16, 1) and np.all(np.isfinite(long))
    np.testing.assert_allclose(predictor.predict(clips, 4), long[:, :4], atol=1e-5)
    path = predictor.export(tmp_path / f"{name}.jaxexport", horizon=6)
    np.testing.assert_allclose(predict.load_exported(path).predict(clips), long, atol=1e-5)
    # grid-sized LayerNorms (always on): smaller frames are padded up, larger ones refused
    assert predictor.predict(clips[..., :12, :8, :], 4).shape == (2, 4, 12, 8, 1)
    with pytest.raises(ValueError, match=r"takes only 16x16 frames.*LayerNorms"):
        predictor.predict(np.zeros((1, 4, 20, 16, 1), np.float32), 4)
