"""The optimiser and learning-rate schedules, as OpenSTL runs them (its Adam + OneCycle / cosine).

* Adam (eps 1e-8, betas (0.9, 0.999)), or AdamW. `weight_decay` follows PyTorch: for 'adam' it is
  L2 regularisation added to the gradient before the moments (torch.optim.Adam), for 'adamw' it is
  decoupled, `p -= lr * wd * p` beside the Adam step (torch.optim.AdamW). OpenSTL's own runs use 0.
* `clip_grad` > 0: global-norm clipping of the raw gradients before the optimiser (and before the L2
  term), with PyTorch's `clip_grad_norm_` factor `min(1, max_norm / (norm + 1e-6))`.
* sched 'onecycle': torch OneCycleLR stepped after every optimiser step over
  `epochs * steps_per_epoch` steps (pct_start 0.3, div_factor 25, final_div_factor 1e4, cos
  annealing, two phases), with Adam's beta1 cycled 0.95 -> 0.85 -> 0.95 against the lr.
* sched 'cosine': timm CosineLRScheduler stepped once per epoch (t_initial = epochs, linear warm-up
  from warmup_lr over warmup_epoch epochs, warmup_prefix False: the cosine is indexed by the absolute
  epoch; min_lr from the end of the last epoch on). beta1 stays betas[0].

The transformation is plain optax (`optax.inject_hyperparams` at the top level), so its state is a
pytree usable in a jitted, sharded train step; `opt_state.hyperparams['learning_rate']` and
`['b1']` hold the values used by the most recent update. `update` needs `params` when
weight_decay > 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("onecycle", "cosine")

# torch.optim.lr_scheduler.OneCycleLR defaults that OpenSTL leaves in place.
ONECYCLE_PCT_START = 0.3
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_BASE_MOMENTUM = 0.85
ONECYCLE_MAX_MOMENTUM = 0.95

# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
_TORCH_CLIP_EPS = 1e-6

Schedule = Callable[[Any], jax.Array]


def _cos_anneal(start, end, pct, rest):
    """torch's 'cos' annealing end + (start - end) * (1 + cos(pi * pct)) / 2 with rest = 1 - pct
    computed by the caller, written as start * sin^2(pi rest / 2) + end * sin^2(pi pct / 2): no
    cancellation, and float32 keeps a few-ulp relative accuracy at both ends of the phase."""
    return (start * jnp.square(jnp.sin((jnp.pi / 2) * rest))
            + end * jnp.square(jnp.sin((jnp.pi / 2) * pct)))


def _float(x):
    return jnp.asarray(x, dtype=jnp.result_type(float))


def onecycle_schedules(max_lr: float, total_steps: int,
                       final_div_factor: float = 1e4) -> tuple[Schedule, Schedule]:
    """(lr_fn, beta1_fn) of torch OneCycleLR (two phases, cos annealing, cycle_momentum) as
    functions of the 0-based optimiser step; steps past the end keep the last step's values."""
    initial_lr = max_lr / ONECYCLE_DIV_FACTOR
    final_lr = initial_lr / final_div_factor
    end1 = float(ONECYCLE_PCT_START * total_steps) - 1.0   # last step of phase 1 (torch)
    end2 = float(total_steps - 1)                          # last step of phase 2
    span1 = end1 if end1 != 0 else 1.0
    span2 = end2 - end1

    def phase(step):
        k = _float(jnp.clip(jnp.asarray(step), 0, total_steps - 1))
        in1 = k <= end1
        pct = jnp.where(in1, k / span1, (k - end1) / span2)
        rest = jnp.where(in1, (end1 - k) / span1, (end2 - k) / span2)
        return in1, pct, rest

    def lr_fn(step):
        in1, pct, rest = phase(step)
        return jnp.where(in1, _cos_anneal(initial_lr, max_lr, pct, rest),
                         _cos_anneal(max_lr, final_lr, pct, rest))

    def beta1_fn(step):
        in1, pct, rest = phase(step)
        return jnp.where(
            in1, _cos_anneal(ONECYCLE_MAX_MOMENTUM, ONECYCLE_BASE_MOMENTUM, pct, rest),
            _cos_anneal(ONECYCLE_BASE_MOMENTUM, ONECYCLE_MAX_MOMENTUM, pct, rest))

    return lr_fn, beta1_fn


def cosine_epoch_lr(lr: float, epochs: int, warmup_epoch: int = 0, warmup_lr: float = 1e-5,
                    min_lr: float = 1e-6) -> Schedule:
    """timm CosineLRScheduler (t_initial = epochs, cycle_limit 1, k_decay 1, warmup_prefix
    False) as a function of the 0-based epoch: the lr used during that epoch."""

    def fn(epoch):
        e = _float(jnp.maximum(jnp.asarray(epoch), 0))
        warm = warmup_lr + e * ((lr - warmup_lr) / max(warmup_epoch, 1))
        cos = _cos_anneal(lr, min_lr, e / epochs, (epochs - e) / epochs)
        out = jnp.where(e < epochs, cos, min_lr)
        return jnp.where(e < warmup_epoch, warm, out)

    return fn


