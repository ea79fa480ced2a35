"""SimVP family (TAU, gSTA, IncepU): OpenSTL parity of parameters, outputs and structure."""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import DATA, load_bundle, require_cpu_kernel
from tau_jax import models
from tau_jax.config import default_model_config, load_config_file
from tau_jax.convert import from_openstl, load_pth
from tau_jax.models.convolutions import (ConvApartBias, conv_plain_grads, conv_by_backend,
                                         conv_stride2_grads)
from tau_jax.models.group_norm import (GroupNormSiLU, depth_to_space, group_norm_silu,
                                       group_norm_silu_plain)
from tau_jax.models.layers import (depthwise_conv_lax, depthwise_conv_taps, drop_path_rates, gelu,
                                   gradient_stored)
from tau_jax.models.translators.tau import large_kernel_geometry, se_hidden

CONFIGS = pathlib.Path(__file__).parents[1] / "configs"
PARAM_FLOPS = json.loads((DATA / "param_flops.json").read_text())
OPENSTL_NAME = {"tau": "tau", "gsta": "gSTA", "incepu": "IncepU", "convmixer": "ConvMixer",
                "convnext": "ConvNeXt", "hornet": "HorNet", "mlpmixer": "MLPMixer",
                "moganet": "MogaNet", "poolformer": "Poolformer", "swin": "Swin",
                "uniformer": "Uniformer", "van": "VAN", "vit": "ViT"}  # OpenSTL's file names


def shapes_of(cfg):
    return jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))


@pytest.mark.parametrize("path", sorted(p.relative_to(CONFIGS).as_posix()
                                        for p in CONFIGS.glob("*/*.py")
                                        if p.stem in OPENSTL_NAME))
def test_param_count_equals_openstl(path):
    cfg = load_config_file(CONFIGS / path).model
    key = f"{path.split('/')[0]}/{OPENSTL_NAME[cfg.name]}"
    assert models.count_params(shapes_of(cfg)["params"]) == PARAM_FLOPS[key]["params"]


@pytest.mark.parametrize("d,expected", [(640, 7_914_240), (512, 5_086_208), (256, 1_297_920),
                                        (128, 337_664)])
