"""PredRNN, PredRNN-V2 and ConvLSTM: OpenSTL parity (parameter counts, weight-import bundles),
causality, scheduled-sampling schedules and masks, patching, config errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import DATA, load_bundle
from tau_jax import config, models
from tau_jax.convert import from_openstl
from tau_jax.models import convolutions, recurrent
from tau_jax.models.layers import target_platform
from tau_jax.models.recurrent import cells, sampling
from tau_jax.models.recurrent import patches as rpatches
from tau_jax.models.recurrent import model as rmodel

NAMES = {"PredRNN": "predrnn", "PredRNNv2": "predrnnv2", "ConvLSTM": "convlstm"}
BUNDLE_MODELS = {"PredRNN_Model": "predrnn", "PredRNNv2_Model": "predrnnv2",
                 "ConvLSTM_Model": "convlstm"}
# dataset -> (in_shape (T, H, W, C), T', patch_size), as in OpenSTL's configs
DATASETS = {"mmnist": ((10, 64, 64, 1), 10, 4), "taxibj": ((4, 32, 32, 2), 4, 2),
            "kth": ((10, 128, 128, 1), 20, 2), "weather_t2m_5_625": ((12, 32, 64, 1), 12, 2)}


def make_cfg(name, in_shape=(3, 8, 8, 1), out_frames=3, num_hidden=(4, 4), patch_size=2,
             filter_size=3, dtype="float32", **overrides):
    cfg = config.default_model_config(name)
    cfg.in_shape, cfg.out_frames, cfg.num_hidden = tuple(in_shape), out_frames, tuple(num_hidden)
    cfg.patch_size, cfg.filter_size = patch_size, filter_size
    cfg.dtype = cfg.param_dtype = dtype
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def fake_variables(cfg, seed=0, scale=0.3):
    """Variables of the config's shapes filled with U(-scale, scale): avoids compiling the random
    initialisers (threefry), which costs seconds per model on a small CPU."""
    shapes = jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.uniform(-scale, scale, s.shape), s.dtype), shapes)


def param_count(cfg) -> int:
    shapes = jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))
    return models.count_params(shapes["params"])


def bundle_case(bundle, dtype="float64"):
    meta, arrays, state_dict = load_bundle(bundle)
    name = BUNDLE_MODELS[meta["model"]]
    cfg = make_cfg(name, (4, 16, 16, 1), 4, meta["num_hidden"], meta["patch_size"],
                   meta["filter_size"], dtype,
                   reverse_scheduled_sampling=meta["reverse_scheduled_sampling"],
                   decouple_beta=meta["decouple_beta"] or 0.0)
    mask = arrays["mask"]
    flags = mask[:, :, :1, :1, :1]
    assert np.all(mask == flags), "bundle masks are constant over each (b, step)"
    frames = np.transpose(arrays["video"], (0, 1, 3, 4, 2))  # (B, L, C, H, W) -> channels-last
    return cfg, arrays, state_dict, frames, flags[:, :, 0, 0, 0]


# ----------------------------------------------------------------------------------------------
# Parameter counts
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", sorted(DATASETS))
@pytest.mark.parametrize("model", sorted(NAMES))
def test_param_counts_match_openstl(dataset, model):
    reference = json.loads((DATA / "param_flops.json").read_text())[f"{dataset}/{model}"]["params"]
    in_shape, out_frames, p = DATASETS[dataset]
    cfg = config.default_model_config(NAMES[model])
    cfg.in_shape, cfg.out_frames, cfg.patch_size = in_shape, out_frames, p
    assert param_count(cfg) == reference


def param_count_formula(in_channels: int, num_hidden, filter_size: int, out_channels: int,
                        adapter: bool = False) -> int:
    """Closed form of the ST-LSTM stack size without layer norm: per layer conv_x 7n, conv_h 4n,
    conv_m 3n, conv_o n (from 2n) at k x k, conv_last 1x1 2n -> n; readout n_last -> C;
    PredRNN-V2's 1x1 adapter n0 -> n0."""
    total, k2 = 0, filter_size * filter_size
    for layer, n in enumerate(num_hidden):
        cin = in_channels if layer == 0 else num_hidden[layer - 1]
        total += k2 * (7 * n * cin + 4 * n * n + 3 * n * n + n * 2 * n) + 2 * n * n
    total += num_hidden[-1] * out_channels
    if adapter:
        total += num_hidden[0] ** 2
    return total


