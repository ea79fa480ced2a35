"""PredFormer: parameter counts equal to the official models', outputs equal to the official
code's (bundles made by experiments/make_predformer_bundles.py, float64), roll-out, config
errors, and a tiny run trained, evaluated, restored, predicted and exported."""

import functools
import json

import jax
import numpy as np
import pytest

from conftest import DATA
from test_train_families import tiny_family_config
from tau_jax import config as config_lib
from tau_jax import convert, models, predict, train
from tau_jax.config import load_config_file
from tau_jax.models import predformer
from tau_jax.train import loop

BUNDLES = DATA / "predformer_bundles"
OFFICIAL_COUNTS = json.loads((BUNDLES / "official_param_counts.json").read_text())
FIELDS = ("patch_size", "dim", "heads", "dim_head", "scale_dim", "Ndepth", "depth", "dropout",
          "attn_dropout", "drop_path")


def section(official: dict, variant: str, out_frames=None, dtype="float32"):
    """Our model section for an official model_config."""
    cfg = config_lib.default_model_config("predformer")
    t = official["pre_seq"]
    cfg.update(variant=variant, out_frames=out_frames or t, dtype=dtype, param_dtype=dtype,
               in_shape=(t, official["height"], official["width"], official["num_channels"]),
               **{f: official[f] for f in FIELDS})
    return cfg


def n_params(cfg) -> int:
    return models.count_params(jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))["params"])


@pytest.mark.parametrize("case", sorted(OFFICIAL_COUNTS))
def test_param_count_equals_the_official_model(case):
    entry = OFFICIAL_COUNTS[case]
    assert n_params(section(entry["model_config"], case.split("/")[-1])) == entry["params"]


def test_defaults_and_configs_are_the_official_models():
    assert n_params(config_lib.default_model_config("predformer")) == 25_297_728
    expected = {"mmnist/predformer.py": "mmnist/quadruplet_tsst",
                "mmnist/predformer.py:full": "mmnist/full",
                "taxibj/predformer.py": "taxibj/triplet_sts",
                "weather/predformer.py": "weather/t2m_5_625/fac_ts"}
    for path, case in expected.items():
        config = load_config_file(DATA.parents[1] / "configs" / path)
        assert n_params(config.model) == OFFICIAL_COUNTS[case]["params"], path
        assert config.model.in_shape[0] == OFFICIAL_COUNTS[case]["model_config"]["pre_seq"]


def load(variant):
    meta = json.loads((BUNDLES / f"predformer_{variant}.json").read_text())
    arrays = dict(np.load(BUNDLES / f"predformer_{variant}.npz"))
    state_dict = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    nhwc = {k: np.transpose(arrays[k], (0, 1, 3, 4, 2)) for k in ("x", "y_eval", "y_rollout")}
    return meta, state_dict, nhwc


def assert_relative(y, ref, tol):
    assert y.shape == ref.shape
    assert np.max(np.abs(np.asarray(y) - ref)) <= tol * np.max(np.abs(ref))


@pytest.mark.parametrize("variant", sorted(predformer.VARIANTS))
def test_official_weights_reproduce_the_official_outputs_float64(variant, x64):
    """Non-square frames, two channels, heads x dim_head != dim (binary_ts), one head without an
    output projection (full), depth 2 (triplet_sts), and the roll-out to 2T + 1 frames. The
    official position code is float32 whose sines PyTorch rounds differently in the last bit:
    hence 1e-6, not 1e-15."""
    meta, state_dict, a = load(variant)
    cfg = section(meta["model_config"], variant, dtype="float64")
    variables = convert.from_openstl(cfg, state_dict)
    assert models.count_params(variables["params"]) == meta["params"]
    cfg.out_frames = meta["out_frames"]  # 2T + 1: the first pass is the official model's output
    y = jax.jit(models.build(cfg).apply)(variables, a["x"])
    assert_relative(y[:, :cfg.in_shape[0]], a["y_eval"], 1e-6)
    assert_relative(y, a["y_rollout"], 1e-6)


def test_float32_and_checkpoint_prefixes():
    meta, state_dict, a = load("quadruplet_tsst")
    cfg = section(meta["model_config"], "quadruplet_tsst")
    for prefix in ("", "module.", "model."):
        variables = convert.from_openstl(cfg, {prefix + k: v for k, v in state_dict.items()})
        assert_relative(jax.jit(models.build(cfg).apply)(variables, a["x"].astype(np.float32)),
                        a["y_eval"], 1e-5)


def test_weights_of_another_variant_are_refused_with_their_keys():
    meta, state_dict, _ = load("quadruplet_tsst")
    cfg = section(meta["model_config"], "triplet_tst")
    with pytest.raises(ValueError, match=r"does not fit the model config.*"
                                         r"missing key 'blocks\.0\.space_transformer\.layers"):
        convert.from_openstl(cfg, state_dict)