class ClipByGlobalNormTorchState(NamedTuple):
    """Stateless."""


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """Scale all gradients by min(1, max_norm / (global_norm + 1e-6)), as
    torch.nn.utils.clip_grad_norm_ (OpenSTL clip_mode 'norm') does."""

    def init_fn(params):
        del params
        return ClipByGlobalNormTorchState()

    def update_fn(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        coef = jnp.minimum(max_norm / (norm + _TORCH_CLIP_EPS), 1.0)
        updates = jax.tree_util.tree_map(lambda g: (g * coef).astype(g.dtype), updates)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def _adam_chain(learning_rate, b1, *, b2: float, eps: float, weight_decay: float,
                decoupled: bool, clip_grad: float) -> optax.GradientTransformation:
    parts = []
    if clip_grad > 0:
        parts.append(clip_by_global_norm_torch(clip_grad))
    if weight_decay > 0 and not decoupled:
        parts.append(optax.add_decayed_weights(weight_decay))   # torch Adam: g + wd * p
    parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    if weight_decay > 0 and decoupled:
        parts.append(optax.add_decayed_weights(weight_decay))   # torch AdamW: p -= lr * wd * p
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def check(c) -> None:
    """One ValueError naming the field, for an `optim` section no optimiser can be made from
    (run by `train` before anything is built, and by `create_optimizer`)."""
    lr, largest = c.lr, float(np.finfo(np.float32).max)
    _check(c.optimizer in OPTIMIZERS,
           f"optim.optimizer must be one of {OPTIMIZERS}, got {c.optimizer!r}.")
    _check(c.sched in SCHEDULES, f"optim.sched must be one of {SCHEDULES}, got {c.sched!r}.")
    _check(isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0 < lr <= largest,
           f"optim.lr must be a positive number within float32 range (<= {largest:.3g}), "
           f"got {lr}.")
    _check(_is_int(c.warmup_epoch) and c.warmup_epoch >= 0,
           f"optim.warmup_epoch must be an integer >= 0, got {c.warmup_epoch!r}.")
    _check(c.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {c.weight_decay}.")
    _check(c.clip_grad >= 0, f"optim.clip_grad must be >= 0 (0 = off), got {c.clip_grad}.")
    _check(c.eps >= 0, f"optim.eps must be >= 0, got {c.eps}.")
    _check(len(c.betas) == 2 and all(0 <= b < 1 for b in c.betas),
           f"optim.betas must be two numbers in [0, 1), got {tuple(c.betas)}.")
    _check(c.final_div_factor > 0,
           f"optim.final_div_factor must be positive, got {c.final_div_factor}.")
    _check(0 <= c.ema_decay < 1,
           f"optim.ema_decay must be in [0, 1) (0 = off), got {c.ema_decay}.")


def create_optimizer(optim_config, steps_per_epoch: int,
                     epochs: int) -> tuple[optax.GradientTransformation, Schedule]:
    """(transformation, lr_fn) for the `optim` config section; lr_fn(step) is the learning rate
    used by the update at 0-based optimiser step `step` (a Python int or a jax integer)."""
    c = optim_config
    check(c)
    _check(_is_int(steps_per_epoch) and steps_per_epoch >= 1,
           f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}.")
    _check(_is_int(epochs) and epochs >= 1,
           f"train.epochs must be an integer >= 1, got {epochs!r}.")
    _check(0 <= c.warmup_epoch < epochs,
           f"optim.warmup_epoch must be an integer in [0, train.epochs = {epochs}), "
           f"got {c.warmup_epoch!r}.")
    optimizer, sched, lr = c.optimizer, c.sched, float(c.lr)
    warmup_epoch, warmup_lr, min_lr = c.warmup_epoch, float(c.warmup_lr), float(c.min_lr)
    weight_decay, clip_grad, eps = float(c.weight_decay), float(c.clip_grad), float(c.eps)
    betas = tuple(c.betas)
    steps_per_epoch, epochs, warmup_epoch = int(steps_per_epoch), int(epochs), int(warmup_epoch)
    if sched == "onecycle":
        lr_fn, b1 = onecycle_schedules(lr, epochs * steps_per_epoch, float(c.final_div_factor))
    else:
        _check(warmup_lr >= 0, f"optim.warmup_lr must be >= 0, got {warmup_lr}.")
        _check(min_lr >= 0, f"optim.min_lr must be >= 0, got {min_lr}.")
        epoch_lr = cosine_epoch_lr(lr, epochs, warmup_epoch, warmup_lr, min_lr)

        def lr_fn(step):
            return epoch_lr(jnp.asarray(step) // steps_per_epoch)

        b1 = float(betas[0])

    tx = optax.inject_hyperparams(
        _adam_chain, static_args=("b2", "eps", "weight_decay", "decoupled", "clip_grad"),
        hyperparam_dtype=jnp.float32,
    )(learning_rate=lr_fn, b1=b1, b2=float(betas[1]), eps=eps, weight_decay=weight_decay,
      decoupled=optimizer == "adamw", clip_grad=clip_grad)
    return tx, lr_fn


def ema_update(ema_params, params, decay):
    """One EMA step, decay * ema + (1 - decay) * params (timm ModelEmaV2), leaf by leaf; leaves
    keep the EMA's dtype, non-float leaves are taken from `params`."""

    def leaf(e, p):
        if not jnp.issubdtype(jnp.result_type(e), jnp.floating):
            return p
        return (decay * e + (1 - decay) * p).astype(jnp.result_type(e))

    return jax.tree_util.tree_map(leaf, ema_params, params)