def test_param_counts_mmnist_headline_and_closed_form():
    counts = {}
    for name in ("predrnn", "predrnnv2", "convlstm"):
        counts[name] = param_count(config.default_model_config(name))
    assert counts == {"predrnn": 23_838_720, "predrnnv2": 23_855_104, "convlstm": 15_083_520}
    assert param_count_formula(16, (128,) * 4, 5, 16) == 23_838_720
    assert param_count_formula(16, (128,) * 4, 5, 16, adapter=True) == 23_855_104
    wide = config.default_model_config("convlstm")
    wide.num_hidden = (192,) * 4  # ConvLSTM-L
    assert param_count(wide) == 33_782_784


# ----------------------------------------------------------------------------------------------
# OpenSTL weight-import bundles
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bundle,n_params", [("predrnn_tiny", 62_784), ("predrnnv2_tiny", 62_848),
                                             ("convlstm_tiny", 38_784)])
def test_bundle_reproduces_openstl_float64(bundle, n_params, x64):
    cfg, arrays, state_dict, frames, mask = bundle_case(bundle)
    variables = from_openstl(cfg, state_dict)
    assert models.count_params(variables["params"]) == n_params
    assert np.array_equal(np.asarray(rpatches.reshape_patch(jnp.asarray(frames), 4)), arrays["patches"])

    next_frames, aux = models.build(cfg).apply(variables, jnp.asarray(frames),
                                               mask=jnp.asarray(mask), train=True)
    assert next_frames.shape == (2, 7, 16, 16, 1) and next_frames.dtype == jnp.float64
    ref = arrays["next_frames"]
    got = np.asarray(rpatches.reshape_patch(next_frames, 4))
    rel = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    assert rel < 1e-6, rel  # measured ~6e-16

    loss = float(recurrent.recurrent_loss(next_frames, jnp.asarray(frames), aux, cfg.decouple_beta))
    assert abs(loss - float(arrays["loss"])) <= 1e-6 * abs(float(arrays["loss"])), loss
    if cfg.name == "predrnnv2":
        assert abs(float(aux["decouple_loss"]) - 0.2834720499668114) < 1e-6 * 0.2834720499668114
    else:
        assert aux == {}


def test_bundle_float32_close():
    cfg, arrays, state_dict, frames, mask = bundle_case("predrnnv2_tiny", dtype="float32")
    variables = from_openstl(cfg, state_dict)
    next_frames, aux = models.build(cfg).apply(variables, frames.astype(np.float32), mask=mask)
    got = np.asarray(rpatches.reshape_patch(next_frames, 4))
    np.testing.assert_allclose(got, arrays["next_frames"], atol=1e-5)
    loss = recurrent.recurrent_loss(next_frames, jnp.asarray(frames, jnp.float32), aux, 0.1)
    assert abs(float(loss) - float(arrays["loss"])) < 1e-5


def test_convert_rejects_wrong_family():
    _, _, state_dict, _, _ = bundle_case("predrnnv2_tiny")
    with pytest.raises(ValueError, match="adapter"):
        from_openstl(make_cfg("predrnn", (4, 16, 16, 1), 4, (8, 8), 4, 5), state_dict)