@pytest.mark.parametrize("overrides, message", [
    (dict(variant="tsst"), r"model\.variant must be one of \['binary_st'"),
    (dict(patch_size=6), r"model 'predformer' cannot pad its frames \(its sinusoidal position "
                         r"code .*\): model\.in_shape's H and W must be multiples of 6, got "
                         r"64x64; use frames of H 60 or 66 and W 60 or 66\."),
    (dict(heads=0), r"model\.heads must be a positive int, got 0"),
    (dict(Ndepth=-1), r"model\.Ndepth must be a positive int, got -1"),
    (dict(drop_path=1.0), r"model\.drop_path must lie in \[0, 1\), got 1\.0"),
    (dict(in_shape=(10, 64, 64)), r"model\.in_shape must be four positive ints"),
])
def test_bad_config_is_one_sentence_naming_the_field(overrides, message):
    cfg = config_lib.default_model_config("predformer")
    cfg.update(overrides)
    with pytest.raises(ValueError, match=message):
        models.build(cfg)
    with pytest.raises(ValueError, match=r"model\.variant must be one of"):
        load_config_file(DATA.parents[1] / "configs" / "mmnist" / "predformer.py:tsst")


def test_equal_budget_depths_follow_the_official_table():
    depths = {v: predformer.equal_budget_ndepth(v, 6) for v in predformer.VARIANTS}
    assert depths == dict(full=24, fac_st=12, fac_ts=12, binary_st=12, binary_ts=12,
                          triplet_tst=8, triplet_sts=8, quadruplet_tsst=6, quadruplet_stts=6)
    assert [predformer.equal_budget_ndepth(v, 2) for v in ("full", "fac_ts", "triplet_sts",
                                                           "quadruplet_stts")] == [8, 4, 3, 2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from test_train import make_dataset
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("predformer") / "run"
    metrics = loop.train_and_evaluate(tiny_family_config("predformer", dataset), run)
    return run, metrics


def test_trains_evaluates_and_restores(run):
    """Two steps with dropout and drop path on, evaluation, checkpoint; the restored run gives
    the same metrics."""
    run, metrics = run
    for key in ("mse", "mae", "ssim", "psnr"):
        assert np.isfinite(metrics[key]), (key, metrics[key])
    assert {p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()} == {"2"}
    assert json.loads((run / "config.json").read_text())["model"]["variant"] == "quadruplet_tsst"
    assert train.evaluate(run)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)


def test_training_mode_is_stochastic_and_eval_is_not(run):
    predictor = predict.load(run[0])
    x = np.random.default_rng(0).uniform(size=(2, 4, 16, 16, 1)).astype(np.float32)

    @functools.partial(jax.jit, static_argnums=1)
    def apply(seed, train):
        rngs = {"dropout": jax.random.key(seed), "drop_path": jax.random.key(seed + 9)}
        return predictor.model.apply(predictor.variables, x, train=train, rngs=rngs)

    assert np.max(np.abs(apply(0, True) - apply(1, True))) > 1e-4
    np.testing.assert_array_equal(apply(0, False), apply(1, False))


def test_predict_any_horizon_export_and_frame_sizes(run, dataset, tmp_path):
    predictor = predict.load(run[0])
    clips = np.load(dataset[0])[:3, :4]
    long = predictor.predict(clips, 9)
    assert long.shape == (3, 9, 16, 16, 1) and np.all(np.isfinite(long))
    np.testing.assert_allclose(predictor.predict(clips, 3), long[:, :3], atol=1e-5)
    path = predictor.export(tmp_path / "predformer.jaxexport", horizon=9)
    np.testing.assert_allclose(predict.load_exported(path).predict(clips), long, atol=1e-5)
    # the position code numbers in_shape's tokens: smaller frames padded up, larger refused
    assert predictor.padded_size(13, 9) == (16, 16)
    assert predictor.predict(clips[..., :13, :9, :], 4).shape == (3, 4, 13, 9, 1)
    with pytest.raises(ValueError, match=r"'predformer' takes only 16x16 frames.*position code"):
        predictor.predict(np.zeros((1, 4, 20, 16, 1), np.float32), 4)


def test_convert_official_weights_into_a_workdir_then_predict(tmp_path):
    meta, state_dict, a = load("binary_st")
    config = config_lib.base_config("predformer")
    config.model.update(section(meta["model_config"], "binary_st").to_dict())
    config.data.update(name="custom", custom_path=str(tmp_path / "none.npy"))
    run = convert.convert_openstl(state_dict, config, tmp_path / "run")
    predictor = predict.load(run, normalisation={"sub": [0.0, 0.0], "div": [1.0, 1.0]})
    assert_relative(predictor.predict(a["x"].astype(np.float32), 3), a["y_eval"], 1e-5)


def test_convert_cli_from_an_official_checkpoint(tmp_path):
    """`tau-jax convert` on the official training's `latest.pth` layout ({'state_dict': ...})."""
    torch = pytest.importorskip("torch", reason="reading .pth files needs PyTorch")
    from test_train import cli, write_config_file
    meta, state_dict, a = load("quadruplet_stts")
    pth = tmp_path / "latest.pth"
    torch.save({"epoch": 3, "state_dict": {k: torch.from_numpy(v) for k, v in state_dict.items()}},
               pth)
    config = config_lib.base_config("predformer")
    config.model.update(section(meta["model_config"], "quadruplet_stts").to_dict())
    config.data.update(name="custom", custom_path=str(tmp_path / "none.npy"))
    run = tmp_path / "run"
    proc = cli("convert", f"--from-openstl={pth}",
               f"--config={write_config_file(config, tmp_path / 'pf.py')}", f"--workdir={run}")
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    predictor = predict.load(run, normalisation={"sub": [0.0, 0.0], "div": [1.0, 1.0]})
    assert_relative(predictor.predict(a["x"].astype(np.float32), 3), a["y_eval"], 1e-5)
