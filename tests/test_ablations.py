"""TAU paper ablations (model.tau_ablation) and the recipes in experiments/reproduce."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA
from tau_jax import models
from tau_jax.config import base_config, default_model_config, load_config_file
from tau_jax.data import kth
from tau_jax.train.workdir import load_config
from tau_jax.models.translators.tau import ABLATIONS, TemporalAttentionModule, se_hidden

ROOT = pathlib.Path(__file__).parents[1]
RECIPES = ROOT / "experiments" / "reproduce"
PARAM_FLOPS = json.loads((DATA / "param_flops.json").read_text())
MMNIST_WIDTHS = [640] + [512] * 7  # block widths of the MMNIST TAU translator (T*hid_S, hid_T...)


def params_of(cfg) -> dict:
    return jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))["params"]


@pytest.fixture(scope="module")
def mmnist_counts():
    """{ablation: (total params, translator params)} at the full MMNIST TAU config (shapes only)."""
    counts = {}
    for ablation in ABLATIONS:
        cfg = load_config_file(ROOT / "configs" / "mmnist" / "tau.py").model
        cfg.tau_ablation = ablation
        params = params_of(cfg)
        counts[ablation] = (models.count_params(params), models.count_params(params["translator"]))
    return counts


def test_none_is_the_exact_openstl_tau(mmnist_counts):
    assert mmnist_counts["none"][0] == PARAM_FLOPS["mmnist/tau"]["params"] == 44_656_001


def test_no_sa_removes_the_statical_attention(mmnist_counts):
    # conv0 (dw 5x5 + bias: 26d), conv_spatial (dw 7x7 + bias: 50d), conv1 (d^2 + d) per block
    removed = sum(d * d + 77 * d for d in MMNIST_WIDTHS)
    assert mmnist_counts["none"][0] - mmnist_counts["no_sa"][0] == removed == 2_569_856


def test_no_da_removes_the_dynamical_attention(mmnist_counts):
    # fc_0 (d x h) and fc_2 (h x d), no biases, per block
    removed = sum(2 * d * se_hidden(d) for d in MMNIST_WIDTHS)
    assert mmnist_counts["none"][0] - mmnist_counts["no_da"][0] == removed == 135_168


def test_conv_baseline_keeps_only_the_convolutional_mixer(mmnist_counts):
    # per block proj_1 + proj_2 (2d^2 + 2d), norm1 (2d), layer_scale_1 (d); 1x1 reductions
    # 640 -> 512 and 512 -> 640 (a*b + b) as in TAU
    blocks = sum(2 * d * d + 5 * d for d in MMNIST_WIDTHS)
    reductions = 640 * 512 + 512 + 512 * 640 + 640
    assert mmnist_counts["conv_baseline"][1] == blocks + reductions == 5_166_848
    encoder_decoder = mmnist_counts["none"][0] - mmnist_counts["none"][1]
    assert mmnist_counts["conv_baseline"][0] == encoder_decoder + 5_166_848


def tiny_config(ablation):
    cfg = default_model_config("tau")
    cfg.update(in_shape=(3, 8, 8, 1), out_frames=3, hid_S=4, hid_T=16, N_S=2, N_T=2,
               dw_impl="lax", tau_ablation=ablation)
    return cfg


@pytest.fixture(scope="module")
def tiny_runs():
    """{ablation: (variables, eval output, train output)} of a tiny TAU."""
    x = jax.random.uniform(jax.random.key(1), (2, 3, 8, 8, 1))
    runs = {}
    for ablation in ABLATIONS:
        cfg = tiny_config(ablation)
        model = models.build(cfg)
        variables = jax.jit(lambda key: models.init(cfg, key))(jax.random.key(0))

        @jax.jit
        def forward(variables, x, key):
            out = model.apply(variables, x, train=False)
            train_out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                       rngs={"drop_path": key, "dropout": key})
            return out, train_out

        runs[ablation] = (variables, *forward(variables, x, jax.random.key(2)))
    return runs


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_ablation_runs_forward(ablation, tiny_runs):
    _, out, train_out = tiny_runs[ablation]
    assert out.shape == train_out.shape == (2, 3, 8, 8, 1)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(train_out))


def test_ablations_drop_exactly_their_modules(tiny_runs):
    gating = lambda ablation: tiny_runs[ablation][0]["params"]["translator"]["enc_1"]["block"][
        "attn"]["spatial_gating_unit"]
    assert set(gating("none")) == {"conv0", "conv_spatial", "conv1", "fc_0", "fc_2"}
    assert set(gating("no_sa")) == {"fc_0", "fc_2"}
    assert set(gating("no_da")) == {"conv0", "conv_spatial", "conv1"}
    conv_block = tiny_runs["conv_baseline"][0]["params"]["translator"]["enc_1"]["block"]
    assert set(conv_block) == {"norm1", "layer_scale_1", "attn"}
    assert set(conv_block["attn"]) == {"proj_1", "proj_2"}


def test_gating_is_the_product_of_the_kept_attentions():
    # with the same weights: none = DA(u) SA(u) u, no_sa = DA(u) u, no_da = SA(u) u, neither = u
    u = jax.random.normal(jax.random.key(3), (2, 8, 8, 32))
    params = TemporalAttentionModule(dw_impl="lax").init(jax.random.key(4), u)["params"]

    def gate(statical, dynamical):
        kept = {k: v for k, v in params.items()
                if (statical and k.startswith("conv")) or (dynamical and k.startswith("fc"))}
        module = TemporalAttentionModule(statical=statical, dynamical=dynamical, dw_impl="lax")
        return module.apply({"params": kept}, u)

    np.testing.assert_allclose(gate(True, True) * u, gate(False, True) * gate(True, False),
                               rtol=1e-5, atol=1e-6)
    assert jnp.array_equal(gate(False, False), u)


def test_bad_ablation_is_one_clear_error():
    with pytest.raises(ValueError, match=r"model\.tau_ablation must be one of .*'no_sa'.*got "
                                         r"'no_attention'"):
        models.build(tiny_config("no_attention"))


def test_ablation_of_another_model_is_an_error():
    cfg = tiny_config("no_sa")
    cfg.name = "gsta"
    with pytest.raises(ValueError, match=r"model\.tau_ablation applies to model\.name 'tau'"):
        models.build(cfg)


def test_config_saved_before_the_field_is_plain_tau(tmp_path):
    """A run saved before model.tau_ablation existed loads (workdir.load_config) as plain TAU."""
    saved = base_config()
    saved.model = tiny_config("none")
    saved = json.loads(saved.to_json())
    del saved["model"]["tau_ablation"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    cfg = load_config(tmp_path).model
    assert cfg.tau_ablation == "none"
    assert models.count_params(params_of(cfg)) == models.count_params(
        params_of(tiny_config("none")))


# --- recipes ----------------------------------------------------------------------------------

# recipe: (data, model.in_shape, model.out_frames, epochs, loss.alpha, model.tau_ablation)
MMNIST = ("moving_mnist", (10, 64, 64, 1), 10, 200)
EXPECTED = {
    "mmnist_tau_200ep": MMNIST + (0.1, "none"),
    "taxibj_tau": ("taxibj", (4, 32, 32, 2), 4, 50, 0.1, "none"),
    "kth_tau_10to20": ("kth", (10, 128, 128, 1), 20, 100, 0.1, "none"),
    "kth_tau_10to40": ("kth", (10, 128, 128, 1), 40, 100, 0.1, "none"),
    "ablation_conv_baseline": MMNIST + (0.1, "conv_baseline"),
    "ablation_no_sa": MMNIST + (0.1, "no_sa"),
    "ablation_no_da": MMNIST + (0.1, "no_da"),
    "ablation_no_ddr": MMNIST + (0.0, "none"),
}


def summary(config):
    return (config.data.name, tuple(config.model.in_shape), config.model.out_frames,
            config.train.epochs, config.loss.alpha, config.model.tau_ablation)


def test_every_recipe_is_listed():
    assert sorted(p.stem for p in RECIPES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_loads_with_expected_values(name):
    config = load_config_file(RECIPES / f"{name}.py")
    assert summary(config) == EXPECTED[name]
    models.build(config.model)  # a valid model config


def test_kth_10to40_reads_the_40_frame_clips():
    config = load_config_file(RECIPES / "kth_tau_10to40.py")
    assert kth.variant(config.data) == "kth40"
    assert kth.variant(load_config_file(RECIPES / "kth_tau_10to20.py").data) == "kth20"


def test_mmnist_recipe_uses_openstls_data():
    data = load_config_file(RECIPES / "mmnist_tau_200ep.py").data
    assert data.mmnist_online and data.mmnist_digits == "idx"


@pytest.mark.parametrize("name", ["ablation_conv_baseline", "ablation_no_sa", "ablation_no_da",
                                  "ablation_no_ddr"])
def test_ablation_recipe_ablates_the_recipe_after_the_colon(name):
    # `--config experiments/reproduce/<name>.py:taxibj_tau` calls get_config("taxibj_tau")
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("taxibj_tau")
    assert summary(config) == EXPECTED["taxibj_tau"][:4] + EXPECTED[name][4:]
    assert config.optim.sched == "cosine"  # the rest is taxibj_tau's
    # the default is mmnist_tau_200ep plus the row's switch: nothing else differs
    ablated = load_config_file(RECIPES / f"{name}.py").to_dict()
    main = load_config_file(RECIPES / "mmnist_tau_200ep.py").to_dict()
    differ = {f"{section}.{k}" for section in main for k in main[section]
              if ablated[section][k] != main[section][k]}
    assert differ == {"loss.alpha" if name == "ablation_no_ddr" else "model.tau_ablation"}