@pytest.mark.parametrize("name", ["predrnn", "convlstm"])
def test_layer_norm_keys_and_layout(name):
    """layer_norm = 1: OpenSTL keys conv_*.1.{weight,bias} of shape (C, H/p, W/p)."""
    cfg = make_cfg(name, num_hidden=(4, 4), layer_norm=1)
    shapes = jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))["params"]
    cell = shapes["cell_list_1"]
    assert cell["conv_x_ln"]["scale"].shape == (4, 4, 4 * (7 if name == "predrnn" else 4))
    gates = ("conv_x", "conv_h", "conv_m", "conv_o") if name == "predrnn" else ("conv_x", "conv_h")
    ln_params = sum(2 * 4 * 4 * int(cell[g + "_ln"]["scale"].shape[-1]) for g in gates)
    ln_params += 2 * 16 * 4 if name == "convlstm" else 0  # conv_o LayerNorm (unused, as OpenSTL)
    assert param_count(cfg) == param_count(make_cfg(name, layer_norm=0)) + 2 * ln_params

    rng = np.random.default_rng(0)
    state_dict = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        names = [k.key for k in path]
        if names[-1] == "kernel":
            continue
        # a LayerNorm affine: PyTorch stores it (C, H, W)
        layer, gate = names[0].split("_")[-1], names[1][:-len("_ln")]
        key = f"cell_list.{layer}.{gate}.1.{'weight' if names[-1] == 'scale' else 'bias'}"
        shape = (leaf.shape[2], leaf.shape[0], leaf.shape[1])
        state_dict[key] = rng.normal(size=shape).astype(np.float32)
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        names = [k.key for k in path]
        if names[-1] != "kernel":
            continue
        o, i = leaf.shape[3], leaf.shape[2]
        if names[0].startswith("cell_list") and names[1] != "conv_last":
            key = f"cell_list.{names[0].split('_')[-1]}.{names[1]}.0.weight"
        elif names[0].startswith("cell_list"):
            key = f"cell_list.{names[0].split('_')[-1]}.conv_last.weight"
        else:
            key = f"{names[0]}.weight"
        state_dict[key] = rng.normal(size=(o, i, leaf.shape[0], leaf.shape[1])).astype(np.float32)
    variables = from_openstl(cfg, state_dict)
    ln = variables["params"]["cell_list_0"]["conv_h_ln"]["scale"]
    np.testing.assert_array_equal(np.asarray(ln),
                                  np.transpose(state_dict["cell_list.0.conv_h.1.weight"], (1, 2, 0)))
    frames = jnp.asarray(rng.uniform(size=(2, 6, 8, 8, 1)), jnp.float32)
    out, _ = models.build(cfg).apply(variables, frames)
    assert out.shape == (2, 5, 8, 8, 1) and bool(jnp.all(jnp.isfinite(out)))


# ----------------------------------------------------------------------------------------------
# Recurrence semantics
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_models():
    """name -> (model, variables) for 3 -> 3 frames of 8x8x1, patch 2, two layers of width 4."""
    out = {}
    for i, name in enumerate(("predrnn", "predrnnv2", "convlstm")):
        cfg = make_cfg(name, reverse_scheduled_sampling=0)
        out[name] = (models.build(cfg), fake_variables(cfg, i))
    return out


@pytest.mark.parametrize("name", ["predrnn", "predrnnv2", "convlstm"])
def test_causality(name, tiny_models):
    model, variables = tiny_models[name]
    apply = jax.jit(lambda f, m: model.apply(variables, f, mask=m)[0])
    rng = np.random.default_rng(1)
    frames = jnp.asarray(rng.uniform(size=(2, 6, 8, 8, 1)), jnp.float32)
    for mask in (jnp.ones((2, 2)), jnp.zeros((2, 2)), jnp.asarray([[1.0, 0.0], [0.0, 1.0]])):
        base = np.asarray(apply(frames, mask))
        for t in range(1, 6):  # change frames t.. ; predictions 0..t-1 (of frames 1..t) must not move
            changed = frames.at[:, t:].add(jnp.asarray(rng.normal(size=frames[:, t:].shape),
                                                       jnp.float32))
            out = np.asarray(apply(changed, mask))
            np.testing.assert_array_equal(out[:, :t], base[:, :t])
            if t < 3 or (t < 5 and bool(jnp.all(mask[:, t - 3] == 1))):  # frame t fed: pred. t moves
                assert not np.allclose(out[:, t], base[:, t])


