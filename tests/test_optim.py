"""The optimiser as OpenSTL runs it: schedule values computed with PyTorch, beta1 cycling inside
Adam, per-epoch cosine, L2 / decoupled weight decay, torch-style clipping, EMA, config errors,
sharded jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tau_jax.config import base_config, load_config_file
from tau_jax.train import optim

# PyTorch OneCycleLR, max lr 1e-3, N = 200 * 625 steps; values in force at optimiser step k.
ONECYCLE_STEPS = (0, 625, 18750, 37499, 62500, 100000, 124999)
ONECYCLE_LR = (4.000000e-05, 4.065786e-05, 5.200201e-04, 1.000000e-03, 8.117316e-04,
               1.882443e-04, 4.000000e-09)
ONECYCLE_B1 = (0.95000, 0.94993, 0.90000, 0.85000, 0.86883, 0.93118, 0.95000)
# OpenSTL cosine, TaxiBJ TAU (lr 5e-4, 50 epochs, warm-up 5 from 1e-5, min 1e-6); lr of epoch e.
COSINE_LR = {0: 1.000e-05, 1: 1.080e-04, 2: 2.060e-04, 3: 3.040e-04, 4: 4.020e-04, 5: 4.878e-04,
             6: 4.825e-04, 10: 4.523e-04, 25: 2.505e-04, 40: 4.865e-05, 49: 1.492e-06}


def optim_cfg(**kw):
    c = base_config().optim
    c.unlock()
    c.update(kw)
    return c


def ref_onecycle(k, n, max_lr=1e-3, final_div=1e4):
    """OneCycleLR's formula in float64: (lr, beta1) at step k."""
    def cos(start, end, p):
        return end + (start - end) * (1 + math.cos(math.pi * p)) / 2
    e1 = 0.3 * n - 1
    lo, hi = max_lr / 25, max_lr / 25 / final_div
    if k <= e1:
        p = k / e1
        return cos(lo, max_lr, p), cos(0.95, 0.85, p)
    p = (k - e1) / (n - 1 - e1)
    return cos(max_lr, hi, p), cos(0.85, 0.95, p)


def ref_cosine(e, lr=5e-4, epochs=50, warm=5, warm_lr=1e-5, min_lr=1e-6):
    """OpenSTL's cosine schedule (timm CosineLRScheduler) in float64: lr of epoch e."""
    if e < warm:
        return warm_lr + e * (lr - warm_lr) / warm
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * e / epochs))


def ref_adam(p0, grads, lrs, b1s, b2=0.999, eps=1e-8, wd=0.0, decoupled=False, clip=0.0):
    """PyTorch Adam / AdamW with clip_grad_norm_ beforehand, by hand in float64."""
    p = np.asarray(p0, np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr, b1) in enumerate(zip(grads, lrs, b1s), start=1):
        g = np.asarray(g, np.float64)
        if clip > 0:
            g = g * min(1.0, clip / (np.linalg.norm(g) + 1e-6))
        if wd and not decoupled:
            g = g + wd * p
        if wd and decoupled:
            p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
        p = p - lr / (1 - b1 ** t) * m / denom
    return p


def run_tx(tx, p0, grads):
    params = {"w": jnp.asarray(p0, jnp.float32)}
    state = tx.init(params)

    def step(params, state, g):  # eager: cheaper than a compile per case for a few steps
        updates, state = tx.update({"w": g}, state, params)
        return optax.apply_updates(params, updates), state

    for g in grads:
        params, state = step(params, state, jnp.asarray(g, jnp.float32))
    return np.asarray(params["w"]), state


# ------------------------------------------------------------------------------------------ onecycle

def test_onecycle_matches_spec_9_4():
    cfg = load_config_file("configs/mmnist/tau.py")
    tx, lr_fn = optim.create_optimizer(cfg.optim, 625, cfg.train.epochs)
    _, b1_fn = optim.onecycle_schedules(1e-3, 200 * 625)
    lr = np.array([float(lr_fn(k)) for k in ONECYCLE_STEPS])
    b1 = np.array([float(b1_fn(k)) for k in ONECYCLE_STEPS])
    np.testing.assert_allclose(lr, ONECYCLE_LR, rtol=1e-6)
    np.testing.assert_allclose(b1, ONECYCLE_B1, rtol=0, atol=1e-5)


