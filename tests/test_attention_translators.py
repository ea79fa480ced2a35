"""TimeSformer and TPS translators (SimVP frame): the properties of temporal_modules.md section 4.

Block-level tests use random parameters filled in from `jax.eval_shape` (no init compile, and no
zero-initialised weight can hide a bug); the SimVP-level tests initialise each model once.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from scipy.special import erf

from tau_jax import models
from tau_jax.config import base_config, default_model_config, load_config_file
from tau_jax.losses import tau_loss
from tau_jax.train.sharding import MIN_SHARDED_SIZE, make_mesh, tree_shardings
from tau_jax.models.attention import dot_product_attention, patchify, unpatchify
from tau_jax.models.translators.timesformer import SpaceTimeAttention, TimeSformer, TimeSformerBlock
from tau_jax.models.translators.tps import (PATTERN_C, TPS, TPSBlock, channel_shift, patch_shift,
                                relative_position_index, shift_offsets)

CONFIGS = pathlib.Path(__file__).parents[1] / "configs"


def rbg(seed=0):
    return jax.random.key(seed, impl="rbg")  # compiles much faster than threefry on CPU


def random_variables(module, *args, seed=0, scale=0.3):
    """Variables of `module` with every parameter drawn N(0, scale^2), from eval_shape only."""
    shapes = nn.meta.unbox(jax.eval_shape(lambda: module.init(rbg(), *args)))
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    rng = np.random.default_rng(seed)
    return treedef.unflatten([jnp.asarray(rng.normal(0, scale, s.shape), s.dtype) for s in leaves])


def apply_jit(module, **kwargs):
    return jax.jit(lambda variables, *args: module.apply(variables, *args, **kwargs))


def normal(shape, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def tiny_cfg(name, **overrides):
    cfg = default_model_config(name)
    cfg.update(in_shape=(4, 16, 16, 1), out_frames=4, hid_S=8, hid_T=32, N_S=2, N_T=2,
               num_heads=4, window_size=4)
    cfg.update(overrides)
    return cfg


# ----------------------------------------------------------------------------------------------
# TimeSformer
# ----------------------------------------------------------------------------------------------

D, HEADS = 16, 2
TOKENS = (2, 3, 6, D)  # (B, T, N, D)


@pytest.fixture(scope="module")
def divided_block():
    block = TimeSformerBlock("divided", HEADS)
    return block, random_variables(block, jnp.zeros(TOKENS)), apply_jit(block)


def test_divided_block_with_zero_temporal_fc_is_a_per_frame_space_block(divided_block):
    _, variables, run = divided_block
    x = normal(TOKENS)
    params = variables["params"]
    zeroed = dict(params, temporal=dict(params["temporal"]))
    zeroed["temporal"]["fc"] = jax.tree_util.tree_map(jnp.zeros_like, params["temporal"]["fc"])
    out = run({"params": zeroed}, x)

    space_params = {"params": {k: v for k, v in params.items() if k != "temporal"}}
    run_space = apply_jit(TimeSformerBlock("space", HEADS))
    np.testing.assert_allclose(out, run_space(space_params, x), atol=1e-5)
    # with the temporal linear switched on, frames do interact
    assert np.max(np.abs(run(variables, x) - out)) > 1e-2


@pytest.mark.parametrize("over", ["time", "space", "joint"])
def test_attention_mixes_only_along_its_axis(over, divided_block):
    _, variables, _ = divided_block
    sub = "temporal" if over == "time" else "attn"
    module = SpaceTimeAttention(over, HEADS)
    params = dict(variables["params"][sub])
    if over == "time":  # make the temporal residual non-zero
        params["fc"] = jax.tree_util.tree_map(lambda a: a + 0.3, params["fc"])
    x = normal(TOKENS)
    t0, n0 = 1, 2
    x2 = x.at[:, t0, n0].add(normal((D,), seed=7))  # not constant: LayerNorm would remove it
    run = apply_jit(module, train=False)
    changed = np.max(np.abs(run({"params": params}, x2) - run({"params": params}, x)),
                     axis=(0, 3)) > 1e-6  # (T, N)
    t_idx, n_idx = np.meshgrid(np.arange(TOKENS[1]), np.arange(TOKENS[2]), indexing="ij")
    if over == "time":
        expected = n_idx == n0   # the perturbed location, every frame
    elif over == "space":
        expected = t_idx == t0   # the perturbed frame, every location
    else:
        expected = np.ones_like(changed)
    np.testing.assert_array_equal(changed, expected)


def test_frames_permute_with_the_block_and_the_time_embedding_breaks_it(divided_block):
    _, variables, run = divided_block
    x = normal(TOKENS)
    perm = np.array([2, 0, 1])
    np.testing.assert_allclose(run(variables, x)[:, perm], run(variables, x[:, perm]), atol=1e-5)

    z = normal((1, 3, 4, 4, 8))
    model = TimeSformer(hid_T=D, N_T=1, num_heads=HEADS)
    tv = random_variables(model, z)
    run = apply_jit(model)
    assert np.max(np.abs(run(tv, z)[:, perm] - run(tv, z[:, perm]))) > 1e-3
    tv["params"]["time_embed"] = jnp.zeros_like(tv["params"]["time_embed"])
    np.testing.assert_allclose(run(tv, z)[:, perm], run(tv, z[:, perm]), atol=1e-5)


def test_joint_with_one_frame_equals_space(divided_block):
    _, variables, _ = divided_block
    params = {k: v for k, v in variables["params"].items() if k != "temporal"}
    x = normal((2, 1, 6, D))
    np.testing.assert_allclose(apply_jit(TimeSformerBlock("joint", HEADS))({"params": params}, x),
                               apply_jit(TimeSformerBlock("space", HEADS))({"params": params}, x),
                               atol=1e-5)


def test_patchify_round_trips():
    z = normal((2, 3, 8, 12, 5))
    for p in (1, 2, 4):
        tokens = patchify(z, p)
        assert tokens.shape == (2, 3, 8 // p, 12 // p, p * p * 5)
        np.testing.assert_array_equal(unpatchify(tokens, p, 5), z)
    # channel order (row-in-patch, col-in-patch, c)
    np.testing.assert_array_equal(patchify(z, 2)[0, 0, 1, 2, 5:10], z[0, 0, 2, 5])


# ----------------------------------------------------------------------------------------------
# TPS: the shifts
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t,ws,channels", [(1, 4, None), (3, 2, None), (4, 7, 6), (10, 8, None),
                                           (9, 5, 3), (20, 3, None)])
def test_patch_shift_then_shift_back_is_identity(t, ws, channels):
    x = normal((2, t, 3, ws * ws, 8))
    shifted = patch_shift(x, ws, channels=channels)
    np.testing.assert_array_equal(patch_shift(shifted, ws, inverse=True, channels=channels), x)
    np.testing.assert_array_equal(patch_shift(patch_shift(x, ws, True, channels), ws, False,
                                              channels), x)


def test_patch_shift_follows_pattern_c():
    # the reference's 7x7 window: class (row mod 3, col mod 3) -> source-frame offset
    off = shift_offsets(7).reshape(7, 7)
    assert off[0, 0] == 4 and off[1, 1] == 0 and off[2, 2] == -4 and off[6, 6] == 4
    assert off[4, 5] == PATTERN_C[1, 2] == -3 and off[3, 1] == -1
    t, ws = 10, 7
    x = np.asarray(normal((2, t, 2, ws * ws, 4)))
    out = np.asarray(patch_shift(x, ws))
    flat = shift_offsets(ws)
    for tt in range(t):
        for p in range(ws * ws):
            np.testing.assert_array_equal(out[:, tt, :, p], x[:, (tt + flat[p]) % t, :, p])
    centre = [p for p in range(ws * ws) if flat[p] == 0]
    np.testing.assert_array_equal(out[:, :, :, centre], x[:, :, :, centre])
    constant = np.broadcast_to(x[:, :1], x.shape)  # constant in time: a fixed point
    np.testing.assert_array_equal(patch_shift(constant, ws), constant)
    np.testing.assert_array_equal(channel_shift(constant, 2, 1), constant)
    # partial shift: only the first `channels` channels move
    part = np.asarray(patch_shift(x, ws, channels=2))
    np.testing.assert_array_equal(part[..., :2], out[..., :2])
    np.testing.assert_array_equal(part[..., 2:], x[..., 2:])


def test_channel_shift_semantics():
    t, heads, c_h, fold = 5, 2, 8, 1
    x = normal((2, t, 3, 4, heads * c_h))
    out = np.asarray(channel_shift(x, heads, fold)).reshape(2, t, 3, 4, heads, c_h)
    xr = np.asarray(x).reshape(out.shape)
    np.testing.assert_array_equal(out[:, 1:, ..., :fold], xr[:, :-1, ..., :fold])        # from t-1
    np.testing.assert_array_equal(out[:, :-1, ..., fold:2 * fold], xr[:, 1:, ..., fold:2 * fold])
    np.testing.assert_array_equal(out[:, 0, ..., :fold], xr[:, 0, ..., :fold])            # boundary
    np.testing.assert_array_equal(out[:, -1, ..., fold:2 * fold], xr[:, -1, ..., fold:2 * fold])
    np.testing.assert_array_equal(out[..., 2 * fold:], xr[..., 2 * fold:])
    moved = np.mean(out[:, 1:-1] != xr[:, 1:-1])
    assert moved == pytest.approx(2 * fold / c_h) == 0.25
    np.testing.assert_array_equal(channel_shift(x, heads, 0), x)


def test_shifts_are_index_moves_only():
    x = normal((2, 4, 3, 16, 8))
    for fn in (lambda a: patch_shift(a, 4), lambda a: patch_shift(a, 4, True, 4),
               lambda a: channel_shift(a, 2, 1)):
        text = str(jax.make_jaxpr(fn)(x))
        assert "dot_general" not in text and "conv" not in text and " mul " not in text


def test_relative_index_uses_source_frames():
    t, ws = 12, 4
    idx = relative_position_index(ws, t, "3d", patch_shifted=True)
    plain = relative_position_index(ws, t, "3d", patch_shifted=False)
    span = (2 * ws - 1) ** 2
    assert plain.shape == (ws * ws, ws * ws) and np.all(plain // span == t - 1)  # Δt = 0
    off = shift_offsets(ws)
    for tt in range(4, t - 4):  # interior frames: no wrap, Δt is the offset difference
        np.testing.assert_array_equal(idx[tt] // span - (t - 1), off[:, None] - off[None, :])
        np.testing.assert_array_equal(idx[tt] % span, plain % span)
    assert idx.max() < (2 * t - 1) * span
    np.testing.assert_array_equal(relative_position_index(ws, t, "2d", True), plain % span)


# ----------------------------------------------------------------------------------------------
# TPS: blocks
# ----------------------------------------------------------------------------------------------

GRID = (2, 3, 8, 12, D)  # (B, T, h, w, D): non-square, two window rows, three window columns
WS = 4


def _ln(a, p, eps=1e-5):
    mu = a.mean(-1, keepdims=True)
    var = ((a - mu) ** 2).mean(-1, keepdims=True)
    return (a - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def plain_window_block(x, params, ws, shifted, frames, heads=HEADS):
    """Swin block without any temporal shift, in float64 numpy with explicit window loops."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(x, np.float64)
    b, t, h, w, d = x.shape
    dh = d // heads
    table = p["relative_position_bias_table"]
    bias = np.zeros((heads, ws * ws, ws * ws))
    for i in range(ws * ws):
        for j in range(ws * ws):
            dr, dc = i // ws - j // ws + ws - 1, i % ws - j % ws + ws - 1
            row = (frames - 1) * (2 * ws - 1) ** 2 + dr * (2 * ws - 1) + dc  # Δt = 0
            bias[:, i, j] = table[row % table.shape[0]]
    s = ws // 2 if shifted else 0
    y = np.roll(_ln(x, p["norm1"]), (-s, -s), axis=(2, 3))
    wrapped_r, wrapped_c = np.arange(h) >= h - s, np.arange(w) >= w - s  # after the roll
    out = np.zeros_like(y)
    for r0 in range(0, h, ws):
        for c0 in range(0, w, ws):
            tok = y[:, :, r0:r0 + ws, c0:c0 + ws].reshape(b, t, ws * ws, d)
            qkv = np.einsum("btpd,dshk->btpshk", tok, p["attn"]["qkv"]["kernel"])
            qkv = qkv + p["attn"]["qkv"]["bias"]
            q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
            logits = np.einsum("btphk,btqhk->bthpq", q, k) / np.sqrt(dh) + bias
            rr = np.repeat(wrapped_r[r0:r0 + ws], ws)
            cc = np.tile(wrapped_c[c0:c0 + ws], ws)
            allowed = (rr[:, None] == rr[None, :]) & (cc[:, None] == cc[None, :])
            logits = np.where(allowed, logits, -np.inf)
            a = np.exp(logits - logits.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            o = np.einsum("bthpq,btqhk->btphk", a, v)
            o = np.einsum("btphk,hkd->btpd", o, p["attn"]["proj"]["kernel"])
            out[:, :, r0:r0 + ws, c0:c0 + ws] = (o + p["attn"]["proj"]["bias"]).reshape(
                b, t, ws, ws, d)
    x = x + np.roll(out, (s, s), axis=(2, 3))
    m = p["mlp"]
    y = _ln(x, m["norm"]) @ m["fc1"]["kernel"] + m["fc1"]["bias"]
    y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
    return x + y @ m["fc2"]["kernel"] + m["fc2"]["bias"]


@pytest.mark.parametrize("temporal,shifted", [("patch", True), ("channel", False)])
def test_zero_shift_ratio_is_plain_window_attention(temporal, shifted):
    x = normal(GRID)
    kw = dict(num_heads=HEADS, window_size=WS, temporal=temporal, shifted=shifted)
    off = TPSBlock(shift_ratio=0.0, channel_shift_ratio=0.0, **kw)
    variables = random_variables(off, x)
    out = apply_jit(off)(variables, x)
    ref = plain_window_block(x, variables["params"], WS, shifted, GRID[1])
    np.testing.assert_allclose(out, ref, atol=2e-4, rtol=1e-4)
    # the same parameters with the shift on give a different block
    on = apply_jit(TPSBlock(shift_ratio=1.0, channel_shift_ratio=0.125, **kw))(variables, x)
    assert np.max(np.abs(on - out)) > 1e-2


def test_2d_bias_keeps_the_shifts_parameter_free():
    x = normal(GRID)
    kw = dict(num_heads=HEADS, window_size=WS, relative_bias="2d")
    shapes = lambda m: jax.tree_util.tree_map(lambda a: a.shape, nn.meta.unbox(
        jax.eval_shape(lambda: m.init(rbg(), x))))
    plain = shapes(TPSBlock(temporal="patch", shifted=True, shift_ratio=0.0,
                            channel_shift_ratio=0.0, **kw))
    assert shapes(TPSBlock(temporal="patch", shifted=True, **kw)) == plain
    assert shapes(TPSBlock(temporal="channel", **kw)) == plain
    assert plain["params"]["relative_position_bias_table"] == ((2 * WS - 1) ** 2, HEADS)


@pytest.mark.parametrize("temporal,reach", [("patch", 8), ("channel", 1), ("none", 0)])
def test_temporal_receptive_field_and_batch_isolation(temporal, reach):
    t = 18
    x = normal((2, t, 3, 3, D))
    off = temporal == "none"
    block = TPSBlock(HEADS, 3, "channel" if off else temporal, shifted=False,
                     channel_shift_ratio=0.0 if off else 0.125)
    variables = random_variables(block, x)
    run = apply_jit(block)
    t0 = 5
    delta = np.abs(run(variables, x.at[0, t0].add(normal((3, 3, D), seed=7))) - run(variables, x))
    assert np.all(delta[1] == 0)  # the other sample is untouched
    changed = np.max(delta[0], axis=(1, 2, 3)) > 0
    dist = np.minimum(np.abs(np.arange(t) - t0), t - np.abs(np.arange(t) - t0))
    assert changed[dist <= reach].all() and not changed[dist > reach].any()


# ----------------------------------------------------------------------------------------------
# Both translators: shapes, parameter counts, configs
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 8, 12), (10, 4, 16)])
@pytest.mark.parametrize("make", [
    lambda: TimeSformer(16, 2, num_heads=2),
    lambda: TimeSformer(16, 2, num_heads=2, latent_patch=2, attention_mode="joint"),
    lambda: TimeSformer(16, 3, num_heads=4, attention_mode="space"),
    lambda: TPS(16, 3, num_heads=2, window_size=4),
    lambda: TPS(16, 2, num_heads=2, window_size=2, latent_patch=2, relative_bias="2d"),
], ids=["divided", "joint_p2", "space", "tps", "tps_p2_2d"])
def test_output_keeps_the_input_shape(make, shape):
    z = jax.ShapeDtypeStruct((2,) + shape + (6,), jnp.float32)
    module = make()
    out = jax.eval_shape(lambda z: module.apply(module.init(rbg(), z), z), z)
    assert out.shape == z.shape and out.dtype == jnp.float32