def test_inference_masks_and_inputs_only(tiny_models):
    model, variables = tiny_models["predrnn"]
    rss = models.build(make_cfg("predrnn", reverse_scheduled_sampling=1))
    rng = np.random.default_rng(2)
    frames = jnp.asarray(rng.uniform(size=(2, 6, 8, 8, 1)), jnp.float32)
    ss_out, _ = model.apply(variables, frames, mask=jnp.zeros((2, 2)))
    rss_out, _ = rss.apply(variables, frames, mask=sampling.inference_mask(2, 3, 3, reverse=True))
    default_out, _ = rss.apply(variables, frames)
    inputs_only, _ = model.apply(variables, frames[:, :3])
    np.testing.assert_allclose(rss_out, ss_out, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(default_out, rss_out)
    np.testing.assert_array_equal(inputs_only, ss_out)
    np.testing.assert_array_equal(np.asarray(sampling.inference_mask(2, 3, 3, True)), [[1, 1, 0, 0]] * 2)
    # standard sampling: the input-phase predictions do not depend on the mask
    teacher, _ = model.apply(variables, frames, mask=jnp.ones((2, 2)))
    np.testing.assert_array_equal(teacher[:, :3], ss_out[:, :3])
    assert not np.allclose(teacher[:, 3:], ss_out[:, 3:])


def test_gradients_finite_and_unused_convlstm_params(tiny_models):
    for name in ("predrnnv2", "convlstm"):
        model, variables = tiny_models[name]
        # predrnnv2: zero frames give zero increments, where the decoupling norm must not give NaN
        frames = jnp.zeros((2, 6, 8, 8, 1)) if name == "predrnnv2" else jnp.asarray(
            np.random.default_rng(4).uniform(size=(2, 6, 8, 8, 1)), jnp.float32)

        def loss_fn(params):
            out, aux = model.apply({"params": params}, frames, mask=jnp.ones((2, 2)), train=True)
            return recurrent.recurrent_loss(out, frames + 0.5, aux, 0.1)

        grads = jax.jit(jax.grad(loss_fn))(variables["params"])
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
        if name == "convlstm":
            for layer in ("cell_list_0", "cell_list_1"):
                assert not np.any(grads[layer]["conv_o"]["kernel"])
                assert not np.any(grads[layer]["conv_last"]["kernel"])
                assert np.any(grads[layer]["conv_x"]["kernel"])


def test_remat_changes_memory_not_values(tiny_models):
    """model.remat recomputes each time step in the backward pass: same loss and gradients."""
    _, variables = tiny_models["predrnnv2"]
    frames = jnp.asarray(np.random.default_rng(5).uniform(size=(2, 6, 8, 8, 1)), jnp.float32)

    def loss_and_grads(remat):
        model = models.build(make_cfg("predrnnv2", reverse_scheduled_sampling=0, remat=remat))

        def loss_fn(params):
            out, aux = model.apply({"params": params}, frames, mask=jnp.ones((2, 2)), train=True)
            return recurrent.recurrent_loss(out, frames, aux, 0.1)

        return jax.jit(jax.value_and_grad(loss_fn))(variables["params"])

    (loss, grads), (loss_r, grads_r) = loss_and_grads(False), loss_and_grads(True)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           grads_r, grads)


def test_cells_use_the_explicit_gradient_convolution_on_cpu(tiny_models):
    """On CPU the cells' convolutions are `convolutions.conv_plain_grads` (a custom VJP): XLA:CPU's
    own gradient convolutions inside the scan are 10-40x slower."""
    model, variables = tiny_models["predrnn"]
    frames = jnp.zeros((1, 6, 8, 8, 1))
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, frames, mask=jnp.ones((1, 2)))[0])(
        variables))
    assert jax.default_backend() == "cpu" and "custom_vjp_call" in jaxpr


@pytest.mark.parametrize("c", [3, 8])
def test_collected_kernel_gradients_are_the_per_step_ones(c):
    """The pairing convolutions.conv_collecting_kernel_grad / kernel_grad_collector (kernel
    gradients summed over a scan after it) gives lax's gradients, float32 and bfloat16; with 8
    channels the C++ kernel gradient reads the collected packs in place."""
    steps, b, h = 5, 2, 6
    pad = ((1, 1), (1, 1))
    kernel = jax.random.normal(jax.random.key(0), (3, 3, c, c)) * 0.3
    xs = jax.random.normal(jax.random.key(1), (steps, b, h, h, c))

    def loss(kernel, collect, dtype):
        k = kernel.astype(dtype)
        stacked = convolutions.kernel_grad_collector(k, (steps, b, h, h), dtype, pad)
        flipped = jax.lax.stop_gradient(convolutions.flip_kernel(k))

        def body(state, inputs):
            x, slots = inputs
            if collect:
                slot = convolutions.CollectorSlot(*slots, flipped)
                y = convolutions.conv_collecting_kernel_grad(state + x, k, slot, pad)
            else:
                y = jax.lax.conv_general_dilated(state + x, k, (1, 1), pad,
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return jnp.tanh(y), y

        _, ys = jax.lax.scan(body, jnp.zeros((b, h, h, c), dtype), (xs.astype(dtype), stacked))
        return jnp.sum(jnp.square(ys.astype(jnp.float32)))

    for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 5e-2)):
        want = jax.value_and_grad(loss)(kernel, False, dtype)
        got = jax.value_and_grad(loss)(kernel, True, dtype)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=tol, atol=tol * float(jnp.abs(want[1]).max()))