def test_tau_block_param_closed_form(d, expected):
    # a TAU block of width d has 3d^2 + 2dR + 11R + 2dh + 86d parameters
    cfg = default_model_config("tau")
    cfg.update(in_shape=(1, 8, 8, d // 2), hid_S=d // 2, hid_T=d, N_S=2, N_T=2)
    block = shapes_of(cfg)["params"]["translator"]["enc_1"]["block"]
    r, h = 8 * d, se_hidden(d)
    assert models.count_params(block) == expected == 3 * d * d + 2 * d * r + 11 * r + 2 * d * h + 86 * d


def test_tau_kernel_geometry_and_se_width():
    assert large_kernel_geometry(21, 3) == ((5, 2), (7, 9))
    assert [se_hidden(d) for d in (128, 256, 512, 640, 768)] == [16] * 5
    assert [se_hidden(d) for d in (24, 32, 48, 64)] == [6, 8, 12, 16]


def test_drop_path_schedules():
    np.testing.assert_allclose(
        drop_path_rates(0.0, 8, "openstl"),
        [0.01, 0.00857, 0.00714, 0.00571, 0.00429, 0.00286, 0.00143, 0.0], atol=5e-6)
    np.testing.assert_allclose(drop_path_rates(0.1, 6, "openstl"),
                               [0.01, 0.028, 0.046, 0.064, 0.082, 0.1], atol=1e-9)
    assert drop_path_rates(0.0, 8, "linear") == [0.0] * 8
    np.testing.assert_allclose(drop_path_rates(0.1, 3, "linear"), [0.0, 0.05, 0.1])


def bundle_model(name, **overrides):
    meta, arrays, state_dict = load_bundle(name)
    t, c, h, w = meta["in_shape"]
    cfg = default_model_config("tau")
    cfg.update(name=meta["model_type"].lower(), in_shape=(t, h, w, c), out_frames=t,
               hid_S=meta["hid_S"], hid_T=meta["hid_T"], N_S=meta["N_S"], N_T=meta["N_T"],
               drop_path_schedule="linear", **overrides)  # bundles ran with DropPath off
    to_nhwc = lambda a: np.transpose(a, (0, 1, 3, 4, 2))
    return cfg, state_dict, to_nhwc(arrays["x"]), to_nhwc(arrays["y_eval"]), to_nhwc(
        arrays["y_train_bn_batchstats"])


BUNDLES = ["simvp_tau_tiny", "simvp_gsta_tiny", "simvp_incepu_tiny", "simvp_tau_tiny_ns4"]
BUNDLE_PARAMS = {"simvp_tau_tiny": 138_986, "simvp_gsta_tiny": 141_930,
                 "simvp_incepu_tiny": 182_442, "simvp_tau_tiny_ns4": 117_385}


def max_rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("dw_impl", ["lax", "taps", "kernel"])
@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_float64(name, dw_impl, x64):
    if dw_impl == "kernel":
        require_cpu_kernel()
    cfg, state_dict, x, y_eval, y_train = bundle_model(
        name, dtype="float64", param_dtype="float64", dw_impl=dw_impl)
    variables = from_openstl(cfg, state_dict)
    assert models.count_params(variables["params"]) == BUNDLE_PARAMS[name]
    model = models.build(cfg)
    assert max_rel(apply_jit(model)(variables, x), y_eval) < 1e-6
    out, _ = apply_jit(model, train=True, mutable=["batch_stats"])(variables, x)
    assert max_rel(out, y_train) < 1e-6


@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_float32(name):
    cfg, state_dict, x, y_eval, y_train = bundle_model(name)
    variables = from_openstl(cfg, state_dict)
    model = models.build(cfg)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(apply_jit(model)(variables, x), y_eval, atol=2e-5)
        out, _ = apply_jit(model, train=True, mutable=["batch_stats"])(variables, x)
    np.testing.assert_allclose(out, y_train, atol=2e-5)


def test_batchnorm_running_stats_follow_pytorch(x64):
    # PyTorch updates running_var with the unbiased batch variance, momentum 0.1.
    cfg, state_dict, x, _, _ = bundle_model("simvp_tau_tiny", dtype="float64",
                                            param_dtype="float64")
    variables = from_openstl(cfg, state_dict)
    model = models.build(cfg)
    captured = {}

    def grab_input(next_fun, args, kwargs, context):  # record the input of block 0's norm1
        module = context.module
        if module.name == "norm1" and module.parent.parent.name == "enc_0":
            captured["x"] = args[0]
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(grab_input):
        _, state = model.apply(variables, x, train=True, mutable=["batch_stats"])
    inp = np.asarray(captured["x"]).reshape(-1, captured["x"].shape[-1])
    old = variables["batch_stats"]["translator"]["enc_0"]["block"]["norm1"]
    new = state["batch_stats"]["translator"]["enc_0"]["block"]["norm1"]
    np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * inp.mean(0), rtol=1e-12)
    np.testing.assert_allclose(new["var"], 0.9 * old["var"] + 0.1 * inp.var(0, ddof=1),
                               rtol=1e-12)


def init_jit(cfg, seed=0):
    return jax.jit(lambda key: models.init(cfg, key))(jax.random.key(seed))


def apply_jit(model, **kwargs):
    """model.apply, jitted (eager op-by-op dispatch is slow on CPU)."""
    return jax.jit(lambda variables, x: model.apply(variables, x, **kwargs))


def tiny_cfg(**overrides):
    cfg = default_model_config("tau")
    cfg.update(in_shape=(3, 16, 16, 1), out_frames=3, hid_S=8, hid_T=16, N_S=2, N_T=2)
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def tiny_variables():
    """Variables of tiny_cfg(), initialised once: compiling an init takes seconds on CPU."""
    return init_jit(tiny_cfg())


@pytest.mark.parametrize("out_frames", [1, 2, 3, 7])
def test_rollout_follows_openstl(out_frames, tiny_variables):
    base = apply_jit(models.build(tiny_cfg()))
    variables = tiny_variables
    x = jax.random.uniform(jax.random.key(2), (2, 3, 16, 16, 1))
    y = apply_jit(models.build(tiny_cfg(out_frames=out_frames)))(variables, x)
    assert y.shape == (2, out_frames, 16, 16, 1)
    # OpenSTL: feed the model its own T-frame output until T' frames exist, then truncate.
    chained, frames = [], x
    for _ in range(-(-out_frames // 3)):
        frames = base(variables, frames)
        chained.append(frames)
    np.testing.assert_allclose(y, jnp.concatenate(chained, 1)[:, :out_frames], atol=1e-6)


def test_depthwise_formulations_agree_with_gradients():
    """The taps form's written-out gradients (layers._taps_backward) equal XLA's of the grouped
    convolution: 'same', 'valid' and over-padded geometries, dilations, a non-square kernel."""
    x = jax.random.normal(jax.random.key(0), (2, 11, 13, 6))
    for kh, kw, dilation, pad in [(3, 3, 1, 1), (5, 5, 1, 2), (7, 7, 3, 9), (3, 5, 2, 1),
                                  (3, 3, 1, 0), (5, 5, 2, 6)]:
        kernel = jax.random.normal(jax.random.key(kh + kw), (kh, kw, 1, 6))

        def loss(fn, x, kernel):  # noqa: B023 (uses this iteration's geometry)
            return jnp.sum(jnp.sin(fn(x, kernel, dilation, pad)))

        with jax.default_matmul_precision("highest"):
            fwd = lambda fn: jax.jit(fn, static_argnums=(2, 3))(x, kernel, dilation, pad)
            np.testing.assert_allclose(fwd(depthwise_conv_taps), fwd(depthwise_conv_lax),
                                       rtol=1e-5, atol=1e-5)
            grads = lambda fn: jax.jit(jax.grad(lambda x, k: loss(fn, x, k), (0, 1)))(x, kernel)
            g_taps, g_lax = grads(depthwise_conv_taps), grads(depthwise_conv_lax)
        for a, b in zip(g_taps, g_lax):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shuffle", [1, 2])
def test_group_norm_silu_equals_flax_with_gradients(shuffle):
    """GroupNormSiLU of x + shift (the shift being the convolution bias it folds in) against
    flax's modules, values and gradients of input, shift, scale and bias, in both its forms: the
    written-out CPU one (group_norm.group_norm_silu; with a pixel shuffle it normalises before
    shuffling) and the plain one of other platforms (SimVP's upsampling layers at shuffle 2)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(1.5, 2.0, size=(3, 5, 6, 8 * shuffle ** 2)), jnp.float32)
    shift = jnp.asarray(rng.normal(0.5, 1.0, x.shape[-1]), jnp.float32)
    params = {"scale": jnp.asarray(rng.normal(1.0, 0.3, 8), jnp.float32),
              "bias": jnp.asarray(rng.normal(0.0, 0.3, 8), jnp.float32)}
    rearrange = (lambda v: depth_to_space(v, shuffle)) if shuffle > 1 else (lambda v: v)
    weights = jnp.asarray(rng.normal(size=rearrange(x).shape), jnp.float32)
    module = GroupNormSiLU(num_groups=2, pixel_shuffle=shuffle)

    def cpu_form(p, x, shift):
        return rearrange(group_norm_silu(x, shift, p["scale"], p["bias"], 2, 1e-5, shuffle ** 2))

    def plain_form(p, x, shift):
        return group_norm_silu_plain(rearrange(x + shift), 0.0, p["scale"], p["bias"], 2, 1e-5)

    def flax_modules(p, x, shift):
        return nn.silu(nn.GroupNorm(num_groups=2, epsilon=1e-5).apply({"params": p},
                                                                      rearrange(x + shift)))

    forms = (lambda p, x, shift: module.apply({"params": p}, x, shift), cpu_form, plain_form,
             flax_modules)
    want = flax_modules(params, x, shift)
    grads = [jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a)) * weights), (0, 1, 2))(  # noqa: B023
        params, x, shift) for f in forms]
    for form, grad in zip(forms[:-1], grads[:-1]):
        np.testing.assert_allclose(form(params, x, shift), want, rtol=1e-5, atol=1e-5)
        for got, expected in zip(jax.tree.leaves(grad), jax.tree.leaves(grads[-1])):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(module.apply({"params": params}, x),
                               flax_modules(params, x, 0.0), rtol=1e-5, atol=1e-5)
    low = GroupNormSiLU(num_groups=2, pixel_shuffle=shuffle, dtype=jnp.bfloat16).apply(
        {"params": params}, x.astype(jnp.bfloat16), shift)
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(low.astype(jnp.float32), want, atol=0.05)
    bad = 7 if shuffle == 1 else 12  # not 2 groups, not 4 blocks of 2 groups
    with pytest.raises(ValueError,
                       match=f"{bad} channels do not split into {shuffle ** 2} blocks"):
        module.init(jax.random.key(0), x[..., :bad])


def test_conv_apart_bias_is_flax_conv():
    """ConvApartBias: nn.Conv's parameters (same init from the same key) and values, the bias
    returned apart."""
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    kw = dict(kernel_size=(3, 3), strides=2, padding=((1, 1), (1, 1)),
              kernel_init=nn.initializers.normal(0.02),
              bias_init=nn.initializers.normal(0.5))
    flax_conv, ours = nn.Conv(4, **kw), ConvApartBias(4, **kw)
    params = flax_conv.init(jax.random.key(1), x)
    assert jax.tree.all(jax.tree.map(np.array_equal, params, ours.init(jax.random.key(1), x)))
    y, bias = ours.apply(params, x)
    np.testing.assert_allclose(y + bias, flax_conv.apply(params, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size, kernel, pad", [((8, 8), 3, 1), ((6, 10), 5, 2), ((8, 4), 4, 1),
                                                ((6, 6), 1, 0), ((8, 8), 7, 3)])
def test_stride2_conv_gradients_equal_lax(size, kernel, pad):
    """The stride-2 convolution whose input gradient goes through its space-to-depth form
    (convolutions.conv_stride2_grads): values and gradients equal lax's for every kernel size and
    'same'-style padding it is used with."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, *size, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)) * 0.3, jnp.float32)
    padding = ((pad, pad), (pad, pad))

    def loss(conv, x, w):
        return jnp.sum(jnp.sin(conv(x, w)))

    lax_conv = lambda x, w: jax.lax.conv_general_dilated(
        x, w, (2, 2), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    got = jax.value_and_grad(functools.partial(
        loss, lambda x, w: conv_stride2_grads(x, w, padding)), (0, 1))(x, w)
    want = jax.value_and_grad(functools.partial(loss, lax_conv), (0, 1))(x, w)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_stride2_conv_falls_back_to_lax_without_a_space_to_depth_form():
    """An odd input side has no space-to-depth form: the lax convolution runs instead, same
    values."""
    x = jax.random.normal(jax.random.key(0), (1, 7, 8, 2))
    w = jax.random.normal(jax.random.key(1), (3, 3, 2, 2))
    args = ((2, 2), ((1, 1), (1, 1)))
    nhwc = dict(dimension_numbers=("NHWC", "HWIO", "NHWC"))
    conv = lambda x, w: conv_by_backend(x, w, *args, **nhwc)
    assert "custom_vjp" not in str(jax.make_jaxpr(conv)(x, w))
    assert "custom_vjp" in str(jax.make_jaxpr(conv)(x[:, :6], w))
    np.testing.assert_allclose(conv(x, w), jax.lax.conv_general_dilated(x, w, *args, **nhwc),
                               rtol=1e-6)


def test_gradient_stored_is_an_exact_identity():
    """layers.gradient_stored changes neither values nor (finite) gradients, bit for bit."""
    x = jax.random.normal(jax.random.key(0), (3, 4, 5))
    weights = jax.random.normal(jax.random.key(1), x.shape) * 1e3
    loss = lambda f: lambda x: jnp.sum(jnp.tanh(f(x) * weights))
    np.testing.assert_array_equal(gradient_stored(x), x)
    np.testing.assert_array_equal(jax.grad(loss(gradient_stored))(x), jax.grad(loss(lambda v: v))(x))
    assert jnp.isnan(jax.grad(lambda v: jnp.sum(gradient_stored(v) * jnp.nan))(x)).all()


def test_gelu_is_pytorchs_exact_form():
    """x (1 + erf(x / sqrt 2)) / 2, PyTorch's GELU, within float32 rounding of the erfc form."""
    x = jnp.linspace(-8.0, 8.0, 4001)
    np.testing.assert_allclose(gelu(x), jax.nn.gelu(x, approximate=False), atol=2e-6)
    assert gelu(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def _lax_conv(x, w, padding):
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("kernel, channels, features, padding, scan", [
    ((5, 5), 3, 3, ((2, 2), (2, 2)), True), ((3, 2), 3, 4, ((0, 2), (1, 0)), False),
    ((3, 3), 8, 8, ((1, 1), (1, 1)), True)])  # the C++ kernel gradient (channels 8k)
def test_conv_with_plain_gradients_equals_lax(kernel, channels, features, padding, scan):
    """The recurrent cells' convolution (explicit input and kernel gradients): same values and
    gradients as lax's, directly and through a scan (where its gradients matter for speed)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 6, 7, channels)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*kernel, channels, features)) * 0.2, jnp.float32)

    def loss(conv, x, w):
        if scan:  # a same-size convolution applied 3 times, as a recurrent cell is
            x = jax.lax.scan(lambda h, _: (jnp.tanh(conv(h, w, padding)), None), x, None,
                             length=3)[0]
        else:
            x = conv(x, w, padding)
        return jnp.sum(jnp.sin(x))

    got = jax.value_and_grad(functools.partial(loss, conv_plain_grads), (0, 1))(x, w)
    want = jax.value_and_grad(functools.partial(loss, _lax_conv), (0, 1))(x, w)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_drop_path_is_stochastic_in_training_only(tiny_variables):
    cfg = tiny_cfg(drop_path=0.5)
    model, variables = models.build(cfg), tiny_variables
    x = jax.random.uniform(jax.random.key(1), (4, 3, 16, 16, 1))
    train = jax.jit(lambda v, x, key: model.apply(v, x, train=True, mutable=["batch_stats"],
                                                  rngs={"drop_path": key})[0])
    run = lambda seed: train(variables, x, jax.random.key(seed))
    assert not np.allclose(run(0), run(1))
    np.testing.assert_array_equal(run(0), run(0))
    evaluate = apply_jit(model)
    np.testing.assert_array_equal(evaluate(variables, x), evaluate(variables, x))


def test_openstl_initialisation(tiny_variables):
    p = tiny_variables["params"]
    block = p["translator"]["enc_1"]["block"]
    np.testing.assert_allclose(block["layer_scale_1"], 1e-2, rtol=1e-6)
    # TemporalAttention keeps PyTorch's default U(+-1/sqrt(fan_in)) init.
    proj = block["attn"]["proj_1"]["kernel"]  # 16 -> 16: U(+-1/4), std 1/sqrt(48)
    assert float(jnp.max(jnp.abs(proj))) <= 0.25 and abs(float(jnp.std(proj)) - 0.144) < 0.015
    # MixMlp convs: N(0, sqrt(2 / fan_out)), zero bias.
    fc1 = block["mlp"]["fc1"]
    assert abs(float(jnp.std(fc1["kernel"])) - np.sqrt(2 / 128)) < 0.01
    np.testing.assert_array_equal(fc1["bias"], 0)
    # Encoder convs: N(0, 0.02), zero bias.
    enc = p["enc"]["enc_1"]["conv"]
    assert abs(float(jnp.std(enc["kernel"])) - 0.02) < 0.003
    np.testing.assert_array_equal(enc["bias"], 0)


def test_bfloat16_compute_keeps_float32_params(tiny_variables):
    cfg = tiny_cfg(dtype="bfloat16")
    model, variables = models.build(cfg), tiny_variables
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(variables))
    x = jax.random.uniform(jax.random.key(1), (2, 3, 16, 16, 1))
    y16 = apply_jit(model)(variables, x)
    y32 = apply_jit(models.build(tiny_cfg()))(variables, x)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(y16.astype(jnp.float32), y32, atol=0.05)


@pytest.mark.parametrize("overrides,message", [
    (dict(name="unet"), "Unknown model.name 'unet'"),
    (dict(N_S=3), "model.N_S must be an even number"),
    (dict(hid_S=5), "model.hid_S must be even"),
    (dict(N_T=1), "model.N_T must be >= 2"),
    (dict(out_frames=0), "model.out_frames must be >= 1"),
    (dict(dtype="float8"), "model.dtype must be one of"),
    (dict(dtype="float64"), "needs jax_enable_x64"),
    (dict(dw_impl="fft"), "model.dw_impl must be one of"),
    (dict(drop_path_schedule="cosine"), "model.drop_path_schedule must be"),
])
def test_bad_config_is_a_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        models.build(tiny_cfg(**overrides))


def test_missing_field_is_named():
    cfg = tiny_cfg().to_dict()
    del cfg["hid_T"]
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['hid_T'\]"):
        models.build(cfg)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 4, 16, 16, 1), (2, 3, 16, 16, 2)])
def test_wrong_input_shape_is_a_clear_error(shape, tiny_variables):
    model, variables = models.build(tiny_cfg()), tiny_variables
    with pytest.raises(ValueError, match=r"expects input frames of shape \(B, 3, 16, 16, 1\)"):
        model.apply(variables, jnp.zeros(shape))


def test_converter_reports_missing_extra_and_misshaped_keys():
    cfg, state_dict, *_ = bundle_model("simvp_tau_tiny")
    bad = dict(state_dict)
    del bad["dec.readout.bias"]
    bad["hid.enc.9.block.layer_scale_1"] = np.zeros(3)
    bad["enc.enc.0.conv.conv.weight"] = np.zeros((8, 1, 3, 3))
    with pytest.raises(ValueError) as err:
        from_openstl(cfg, bad)
    text = str(err.value)
    assert "missing key 'dec.readout.bias'" in text
    assert "unexpected key 'hid.enc.9.block.layer_scale_1'" in text
    assert "key 'enc.enc.0.conv.conv.weight' has shape (8, 1, 3, 3)" in text


def test_converter_rejects_a_state_dict_for_another_config():
    cfg, state_dict, *_ = bundle_model("simvp_tau_tiny")
    cfg.hid_T = 64
    with pytest.raises(ValueError, match="does not fit the model config"):
        from_openstl(cfg, state_dict)


def test_converter_accepts_lightning_prefix():
    cfg, state_dict, *_ = bundle_model("simvp_tau_tiny")
    prefixed = {f"model.{k}": v for k, v in state_dict.items()}
    a, b = from_openstl(cfg, state_dict), from_openstl(cfg, prefixed)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_load_pth_reads_an_openstl_lightning_checkpoint(tmp_path):
    torch = pytest.importorskip("torch", reason="reading .pth files needs the optional torch")
    cfg, state_dict, x, y_eval, _ = bundle_model("simvp_tau_tiny")
    path = tmp_path / "best.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": torch.from_numpy(np.asarray(v))
                                           for k, v in state_dict.items()}}, path)
    variables = from_openstl(cfg, load_pth(str(path)))
    with jax.default_matmul_precision("highest"):
        y = apply_jit(models.build(cfg))(variables, x)
    np.testing.assert_allclose(y, y_eval, atol=2e-5)
