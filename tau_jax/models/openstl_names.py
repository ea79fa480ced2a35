"""How OpenSTL (PyTorch) names and lays out a parameter that a Flax leaf holds: the pieces the
families' `openstl_key` functions are made of."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var"}


def leaf_name(flax_leaf: str) -> str:
    """PyTorch's name of a Flax leaf: kernel and scale are `weight`, BatchNorm's statistics
    `running_mean` / `running_var`; other names are kept."""
    return _LEAF_NAMES.get(flax_leaf, flax_leaf)


def torch_layout(flax_shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch layout -> Flax layout by the Flax leaf's rank: conv OIHW -> HWIO; a Dense kernel
    comes from a Linear (out, in) or a 1x1 conv (out, in, 1, 1); vectors are unchanged."""
    if len(flax_shape) == 4:
        return lambda w: np.transpose(w, (2, 3, 1, 0))
    if len(flax_shape) == 2:
        return lambda w: w.reshape(w.shape[0], w.shape[1]).T
    return lambda w: w


def pixel_shuffle_order(block: int = 2) -> Callable[[np.ndarray], np.ndarray]:
    """Reorder a PyTorch PixelShuffle conv's output channels c*b*b + s into depth_to_space's
    s*C + c, for weights (O, I, kh, kw) or biases (O,)."""

    def reorder(w):
        c = w.shape[0] // (block * block)
        perm = [ch * block * block + s for s in range(block * block) for ch in range(c)]
        return w[perm]

    return reorder