@pytest.mark.parametrize("name", ["predrnnv2", "mim"])
def test_training_pass_collects_kernel_gradients_on_cpu(name):
    """A CPU training pass (train=True) computes the cells' k x k kernel gradients after the scan;
    loss and every gradient equal the per-step computation's (train=False)."""
    cfg = make_cfg(name, num_hidden=(4, 4, 4) if name == "mim" else (4, 4))
    model, variables = models.build(cfg), fake_variables(cfg)
    frames = jnp.asarray(np.random.default_rng(6).uniform(size=(2, 6, 8, 8, 1)), jnp.float32)
    mask = jnp.full((2, model.num_mask_steps), 0.5)

    def loss_fn(params, train):
        out, aux = model.apply({"params": params}, frames, mask=mask, train=train)
        return recurrent.recurrent_loss(out, frames, aux, 0.1)

    (loss, grads), (loss_c, grads_c) = (jax.value_and_grad(loss_fn)(variables["params"], t)
                                        for t in (False, True))
    np.testing.assert_allclose(loss_c, loss, rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           grads_c, grads)


@pytest.mark.parametrize("name,collected", [("predrnn", 8), ("predrnnv2", 8), ("convlstm", 4),
                                            ("predrnnpp", 12), ("mim", 4 + 2 * 5 + 2 * 2)])
def test_which_convolutions_collect(name, collected):
    """Every k x k gate convolution of every cell (its `step_convs`) collects, in CPU training
    passes only: not in eval passes, nor in programs traced for TPU."""
    cfg = make_cfg(name, num_hidden=(4, 4, 4) if name == "mim" else (4, 4))
    model, variables = models.build(cfg), fake_variables(cfg)
    frames, mask = jnp.zeros((1, 6, 8, 8, 1)), jnp.ones((1, model.num_mask_steps))

    def collectors(train):
        jaxpr = jax.make_jaxpr(lambda v: model.apply(v, frames, mask=mask, train=train)[0])(variables)
        return str(jaxpr).count("kernel_grad_collector")

    assert collectors(True) == collected and collectors(False) == 0
    with target_platform("tpu"):
        assert collectors(True) == 0


