"""Space-to-depth patches: the recurrent models see a (H, W, C) frame as (H/p, W/p, p*p*C),
patch channel `(p_row*p + p_col)*C + c`, as OpenSTL's `reshape_patch`."""

from __future__ import annotations

import jax.numpy as jnp


def reshape_patch(x, patch_size: int):
    """(..., H, W, C) -> (..., H/p, W/p, p*p*C), patch channel (p_row*p + p_col)*C + c."""
    p = patch_size
    *lead, h, w, c = x.shape
    if h % p or w % p:
        raise ValueError(f"frame size {h} x {w} is not divisible by patch_size {p}.")
    x = x.reshape(*lead, h // p, p, w // p, p, c)
    n = len(lead)
    x = jnp.moveaxis(x, n + 2, n + 1)  # (..., H/p, W/p, p_row, p_col, C)
    return x.reshape(*lead, h // p, w // p, p * p * c)


def reshape_patch_back(x, patch_size: int):
    """Inverse of `reshape_patch`: (..., H/p, W/p, p*p*C) -> (..., H, W, C)."""
    p = patch_size
    *lead, hp, wp, pc = x.shape
    if pc % (p * p):
        raise ValueError(f"patch channels {pc} are not a multiple of patch_size**2 = {p * p}.")
    c = pc // (p * p)
    x = x.reshape(*lead, hp, wp, p, p, c)
    n = len(lead)
    x = jnp.moveaxis(x, n + 2, n + 1)  # (..., H/p, p_row, W/p, p_col, C)
    return x.reshape(*lead, hp * p, wp * p, c)
