"""OpenSTL's MetaFormer translator zoo (ConvMixer, ConvNeXt, HorNet, MLP-Mixer, MogaNet,
PoolFormer, Swin, UniFormer, VAN, ViT) in the SimVP frame: outputs equal to OpenSTL's own code on
imported weights (bundles in tests/data/openstl_bundles/zoo, float64, eval and train mode),
checkpoint buffers left out, config errors, and each translator trained, evaluated, restored,
predicted and exported on a tiny run. Parameter counts of the configs: tests/test_simvp.py."""

import json

import jax
import numpy as np
import pytest

from conftest import DATA
from test_train_families import tiny_family_config
from tau_jax import models, predict, train
from tau_jax.bench import benchmark
from tau_jax.config import base_config, default_model_config
from tau_jax.convert import from_openstl
from tau_jax.models.translators.metaformer import relative_position_index
from tau_jax.models.translators.swin import window_geometry
from tau_jax.summary import summarize
from tau_jax.train import loop

ZOO = DATA / "openstl_bundles" / "zoo"
NAMES = ("convmixer", "convnext", "hornet", "mlpmixer", "moganet", "poolformer", "swin",
         "uniformer", "van", "vit")
BUNDLES = sorted(p.stem for p in ZOO.glob("*.npz"))
WITH_DEPTHWISE = ("convmixer", "convnext", "hornet", "moganet", "uniformer", "van")


def test_every_translator_has_a_public_and_a_held_out_bundle():
    for name in NAMES:
        assert f"simvp_{name}_4x1x16x16" in BUNDLES
        assert sum(b.startswith(f"simvp_{name}_") for b in BUNDLES) >= 2, name


def load(bundle: str, **overrides):
    """(model section, state dict, x, y_eval, y_train) of a bundle, in NHWC."""
    meta = json.loads((ZOO / f"{bundle}.json").read_text())
    arrays = dict(np.load(ZOO / f"{bundle}.npz"))
    state_dict = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    t, c, h, w = meta["in_shape"]
    cfg = default_model_config(meta["model_type"])
    cfg.update(in_shape=(t, h, w, c), out_frames=t, hid_S=meta["hid_S"], hid_T=meta["hid_T"],
               N_S=meta["N_S"], N_T=meta["N_T"], mlp_ratio=meta["mlp_ratio"],
               spatio_kernel_enc=meta["spatio_kernel_enc"],
               spatio_kernel_dec=meta["spatio_kernel_dec"], dtype="float64",
               param_dtype="float64", drop_path_schedule="linear")  # bundles: DropPath off
    cfg.update(overrides)
    nhwc = lambda a: np.transpose(a, (0, 1, 3, 4, 2))
    return (cfg, state_dict, meta["n_params"], nhwc(arrays["x"]), nhwc(arrays["y_eval"]),
            nhwc(arrays["y_train_bn_batchstats"]))


def max_rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def eval_and_train_outputs(cfg, variables, x):
    """Eval-mode output and train-mode output (batch statistics), one compile."""
    model = models.build(cfg)

    @jax.jit
    def both(variables, x):
        train_out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return model.apply(variables, x), train_out

    return both(variables, x)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_openstl_weights_reproduce_openstl_outputs_float64(bundle, x64):
    cfg, state_dict, n_params, x, y_eval, y_train = load(bundle)
    variables = from_openstl(cfg, state_dict)
    assert models.count_params(variables["params"]) == n_params
    out_eval, out_train = eval_and_train_outputs(cfg, variables, x)
    assert max_rel(out_eval, y_eval) < 1e-6
    assert max_rel(out_train, y_train) < 1e-6


@pytest.mark.parametrize("name", WITH_DEPTHWISE)
def test_grouped_convolution_form_gives_the_same_outputs(name, x64):
    """dw_impl 'lax' (XLA's grouped conv, the GPU/TPU default) as well as the CPU's 'kernel'."""
    cfg, state_dict, _, x, y_eval, y_train = load(f"simvp_{name}_4x1x16x16", dw_impl="lax")
    out_eval, out_train = eval_and_train_outputs(cfg, from_openstl(cfg, state_dict), x)
    assert max_rel(out_eval, y_eval) < 1e-6 and max_rel(out_train, y_train) < 1e-6


def test_timm_checkpoint_buffers_are_left_out_and_other_keys_refused(x64):
    """A Swin checkpoint saved under timm 0.6 carries `relative_position_index` and, in the
    shifted blocks, `attn_mask` buffers: recomputable, so not imported."""
    cfg, state_dict, *_ = load("simvp_swin_4x1x16x16")
    window = window_geometry(8, 8)[0]
    with_buffers = dict(state_dict)
    for i in range(cfg.N_T):
        with_buffers[f"hid.enc.{i}.block.attn.relative_position_index"] = \
            relative_position_index(window)
    with_buffers["hid.enc.1.block.attn_mask"] = np.zeros((4, window ** 2, window ** 2))
    converted = from_openstl(cfg, with_buffers)
    plain = from_openstl(cfg, state_dict)
    jax.tree.map(np.testing.assert_array_equal, converted, plain)
    with pytest.raises(ValueError, match=r"unexpected key 'hid.enc.1.block.extra'"):
        from_openstl(cfg, dict(state_dict, **{"hid.enc.1.block.extra": np.zeros(3)}))