def test_onecycle_every_step_matches_closed_form():
    n = 200 * 625
    lr_fn, b1_fn = optim.onecycle_schedules(1e-3, n)
    ks = np.arange(n)
    lr, b1 = np.asarray(jax.jit(lr_fn)(ks)), np.asarray(jax.jit(b1_fn)(ks))
    ref = np.array([ref_onecycle(k, n) for k in ks[::97]])
    np.testing.assert_allclose(lr[::97], ref[:, 0], rtol=2e-6)
    np.testing.assert_allclose(b1[::97], ref[:, 1], rtol=2e-7)
    # past the end the last step's values stay
    assert float(lr_fn(n + 10)) == float(lr_fn(n - 1))


def test_beta1_injected_into_adam_follows_schedule():
    tx, lr_fn = optim.create_optimizer(optim_cfg(lr=1e-3), steps_per_epoch=5, epochs=4)
    _, b1_fn = optim.onecycle_schedules(1e-3, 20)
    params = {"w": jnp.ones((3,))}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for k in range(1, 13):
        _, state = update({"w": jnp.full((3,), 0.1 * k)}, state, params)
        # the hyperparameters in the state are the ones the k-th update (step k - 1) used
        np.testing.assert_allclose(state.hyperparams["b1"], b1_fn(k - 1), rtol=1e-6)
        np.testing.assert_allclose(state.hyperparams["learning_rate"], lr_fn(k - 1), rtol=1e-6)
    assert abs(float(b1_fn(0)) - 0.95) < 1e-7 and abs(float(b1_fn(5)) - 0.85) < 1e-7


def test_onecycle_adam_trajectory_by_hand():
    """The cycled beta1 really drives Adam's moments and bias correction (it cancels in step 1)."""
    spe, epochs = 3, 4
    rng = np.random.default_rng(0)
    p0, grads = rng.normal(size=6), rng.normal(size=(8, 6))
    tx, lr_fn = optim.create_optimizer(optim_cfg(lr=1e-2), spe, epochs)
    _, b1_fn = optim.onecycle_schedules(1e-2, spe * epochs)
    lrs = [ref_onecycle(k, spe * epochs, 1e-2)[0] for k in range(8)]
    b1s = [ref_onecycle(k, spe * epochs, 1e-2)[1] for k in range(8)]
    got, _ = run_tx(tx, p0, grads)
    np.testing.assert_allclose(got, ref_adam(p0, grads, lrs, b1s), rtol=1e-5, atol=1e-7)
    # with a constant beta1 = 0.9 the result is measurably different
    wrong = ref_adam(p0, grads, lrs, [0.9] * 8)
    assert np.max(np.abs(wrong - got)) > 1e-4


# ------------------------------------------------------------------------------------------ cosine

def test_cosine_matches_spec_9_4_and_is_constant_per_epoch():
    cfg = load_config_file("configs/taxibj/tau.py")
    spe = 7
    tx, lr_fn = optim.create_optimizer(cfg.optim, spe, cfg.train.epochs)
    steps = np.arange(cfg.train.epochs * spe)
    lr = np.asarray(jax.jit(lr_fn)(steps)).reshape(cfg.train.epochs, spe)
    assert np.all(lr == lr[:, :1])                                   # constant within an epoch
    ref = np.array([ref_cosine(e) for e in range(cfg.train.epochs)])
    np.testing.assert_allclose(lr[:, 0], ref, rtol=1e-6)              # the formula, float64
    epochs = sorted(COSINE_LR)
    np.testing.assert_allclose(lr[epochs, 0], [COSINE_LR[e] for e in epochs], rtol=5e-4)  # 4 digits
    np.testing.assert_allclose(ref[epochs], [COSINE_LR[e] for e in epochs], rtol=5e-4)
    assert lr[5, 0] < 5e-4                                            # cosine on the absolute epoch
    assert float(lr_fn(cfg.train.epochs * spe + 3)) == pytest.approx(1e-6, rel=1e-6)
    # beta1 is not cycled
    state = tx.init({"w": jnp.zeros(2)})
    _, state = tx.update({"w": jnp.ones(2)}, state, {"w": jnp.zeros(2)})
    np.testing.assert_allclose(state.hyperparams["b1"], 0.9, rtol=1e-7)