def translator_params(cfg):
    return models.count_params(jax.eval_shape(lambda: models.init(cfg, rbg()))["params"][
        "translator"])


@pytest.mark.parametrize("mode", ["divided", "joint", "space"])
def test_timesformer_param_count_closed_form(mode):
    cfg = tiny_cfg("timesformer", attention_mode=mode, latent_patch=2, N_T=3)
    d, r, n_t = cfg.hid_T, cfg.mlp_ratio, cfg.N_T
    t, c, p = cfg.in_shape[0], cfg.hid_S, cfg.latent_patch
    n = (8 // p) ** 2
    block = (9 + 2 * r) * d * d + (16 + r) * d if mode == "divided" else \
        (4 + 2 * r) * d * d + (9 + r) * d
    expected = (p * p * c * d + d) + n * d + (0 if mode == "space" else t * d) + n_t * block + \
        2 * d + (d * p * p * c + p * p * c)
    assert translator_params(cfg) == expected
    if mode == "divided":
        assert block == 17 * d * d + 20 * d


@pytest.mark.parametrize("bias", ["3d", "2d"])
def test_tps_param_count_closed_form(bias):
    cfg = tiny_cfg("tps", relative_bias=bias, N_T=3)
    d, r, n_t, heads, ws = cfg.hid_T, cfg.mlp_ratio, cfg.N_T, cfg.num_heads, cfg.window_size
    t, c = cfg.in_shape[0], cfg.hid_S
    table = ((2 * t - 1) if bias == "3d" else 1) * (2 * ws - 1) ** 2 * heads
    block = (4 + 2 * r) * d * d + (9 + r) * d + table
    assert translator_params(cfg) == (c * d + d) + n_t * block + 2 * d + (d * c + c)


def test_attention_parameters_shard_by_the_one_fsdp_rule():
    """train/sharding.py's shape rule is the only sharding description: with fsdp = 4 every
    translator array of 2**14 elements or more is split along a dimension divisible by 4."""
    mesh = make_mesh((2, 4), jax.devices()[:8])
    for name in ("timesformer", "tps"):
        cfg = tiny_cfg(name, hid_T=128)
        params = jax.eval_shape(lambda: models.init(cfg, rbg()))["params"]
        shardings = tree_shardings(params, mesh)
        split = [(leaf.shape, sh.spec) for leaf, sh in zip(jax.tree_util.tree_leaves(params),
                                                            jax.tree_util.tree_leaves(shardings))
                 if leaf.size >= MIN_SHARDED_SIZE]
        assert split, name
        for shape, spec in split:
            axis = list(spec).index("fsdp")
            assert shape[axis] % 4 == 0


@pytest.mark.parametrize("path", ["mmnist/timesformer.py", "mmnist/tps.py",
                                  "taxibj/timesformer.py", "taxibj/tps.py"])
def test_config_files(path):
    config = load_config_file(CONFIGS / path)
    dataset = path.split("/")[0]
    assert config.model.name == path.split("/")[1][:-3]
    assert config.loss.alpha == 0.1
    if dataset == "mmnist":
        assert (config.optim.lr, config.optim.sched, config.train.epochs) == (1e-3, "onecycle", 200)
    else:
        assert (config.optim.lr, config.optim.sched, config.optim.warmup_epoch,
                config.train.epochs) == (5e-4, "cosine", 5, 50)
    with pytest.raises(AttributeError):
        config.model.num_head = 4  # locked: a typo is an error
    shapes = jax.eval_shape(lambda: models.init(config.model, rbg()))
    out = jax.eval_shape(lambda v, x: models.build(config.model).apply(v, x), shapes,
                         **models.example_inputs(config.model))
    assert out.shape == (1, config.model.out_frames) + tuple(config.model.in_shape[1:])


@pytest.mark.parametrize("name,overrides,message", [
    ("timesformer", dict(num_heads=3), r"model.num_heads = 3 must divide .* model.hid_T = 32"),
    ("tps", dict(num_heads=5), r"model.num_heads = 5 must divide"),
    ("timesformer", dict(latent_patch=3), r"'timesformer' cannot pad its frames .* multiples "
                                          r"of 6, got 16x16; use frames of H 12 or 18"),
    ("timesformer", dict(attention_mode="axial"), r"model.attention_mode must be one of"),
    ("tps", dict(relative_bias="none"), r"model.relative_bias must be one of"),
    ("tps", dict(shift_ratio=1.5), r"model.shift_ratio must lie in \[0, 1\]"),
    ("tps", dict(shift_ratio=0.2), r"model.shift_ratio = 0.2 moves .* = 0"),
    ("tps", dict(channel_shift_ratio=0.75), r"model.channel_shift_ratio must lie in"),
    ("tps", dict(num_heads=16), r"model.channel_shift_ratio = 0.125 shifts .* = 0 of the 2"),
    ("timesformer", dict(N_S=3), r"model.N_S must be an even number"),
])
def test_bad_config_is_a_clear_error(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        models.build(tiny_cfg(name, **overrides))


def test_missing_fields_and_unknown_names_are_clear_errors():
    cfg = default_model_config("tau")
    cfg.name = "tps"
    with pytest.raises(ValueError, match=r"lacks field\(s\) \[.*'latent_patch', 'num_heads', .*"
                                         r"'window_size'\]"):
        models.build(cfg)
    with pytest.raises(ValueError, match="Unknown model.name 'vivit'; known models"):
        default_model_config("vivit")
    assert base_config("tps").model.is_locked


# ----------------------------------------------------------------------------------------------
# In the SimVP frame: overfitting a tiny batch, bfloat16
# ----------------------------------------------------------------------------------------------

def bouncing_squares(n, t, size, seed=0):
    rng = np.random.default_rng(seed)
    out = np.zeros((n, t, size, size, 1), np.float32)
    for i in range(n):
        side = int(rng.integers(3, 6))
        pos, vel = rng.uniform(0, size - side, 2), rng.uniform(-1.5, 1.5, 2)
        for k in range(t):
            r, c = pos.astype(int)
            out[i, k, r:r + side, c:c + side] = 1.0
            pos = pos + vel
            bounce = (pos < 0) | (pos > size - side)
            vel[bounce] *= -1
            pos = np.clip(pos, 0, size - side)
    return out


@pytest.fixture(scope="module", params=["timesformer", "tps"])
def trained(request):
    """(cfg, inputs, initial params, losses, trained params, their float32 prediction) of a tiny
    SimVP overfitting two clips."""
    cfg = tiny_cfg(request.param)
    model = models.build(cfg)
    clips = bouncing_squares(2, 8, 16)
    x, y = jnp.asarray(clips[:, :4]), jnp.asarray(clips[:, 4:])
    opt = optax.adam(5e-3)

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(
            lambda p: tau_loss(model.apply({"params": p}, x, train=True), y, 0.1))(params)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    @jax.jit
    def init_train_predict(key):  # one compilation: init, 120 Adam steps, float32 prediction
        initial = nn.meta.unbox(models.init(cfg, key)["params"])
        (params, _), losses = jax.lax.scan(step, (initial, opt.init(initial)), None, length=120)
        return initial, params, losses, model.apply({"params": params}, x)

    initial, params, losses, y32 = init_train_predict(rbg())
    return cfg, x, initial, np.asarray(losses), params, y32


def test_overfits_a_tiny_batch(trained):
    _, _, _, losses, _, _ = trained  # mse + 0.1 * ddr before each of 120 Adam steps
    assert np.all(np.isfinite(losses))
    # a fifth, not a tenth: the runs agree to 1e-7 for ~40 steps, then float32 rounding (the C++
    # forward pass's sum order, the thread count) moves them apart: timesformer ends at 0.010-0.026
    # from 0.200 (0.060 after 20 steps)
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


def test_initialisation_follows_the_references(trained):
    cfg, _, initial, _, _, _ = trained
    p = initial["translator"]
    kernel = np.asarray(p["block_0"]["mlp"]["fc1"]["kernel"])
    assert abs(kernel.std() - 0.02) < 0.003 and np.abs(kernel).max() <= 0.04 + 1e-6
    np.testing.assert_array_equal(p["block_0"]["mlp"]["fc1"]["bias"], 0)
    np.testing.assert_array_equal(p["head"]["norm"]["scale"], 1)
    if cfg.name == "timesformer":  # a fresh divided model is a per-frame spatial transformer
        for i in range(cfg.N_T):
            for leaf in jax.tree_util.tree_leaves(p[f"block_{i}"]["temporal"]["fc"]):
                np.testing.assert_array_equal(leaf, 0)
        np.testing.assert_array_equal(p["time_embed"], 0)
    else:
        assert p["block_1"]["relative_position_bias_table"].shape == (
            (2 * cfg.in_shape[0] - 1) * (2 * cfg.window_size - 1) ** 2, cfg.num_heads)


def test_bfloat16_compute(trained):
    cfg, x, _, _, params, y32 = trained
    y16 = jax.jit(models.build(tiny_cfg(cfg.name, dtype="bfloat16")).apply)({"params": params}, x)
    assert y16.dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    assert bool(jnp.all(jnp.isfinite(y16)))
    np.testing.assert_allclose(y16.astype(jnp.float32), y32, atol=0.08)


def test_softmax_runs_in_float32_under_bfloat16():
    q = jnp.ones((2, 5, 2, 8), jnp.bfloat16)
    out = dot_product_attention(q, q, q, dtype=jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(out.astype(jnp.float32), 1.0)
    text = str(jax.make_jaxpr(lambda a: dot_product_attention(a, a, a, dtype=jnp.bfloat16))(q))
    assert "f32[2,2,5,5] = exp" in text and "f32[2,2,5,5] = dot_general" in text
