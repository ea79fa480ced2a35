"""PhyDNet: OpenSTL's outputs reproduced in float64 from its weights (bundles made with OpenSTL's
code by experiments/make_phydnet_bundles.py: weights drawn from a seed, not stored), parameter
counts, config errors, the teacher-forcing schedule, and a tiny run trained, evaluated,
restored, predicted beyond T' and exported."""

import importlib.util
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import BUNDLES, DATA
from tau_jax import config as config_lib
from tau_jax import convert, models, predict, train
from tau_jax.config import load_config_file
from tau_jax.models import phydnet
from tau_jax.summary import summarize
from tau_jax.train import loop

SMALL = BUNDLES / "phydnet"
# OpenSTL's public 45 MB PhyDNet bundle, if you have it (not in the repository): its path in
# TAU_JAX_PHYDNET_BUNDLE runs the same check on it.
PUBLIC = pathlib.Path(os.environ.get("TAU_JAX_PHYDNET_BUNDLE", "/nonexistent/phydnet.npz"))
CASES = ("phydnet_p4_c2", "phydnet_p2")  # patch 4 / 2, T != T', 2 channels, non-square frames
TWINS = (("encoder.phycell.", "phycell."), ("encoder.convcell.", "convcell."))


def seeded_state_dict(keys, seed: int) -> dict:
    """The generator's weights: experiments/make_phydnet_bundles.py's function (one source)."""
    spec = importlib.util.spec_from_file_location(
        "make_phydnet_bundles", DATA.parents[1] / "experiments" / "make_phydnet_bundles.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    return generator.seeded_state_dict(keys, seed)


def with_copies(state_dict: dict) -> dict:
    """OpenSTL's full state dict: the encoder's copies of the two cells and the K2M buffers."""
    out = dict(state_dict)
    for copy, canonical in TWINS:
        out.update({copy + k[len(canonical):]: v for k, v in state_dict.items()
                    if k.startswith(canonical)})
    m = np.stack([(np.arange(7) - 3.0) ** i / np.prod(np.arange(1, i + 1)) for i in range(7)])
    out.update({"k2m._M0": m, "k2m._M1": m, "k2m._invM0": np.linalg.inv(m),
                "k2m._invM1": np.linalg.inv(m)})
    return out


def section(meta, dtype="float64"):
    cfg = config_lib.default_model_config("phydnet")
    t, c, h, w = meta["in_shape"]
    cfg.update(in_shape=(t, h, w, c), out_frames=meta["aft_seq_length"],
               patch_size=meta["patch_size"], dtype=dtype, param_dtype=dtype)
    return cfg


def load(name):
    meta = json.loads((SMALL / f"{name}.json").read_text())
    z = dict(np.load(SMALL / f"{name}.npz"))
    return meta, with_copies(seeded_state_dict(meta["keys"], meta["seed"])), z


def nhwc(a):
    return np.transpose(a, (0, 1, 3, 4, 2))


def rel(y, ref) -> float:
    return float(np.max(np.abs(np.asarray(y) - ref)) / np.max(np.abs(ref)))


def check_against_openstl(meta, state_dict, z):
    """Train-mode images and losses at teacher forcing 1 and 0, and the test path. OpenSTL's
    loss rounds its moment term to float32; the float64 reference swaps in the unrounded one."""
    cfg = section(meta)
    variables = convert.from_openstl(cfg, state_dict)
    assert models.count_params(variables["params"]) == meta["n_params"]
    model = models.build(cfg)
    x, y = nhwc(z["batch_x"]), nhwc(z["batch_y"])
    frames = np.concatenate([x, y], axis=1)
    apply = jax.jit(model.apply)
    errors = {}
    for r in (1, 0):
        images = apply(variables, frames, jnp.asarray(r))
        errors[f"images_tf{r}"] = rel(images, nhwc(z[f"images_tf{r}"]))
        ref = z[f"loss_model_tf{r}"] - z["loss_moment"] + z["loss_moment_f64"]
        errors[f"loss_model_tf{r}"] = rel(phydnet.model_loss(images, frames, variables["params"]),
                                          ref)
    errors["pred_y_test"] = rel(phydnet.predict(model, cfg, variables, x), nhwc(z["pred_y_test"]))
    assert max(errors.values()) <= 1e-6, errors
    # teacher forcing matters here, so both paths are tested
    assert np.max(np.abs(z["images_tf1"] - z["images_tf0"])) > 1e-4
    return cfg, model, variables, frames


@pytest.mark.parametrize("name", CASES)
def test_openstl_weights_reproduce_openstl_float64(name, x64):
    meta, state_dict, z = load(name)
    cfg, model, variables, frames = check_against_openstl(meta, state_dict, z)
    # the family's training loss: epoch 0 teacher-forces (ratio 1), epoch >= 334 never (ratio 0)
    for step, r in ((0, 1), (7 * 334, 0)):
        config = config_lib.base_config("phydnet")
        config.model.update(cfg.to_dict())
        value, _ = phydnet.loss(model, config, variables, frames, {}, jax.random.key(step), step,
                                steps_per_epoch=7)
        ref = z[f"loss_model_tf{r}"] - z["loss_moment"] + z["loss_moment_f64"]
        assert rel(value, ref) <= 1e-6


@pytest.mark.skipif(not PUBLIC.exists(), reason="OpenSTL's 45 MB PhyDNet bundle is not in the "
                    "repository; set TAU_JAX_PHYDNET_BUNDLE to its path to run this")
def test_public_bundle_float64(x64):
    """The public bundle (stored weights, 16x16, patch 4): the seeded route above is the same."""
    z = dict(np.load(PUBLIC))
    meta = json.loads(PUBLIC.with_suffix(".json").read_text())
    check_against_openstl(meta, {k[6:]: v for k, v in z.items() if k.startswith("param/")}, z)


def test_twins_must_be_equal_constants_are_left_out_and_float32():
    """Canonical keys alone or with the encoder's copies load the same; float32 lands at 1e-6."""
    meta, state_dict, z = load("phydnet_p2")
    cfg = section(meta, "float32")
    canonical = {k: v for k, v in state_dict.items() if not k.startswith(("encoder.phycell",
                                                                          "encoder.convcell",
                                                                          "k2m."))}
    a = convert.from_openstl(cfg, canonical)
    b = convert.from_openstl(cfg, {"module." + k: v for k, v in state_dict.items()})
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    pred = phydnet.predict(models.build(cfg), cfg, a, nhwc(z["batch_x"]).astype(np.float32))
    assert rel(pred, nhwc(z["pred_y_test"])) <= 1e-5
    bad = dict(state_dict)
    key = "encoder.convcell.cell_list.1.conv.bias"
    bad[key] = bad[key] + 1.0
    with pytest.raises(ValueError, match=r"'encoder\.convcell\.cell_list\.1\.conv\.bias' differs "
                                         r"from 'convcell\.cell_list\.1\.conv\.bias'"):
        convert.from_openstl(cfg, bad)


def n_params(cfg) -> int:
    return models.count_params(jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))["params"])