def test_cosine_without_warmup():
    _, lr_fn = optim.create_optimizer(optim_cfg(lr=1e-3, sched="cosine"), 2, 10)
    np.testing.assert_allclose(float(lr_fn(0)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(lr_fn(10)), 1e-6 + 0.5 * (1e-3 - 1e-6), rtol=1e-6)


# ------------------------------------------------------------------------ weight decay, clipping

@pytest.mark.parametrize("optimizer,wd,clip", [("adam", 0.1, 0.0), ("adamw", 0.1, 0.0),
                                               ("adam", 0.0, 0.5), ("adam", 0.05, 0.5),
                                               ("adamw", 0.05, 0.5)])
def test_weight_decay_and_clipping_by_hand(optimizer, wd, clip):
    rng = np.random.default_rng(1)
    p0 = rng.normal(size=5)
    grads = rng.normal(size=(4, 5)) * np.array([3.0, 0.01, 2.0, 0.02])[:, None]  # clip on/off
    cfg = optim_cfg(lr=1e-2, sched="cosine", optimizer=optimizer, weight_decay=wd, clip_grad=clip,
                    warmup_epoch=1)
    tx, lr_fn = optim.create_optimizer(cfg, 2, 3)
    lrs = [float(lr_fn(k)) for k in range(4)]
    got, _ = run_tx(tx, p0, grads)
    want = ref_adam(p0, grads, lrs, [0.9] * 4, wd=wd, decoupled=optimizer == "adamw", clip=clip)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # the other weight-decay flavour gives a different answer
    if wd:
        other = ref_adam(p0, grads, lrs, [0.9] * 4, wd=wd, decoupled=optimizer != "adamw",
                         clip=clip)
        assert np.max(np.abs(other - got)) > 1e-5


def test_clip_transform_alone():
    clip = optim.clip_by_global_norm_torch(1.0)
    g = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}                 # norm 5
    out, _ = clip.update(g, clip.init(g))
    np.testing.assert_allclose(out["a"], [3.0 / (5 + 1e-6), 0.0], rtol=1e-7)
    np.testing.assert_allclose(out["b"], [[4.0 / (5 + 1e-6)]], rtol=1e-7)
    small = {"a": jnp.array([0.3, 0.0]), "b": jnp.array([[0.4]])}
    out, _ = clip.update(small, clip.init(small))
    np.testing.assert_array_equal(out["a"], small["a"])