def test_compiler_options_follow_the_family_and_platform():
    """The convolution families compile CPU programs with YNNPACK for products and reductions
    (Eigen's convolutions); other families and programs traced for TPU get XLA's defaults."""
    eigen = {"xla_cpu_experimental_ynn_fusion_type":
             "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
    assert models.compiler_options(make_cfg("predrnn")) == eigen
    assert models.compiler_options(models.default_config("tau")) == eigen
    assert models.compiler_options(models.default_config("predformer")) is None
    with target_platform("tpu"):
        assert models.compiler_options(make_cfg("predrnn")) is None
    assert not models._xla_takes((("xla_cpu_experimental_ynn_fusion_type", "NO_SUCH_TYPE"),))


def test_decouple_term_properties():
    rng = np.random.default_rng(3)
    a = jnp.asarray(rng.normal(size=(2, 4, 4, 3)))
    assert abs(float(cells.decouple_term(a, 2.5 * a)) - 1.0) < 1e-6
    assert abs(float(cells.decouple_term(a, -a)) - 1.0) < 1e-6
    b = jnp.asarray(rng.normal(size=(2, 4, 4, 3)))
    value = float(cells.decouple_term(a, b))
    assert 0.0 <= value <= 1.0
    assert abs(float(cells.decouple_term(3.0 * a, 0.5 * b)) - value) < 1e-6
    checker = jnp.asarray(np.indices((4, 4)).sum(0) % 2 * 2.0 - 1.0)[None, :, :, None]
    ones = jnp.ones((1, 4, 4, 1))
    assert abs(float(cells.decouple_term(ones, checker))) < 1e-7  # orthogonal spatial maps


def test_bfloat16_compute():
    cfg = make_cfg("predrnnv2", dtype="bfloat16")
    cfg.param_dtype = "float32"
    variables = fake_variables(cfg)
    out, aux = models.build(cfg).apply(variables, jnp.ones((1, 6, 8, 8, 1)), mask=jnp.zeros((1, 4)))
    assert out.dtype == jnp.bfloat16 and aux["decouple_loss"].dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# Patching
# ----------------------------------------------------------------------------------------------

def test_reshape_patch_order_and_roundtrip():
    p, c = 2, 3
    x = jnp.arange(2 * 1 * 4 * 6 * c, dtype=jnp.float32).reshape(2, 1, 4, 6, c)
    patches = rpatches.reshape_patch(x, p)
    assert patches.shape == (2, 1, 2, 3, p * p * c)
    for r, col, pr_, pc, ch in [(0, 0, 0, 0, 0), (1, 2, 1, 0, 2), (1, 1, 0, 1, 1), (0, 2, 1, 1, 2)]:
        assert patches[1, 0, r, col, (pr_ * p + pc) * c + ch] == x[1, 0, r * p + pr_, col * p + pc, ch]
    np.testing.assert_array_equal(rpatches.reshape_patch_back(patches, p), x)


# ----------------------------------------------------------------------------------------------
# Scheduled sampling
# ----------------------------------------------------------------------------------------------

def test_standard_schedule_values():
    assert sampling.ss_eta(0) == pytest.approx(0.99998, abs=1e-12)
    assert sampling.ss_eta(24_999) == pytest.approx(0.5, abs=1e-12)
    assert sampling.ss_eta(49_999) == pytest.approx(0.0, abs=1e-12)
    assert sampling.ss_eta(50_000) == 0.0 and sampling.ss_eta(10 ** 6) == 0.0
    assert sampling.ss_eta(10, scheduled_sampling=False) == 0.0
    values = [float(sampling.ss_eta(i)) for i in range(0, 60_000, 1000)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    # the same numbers inside jit (float32)
    assert float(jax.jit(sampling.ss_eta)(jnp.asarray(24_999))) == pytest.approx(0.5, abs=1e-6)


def test_reverse_schedule_values():
    r, e = sampling.rss_eta(30_000)
    assert r == pytest.approx(1 - 0.5 * np.exp(-1), abs=1e-12) and r == pytest.approx(0.816060, abs=1e-6)
    assert e == pytest.approx(0.4, abs=1e-12)
    assert sampling.rss_eta(10_000) == (0.5, 0.5)
    assert sampling.rss_eta(25_000) == pytest.approx((0.5, 0.5), abs=1e-12)  # continuous at step 1
    assert sampling.rss_eta(50_000) == (1.0, 0.0) and sampling.rss_eta(80_000) == (1.0, 0.0)
    r_j, e_j = jax.jit(sampling.rss_eta)(jnp.asarray(30_000))
    assert float(r_j) == pytest.approx(0.816060, abs=1e-6) and float(e_j) == pytest.approx(0.4, abs=1e-6)
    rs, es = zip(*[sampling.rss_eta(i) for i in range(0, 60_000, 500)])
    assert all(a <= b for a, b in zip(rs, rs[1:])) and all(a >= b for a, b in zip(es, es[1:]))


def test_sample_mask():
    key = jax.random.key(0)
    draw = jax.jit(sampling.sample_mask, static_argnums=(2, 3, 4, 5))
    m = draw(key, 24_999, 4000, 10, 10, False)
    assert m.shape == (4000, 9) and set(np.unique(np.asarray(m))) <= {0.0, 1.0}
    assert abs(float(m.mean()) - 0.5) < 0.02
    np.testing.assert_array_equal(draw(key, 24_999, 4000, 10, 10, False), m)  # deterministic
    assert not np.any(draw(key, 50_000, 4000, 10, 10, False))
    assert np.all(draw(key, -1, 4000, 10, 10, False) == 1)  # eta = 1 before the first step
    r = draw(key, 30_000, 4000, 10, 10, True)
    assert r.shape == (4000, 18)
    assert abs(float(r[:, :9].mean()) - 0.816060) < 0.02 and abs(float(r[:, 9:].mean()) - 0.4) < 0.02
    r = draw(key, 50_000, 4000, 10, 10, True)  # r_eta = 1 on the 9 input positions, eta = 0 after
    np.testing.assert_array_equal(r, sampling.inference_mask(4000, 10, 10, True))
    cfg = config.default_model_config("predrnnv2")
    np.testing.assert_array_equal(sampling.mask_from_config(cfg, key, 30_000, 4000),
                                  draw(key, 30_000, 4000, 10, 10, True))


# ----------------------------------------------------------------------------------------------
# Interface and errors
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["predrnn", "predrnnv2", "convlstm"])
def test_example_inputs(name):
    cfg = make_cfg(name, reverse_scheduled_sampling=int(name == "predrnnv2"))
    inputs = models.example_inputs(cfg)
    assert inputs["frames"].shape == (1, 6, 8, 8, 1)
    assert inputs["mask"].shape == ((1, 4) if name == "predrnnv2" else (1, 2))
    shapes = jax.eval_shape(lambda: models.build(cfg).init(jax.random.key(0), **inputs))
    out, aux = jax.eval_shape(lambda v: models.build(cfg).apply(v, **inputs, train=True), shapes)
    assert out.shape == (1, 5, 8, 8, 1)
    assert set(aux) == ({"decouple_loss"} if name == "predrnnv2" else set())


@pytest.mark.parametrize("overrides,match", [
    (dict(num_hidden=()), "num_hidden"),
    (dict(num_hidden=(4, 0)), "num_hidden"),
    (dict(num_hidden=(4, 8)), "one width for every layer"),
    (dict(num_hidden="a,b"), "num_hidden"),
    (dict(filter_size=4), "filter_size"),
    (dict(stride=2), "stride"),
    (dict(out_frames=0), "out_frames"),
    (dict(reverse_scheduled_sampling=2), "reverse_scheduled_sampling"),
    (dict(patch_size=0), "patch_size"),
])
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        models.build(make_cfg("predrnn", **overrides))


def test_config_variants_accepted():
    assert isinstance(models.build(make_cfg("convlstm", num_hidden=(4, 8))), nn.Module)
    assert recurrent.parse_num_hidden("4,4") == (4, 4)  # OpenSTL's string form
    cfg = make_cfg("predrnn")
    del cfg["decouple_beta"]
    with pytest.raises(ValueError, match="decouple_beta"):
        models.build(cfg)


@pytest.mark.parametrize("frames_shape,mask_shape,match", [
    ((2, 6, 8, 8, 1), (2, 3), r"mask must have shape \(B, M\) = \(2, 2\)"),
    ((2, 6, 8, 8, 1), (2, 2, 4, 4, 4), "mask must have shape"),
    ((2, 5, 8, 8, 1), (2, 2), "frames must be"),
    ((2, 3, 8, 8, 1), (2, 2), "frames must be"),
    ((2, 6, 8, 8, 2), (2, 2), "frames must be"),
])
def test_call_errors(frames_shape, mask_shape, match, tiny_models):
    model, variables = tiny_models["predrnn"]
    with pytest.raises(ValueError, match=match):
        model.apply(variables, jnp.zeros(frames_shape), mask=jnp.zeros(mask_shape))


# ----------------------------------------------------------------------------------------------
# Shipped config files
# ----------------------------------------------------------------------------------------------

CONFIG_FILES = [(ds, model) for ds in ("mmnist", "taxibj", "kth") for model in sorted(NAMES)]


@pytest.mark.parametrize("dataset,model", CONFIG_FILES)
def test_config_files_match_openstl(dataset, model):
    """configs/<dataset>/<model>.py: OpenSTL's parameter count (shapes only, nothing allocated),
    the dataset's frame counts and patch size, and the §6.7 learning rate / schedule."""
    cfg = config.load_config_file(DATA.parents[1] / "configs" / dataset / f"{NAMES[model]}.py")
    reference = json.loads((DATA / "param_flops.json").read_text())[f"{dataset}/{model}"]["params"]
    assert cfg.model.name == NAMES[model]
    assert param_count(cfg.model) == reference
    in_shape, out_frames, p = DATASETS[dataset]
    assert tuple(cfg.model.in_shape) == in_shape and cfg.model.out_frames == out_frames
    assert (cfg.data.in_frames, cfg.data.out_frames) == (in_shape[0], out_frames)
    assert cfg.model.patch_size == p and tuple(cfg.model.num_hidden) == (128,) * 4
    lr = {"taxibj": {"PredRNN": 1e-4}, "kth": {}}.get(dataset, {}).get(
        model, 1e-3 if dataset == "kth" else 5e-4)
    assert cfg.optim.lr == lr
    assert cfg.optim.sched == ("cosine" if dataset == "taxibj" else "onecycle")
    assert cfg.model.reverse_scheduled_sampling == int(model == "PredRNNv2")
    if model == "PredRNNv2":
        assert cfg.model.decouple_beta == (0.01 if dataset == "kth" else 0.1)
    with pytest.raises(AttributeError):  # the model section stays locked
        cfg.model.hid_S = 8


# ----------------------------------------------------------------------------------------------
# Inference at any horizon
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_model():
    """T = 3 -> T' = 2 (so a rolled-on window mixes inputs and predictions), 8x8x1, patch 2."""
    cfg = make_cfg("predrnn", out_frames=2)
    return models.build(cfg), fake_variables(cfg, 7)


def _inputs(seed, t=3):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=(2, t, 8, 8, 1)), jnp.float32)