def test_parameter_counts_of_openstl_configs():
    """OpenSTL's MMNIST config: 3,091,732 (its table: 3.1M), the twins counted once."""
    assert n_params(config_lib.default_model_config("phydnet")) == 3_091_732
    root = DATA.parents[1] / "configs"
    for path, count in (("mmnist/phydnet.py", 3_091_732), ("kth/phydnet.py", 3_091_732),
                        ("taxibj/phydnet.py", 3_092_309),
                        ("weather/t2m_5_625.py:phydnet", 3_091_732)):
        assert n_params(load_config_file(root / path).model) == count, path


@pytest.mark.parametrize("overrides, message", [
    (dict(patch_size=3), r"model\.patch_size must be 2 or 4 for phydnet \(OpenSTL silently"),
    (dict(in_shape=(1, 64, 64, 1)), r"model\.in_shape T must be >= 2 for phydnet"),
    (dict(out_frames=0), r"model\.out_frames must be a positive int, got 0"),
    (dict(in_shape=(10, 64, 64)), r"model\.in_shape must be four positive ints"),
])
def test_bad_config_is_one_sentence_naming_the_field(overrides, message):
    cfg = config_lib.default_model_config("phydnet")
    cfg.update(overrides)
    with pytest.raises(ValueError, match=message):
        models.build(cfg)


def test_teacher_forcing_ratio_is_openstls():
    assert [float(phydnet.teacher_forcing_ratio(e)) for e in (0, 100, 333, 334, 500)] == \
        pytest.approx([1.0, 0.7, 0.001, 0.0, 0.0], abs=1e-6)


def test_summary():
    cfg = config_lib.default_model_config("phydnet")
    cfg.update(in_shape=(3, 16, 24, 2), out_frames=2)
    info = summarize(cfg)
    assert info["params"] == 3_092_309 and info["forward_flops"] > 0
    assert info["output_shape"] == (1, 4, 16, 24, 2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from test_train import make_dataset
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    """Two steps of the trainer; the loss is spied on for the steps per epoch it is handed."""
    from test_train_families import tiny_family_config
    config = tiny_family_config("predrnn", dataset)
    config.model = config_lib.base_config("phydnet").model
    config.model.update(in_shape=(4, 16, 16, 1), out_frames=4, patch_size=4)
    seen = []
    original = phydnet.loss

    def spy(model, config, variables, frames, rngs, key, step, steps_per_epoch, framing):
        seen.append(steps_per_epoch)
        return original(model, config, variables, frames, rngs, key, step, steps_per_epoch,
                        framing)

    run = tmp_path_factory.mktemp("phydnet") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(phydnet, "loss", spy)
        metrics = loop.train_and_evaluate(config, run)
    return run, metrics, seen


def test_trains_evaluates_and_restores(run):
    run, metrics, seen = run
    for key in ("mse", "mae", "ssim", "psnr"):
        assert np.isfinite(metrics[key]), (key, metrics[key])
    assert {p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()} == {"2"}
    assert json.loads((run / "config.json").read_text())["model"]["name"] == "phydnet"
    assert seen and all(s is not None and s >= 1 for s in seen)  # the trainer's epoch count
    assert train.evaluate(run)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)


def test_predict_beyond_out_frames_and_export(run, dataset, tmp_path):
    predictor = predict.load(run[0])
    clips = np.load(dataset[0])[:3, :4]
    long = predictor.predict(clips, 9)
    assert long.shape == (3, 9, 16, 16, 1) and np.all(np.isfinite(long))
    np.testing.assert_allclose(predictor.predict(clips, 3), long[:, :3], atol=1e-5)
    path = predictor.export(tmp_path / "phydnet.jaxexport", horizon=9)
    np.testing.assert_allclose(predict.load_exported(path).predict(clips), long, atol=1e-5)
    # convolutions only: other multiples of patch_size run, others are padded up
    assert predictor.padded_size(13, 9) == (16, 12)
    assert predictor.predict(clips[..., :13, :9, :], 4).shape == (3, 4, 13, 9, 1)