def test_matches_torch_adam_onecycle():
    """Ground truth: torch Adam(+L2) / AdamW with clip_grad_norm_ and OneCycleLR, fixed gradients."""
    torch = pytest.importorskip("torch")
    spe, epochs, max_lr = 7, 5, 1e-2
    n = spe * epochs                                    # 0.3 * n - 1 = 9.5: non-integer phase end
    rng = np.random.default_rng(2)
    p0 = rng.normal(size=6).astype(np.float32)
    grads = (rng.normal(size=(n, 6)) * rng.uniform(0.1, 3, size=(n, 1))).astype(np.float32)
    for optimizer, wd, clip in [("adam", 0.05, 1.5), ("adamw", 0.05, 0.0)]:
        w = torch.nn.Parameter(torch.tensor(p0))
        cls = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
        opt = cls([w], lr=max_lr, weight_decay=wd)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=n,
                                                    final_div_factor=1e4)
        t_lr, t_b1 = [], []
        for g in grads:
            t_lr.append(opt.param_groups[0]["lr"])
            t_b1.append(opt.param_groups[0]["betas"][0])
            w.grad = torch.tensor(g)
            if clip:
                torch.nn.utils.clip_grad_norm_([w], clip)
            opt.step()
            sched.step()
        cfg = optim_cfg(lr=max_lr, optimizer=optimizer, weight_decay=wd, clip_grad=clip)
        tx, lr_fn = optim.create_optimizer(cfg, spe, epochs)
        _, b1_fn = optim.onecycle_schedules(max_lr, n)
        ks = np.arange(n)
        np.testing.assert_allclose(np.asarray(lr_fn(ks)), t_lr, rtol=2e-6)
        np.testing.assert_allclose(np.asarray(b1_fn(ks)), t_b1, rtol=3e-7)
        got, _ = run_tx(tx, p0, grads)
        np.testing.assert_allclose(got, w.detach().numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ EMA

def test_ema_update():
    ema = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([0.0], jnp.bfloat16), "n": jnp.array(3)}
    new = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([1.0], jnp.bfloat16), "n": jnp.array(4)}
    out = jax.jit(optim.ema_update)(ema, new, 0.75)
    np.testing.assert_allclose(out["a"], [1.5, 1.5], rtol=1e-7)
    assert out["b"].dtype == jnp.bfloat16 and float(out["b"][0]) == 0.25
    assert int(out["n"]) == 4
    same = optim.ema_update(ema, new, 0.0)
    np.testing.assert_array_equal(same["a"], new["a"])
    assert base_config().optim.ema_decay == 0.0


# --------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kw,spe,epochs,field", [
    ({"lr": 0.0}, 10, 5, "optim.lr"),
    ({"lr": -1e-3}, 10, 5, "optim.lr"),
    ({"optimizer": "sgd"}, 10, 5, "optim.optimizer"),
    ({"sched": "step"}, 10, 5, "optim.sched"),
    ({"sched": "cosine", "warmup_epoch": 5}, 10, 5, "optim.warmup_epoch"),
    ({"warmup_epoch": -1}, 10, 5, "optim.warmup_epoch"),
    ({"weight_decay": -0.1}, 10, 5, "optim.weight_decay"),
    ({"clip_grad": -1.0}, 10, 5, "optim.clip_grad"),
    ({"ema_decay": 1.0}, 10, 5, "optim.ema_decay"),
    ({"betas": (0.9, 1.0)}, 10, 5, "optim.betas"),
    ({}, 0, 5, "steps_per_epoch"),
    ({}, 10, 0, "train.epochs"),
])
def test_bad_config_errors(kw, spe, epochs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        optim.create_optimizer(optim_cfg(**kw), spe, epochs)


def test_config_fields():
    c = base_config().optim
    assert (c.eps, tuple(c.betas), c.final_div_factor, c.ema_decay) == (1e-8, (0.9, 0.999),
                                                                       1e4, 0.0)
    tx, lr_fn = optim.create_optimizer(optim_cfg(lr=1e-3), np.int64(625), 200)  # numpy ints are fine
    assert float(lr_fn(0)) == pytest.approx(4e-5, rel=1e-6)


# ------------------------------------------------------------------------------------ sharding

def test_jit_with_sharded_params():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices: conftest.py makes 8 CPU devices, but on a machine whose "
                    "default backend is an accelerator with fewer (e.g. one GPU) JAX uses those")
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:8]), ("fsdp",))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
    cfg = optim_cfg(lr=1e-3, weight_decay=0.01, clip_grad=1.0)
    tx, _ = optim.create_optimizer(cfg, 4, 3)
    params = {"w": jnp.arange(16.0).reshape(8, 2) / 10}
    grads = {"w": jnp.ones((8, 2))}

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    ref_p, ref_s = jax.jit(step)(params, tx.init(params), grads)
    sp = jax.device_put(params, spec)
    state = jax.jit(tx.init)(sp)
    out_p, out_s = jax.jit(step)(sp, state, jax.device_put(grads, spec))
    assert out_p["w"].sharding.is_equivalent_to(spec, 2)
    np.testing.assert_allclose(out_p["w"], ref_p["w"], rtol=1e-6)
    assert int(out_s.count) == 1