def test_rollout_horizons(tiny_models):
    model, variables = tiny_models["predrnn"]  # T = T' = 3
    x = _inputs(3)
    own = np.asarray(model.apply(variables, x)[0][:, -3:])
    np.testing.assert_array_equal(np.asarray(rmodel.rollout(model, variables, x, 3)), own)
    np.testing.assert_array_equal(np.asarray(rmodel.rollout(model, variables, x, 2)), own[:, :2])
    long = np.asarray(rmodel.rollout(model, variables, x, 8))  # 3 passes, the last one truncated
    assert long.shape == (2, 8, 8, 8, 1) and np.all(np.isfinite(long))
    np.testing.assert_array_equal(long[:, :3], own)
    # pass 2 is the model's own prediction from its pass-1 frames, pass 3 from pass 2's
    second = np.asarray(model.apply(variables, jnp.asarray(own))[0][:, -3:])
    np.testing.assert_allclose(long[:, 3:6], second, rtol=0, atol=1e-6)
    third = np.asarray(model.apply(variables, jnp.asarray(second))[0][:, -3:])
    np.testing.assert_allclose(long[:, 6:], third[:, :2], rtol=0, atol=1e-6)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="horizon must be a positive int"):
            rmodel.rollout(model, variables, x, bad)
    with pytest.raises(ValueError, match="inputs must be"):
        rmodel.rollout(model, variables, jnp.zeros((2, 6, 8, 8, 1)), 3)