def test_relative_position_index_is_timms():
    # timm: for tokens i = (y1, x1), j = (y2, x2): (y1 - y2 + w - 1) * (2w - 1) + x1 - x2 + w - 1
    index = relative_position_index(3)
    assert index.shape == (9, 9) and index[0, 0] == index[4, 4] == 12
    assert index[0, 8] == (0 - 2 + 2) * 5 + 0 - 2 + 2 and index[8, 0] == 24
    assert window_geometry(16, 16) == (4, True) and window_geometry(7, 14) == (7, False)
    assert window_geometry(14, 28) == (7, True) and window_geometry(64, 64) == (4, True)
    assert window_geometry(256, 256) == (8, True) and window_geometry(3, 5) == (3, False)


def tiny(name, **overrides):
    cfg = default_model_config(name)
    cfg.update(in_shape=(4, 16, 16, 1), out_frames=4, hid_S=8, hid_T=32, N_S=2, N_T=3)
    cfg.update(overrides)
    return cfg


@pytest.mark.parametrize("name,overrides,message", [
    ("hornet", dict(hid_T=36), r"model.hid_T \(36\) and the first block's width T \* hid_S "
                               r"\(32\) must be multiples of 8 for model.name 'hornet'"),
    ("moganet", dict(in_shape=(5, 16, 16, 1), hid_S=4),
     r"T \* hid_S \(20\) .* multiples of 8 .*1:3:4 channel split"),
    ("vit", dict(hid_T=20), r"multiples of 8 for model.name 'vit' \(8 attention heads\)"),
    ("uniformer", dict(hid_T=20), r"model.hid_T \(20\) must be a multiple of 8 for model.name "
                                  r"'uniformer'"),
    ("convnext", dict(mlp_ratio=1.0), r"model.mlp_ratio must be > 1"),
])
def test_configs_no_translator_can_build_are_one_sentence(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        models.build(tiny(name, **overrides))


def test_uniformer_picks_attention_blocks_where_openstl_does():
    def attends(cfg):
        shapes = jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))["params"]
        return ["qkv" in str(shapes["translator"][f"enc_{i}"]) for i in range(cfg.N_T)]

    assert attends(tiny("uniformer", hid_T=16)) == [False, True, False]  # in != out: conv
    assert attends(tiny("uniformer")) == [False, True, True]  # T * hid_S = hid_T = 32


def test_frame_rules():
    assert models.family_of("swin").frame_rule(tiny("swin")) == (8, None)  # stride 2 x window 4
    assert models.family_of("vit").frame_rule(tiny("vit")) == (2, None)
    m, why = models.family_of("mlpmixer").frame_rule(tiny("mlpmixer"))
    assert "token-mixing MLP" in why
    assert models.padded_size(tiny("mlpmixer"), 16, 16) == (16, 16)
    with pytest.raises(ValueError, match=r"'mlpmixer' takes only 16x16 frames"):
        models.padded_size(tiny("mlpmixer"), 16, 24)


def small(name):
    config = base_config(name)
    config.model.update(in_shape=(3, 8, 8, 1), out_frames=3, hid_S=8, hid_T=16, N_S=2, N_T=3,
                        mlp_ratio=2.0, dw_impl="lax")  # 'lax' compiles faster on CPU
    return config


@pytest.mark.parametrize("name", NAMES)
def test_summary(name):
    """`tau-jax summary`: parameters by module and XLA's forward FLOPs."""
    info = summarize(small(name).model)
    shapes = jax.eval_shape(lambda: models.init(small(name).model, jax.random.key(0)))
    assert info["params"] == models.count_params(shapes["params"])
    assert info["params_by_module"]["translator"] == models.count_params(
        shapes["params"]["translator"])
    assert info["forward_flops"] > 0 and info["output_shape"] == (1, 3, 8, 8, 1)


@pytest.mark.parametrize("name", ["convmixer", "swin"])  # the step is the family's: two suffice
def test_benchmark(name):
    """`tau-jax benchmark`, our side (OpenSTL's peer: tests/test_benchmark.py)."""
    config = small(name)
    info = summarize(config.model)
    result = benchmark.run(config, batch=8, repeats=1, steps=1, warmup=1, infer_batch=8,
                           argv=["test"])["tau_jax"]
    assert result["params"] == info["params"] and np.isfinite(result["final_loss"])
    assert result["train_seq_per_s"] > 0 and result["infer_seq_per_s"] > 0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from test_train import make_dataset
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


@pytest.mark.parametrize("name", NAMES)
def test_trains_evaluates_restores_predicts_and_exports(name, dataset, tmp_path):
    config = tiny_family_config(name, dataset)
    config.model.update(hid_T=32, N_T=3, mlp_ratio=2.0, drop=0.1, drop_path=0.1)
    run = tmp_path / "run"
    metrics = loop.train_and_evaluate(config, run)
    for key in ("mse", "mae", "ssim", "psnr"):
        assert np.isfinite(metrics[key]), (key, metrics[key])
    assert json.loads((run / "config.json").read_text())["model"]["name"] == name
    assert train.evaluate(run)["mse"] == pytest.approx(metrics["mse"], rel=1e-6)
    predictor = predict.load(run)
    clips = np.load(dataset[0])[:2, :4]
    long = predictor.predict(clips, 6)
    assert long.shape == (2, 6, 16, 16, 1) and np.all(np.isfinite(long))
    path = predictor.export(tmp_path / f"{name}.jaxexport", horizon=6)
    np.testing.assert_allclose(predict.load_exported(path).predict(clips), long, atol=1e-5)