def test_rollout_window_and_causality(short_model):
    model, variables = short_model  # T = 3, T' = 2
    x = _inputs(4)
    roll = jax.jit(lambda v, inp: rmodel.rollout(model, v, inp, 7))
    base = np.asarray(roll(variables, x))
    assert base.shape == (2, 7, 8, 8, 1)
    # same frames whatever the horizon (jitted or not)
    for h in (1, 3, 5):
        np.testing.assert_allclose(np.asarray(rmodel.rollout(model, variables, x, h)), base[:, :h],
                                   rtol=0, atol=1e-6)
    # pass 2's window is the last T frames known: input frame 2 and the two pass-1 predictions
    window = jnp.concatenate([x[:, 2:], jnp.asarray(base[:, :2])], axis=1)
    np.testing.assert_allclose(base[:, 2:4], np.asarray(model.apply(variables, window)[0][:, -2:]),
                               rtol=0, atol=1e-6)
    # causality: a rolled-out frame depends on its own sample's inputs only (the other sample's
    # frames do not move), and a change confined to the last input reaches every rolled-out frame
    # (through the windows of predictions)
    changed = np.asarray(roll(variables, x.at[1, 2].add(1.0)))
    np.testing.assert_array_equal(changed[0], base[0])
    assert all(not np.allclose(changed[1, k], base[1, k]) for k in range(7))
