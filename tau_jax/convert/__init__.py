"""OpenSTL (PyTorch) weights -> tau-jax (Flax) variables.

`from_openstl(model_config, state_dict)` builds the tau-jax model for the config, derives the
OpenSTL key and layout of every Flax leaf, and fails with one message listing missing, unexpected
and mis-shaped keys. A state dict maps PyTorch key names to numpy arrays (as in a `.pth` file).
`load_pth(path)` reads a real `.pth` file; it needs torch, which nothing else here does.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from tau_jax import models
from tau_jax.models.simvp import sampling_strides

# OpenSTL keys with no Flax counterpart: BatchNorm's step counter (momentum is fixed).
IGNORED_SUFFIXES = ("num_batches_tracked",)

# A leaf's OpenSTL key and the function taking the PyTorch array to the Flax layout.
KeyFn = Callable[[str, tuple[str, ...], tuple[int, ...]], tuple[str, Callable[[np.ndarray], np.ndarray]]]

_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
               "var": "running_var"}


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


# Flax path (dotted) -> OpenSTL key prefix, applied in order.
_SIMVP_RULES = [
    (r"^(enc|dec)\.(enc|dec)_(\d+)\.(conv|norm)\.", r"\1.\2.\3.conv.\4."),
    (r"^translator\.", "hid."),
    (r"\b(enc|dec|layers|fc)_(\d+)\b", r"\1.\2"),
    (r"\.mlp\.dwconv\.", ".mlp.dwconv.dwconv."),
]


def simvp_key(collection: str, path: tuple[str, ...], shape: tuple[int, ...], cfg):
    """OpenSTL key and layout transform of one SimVP-family leaf."""
    dotted = ".".join(path[:-1]) + "."
    for pattern, repl in _SIMVP_RULES:
        dotted = re.sub(pattern, repl, dotted)
    key = dotted + _LEAF_NAMES.get(path[-1], path[-1])
    transform = torch_layout(shape)
    up = re.match(r"^dec\.dec\.(\d+)\.conv\.conv\.$", dotted)
    if up and _is_upsampling(int(up.group(1)), cfg.N_S):
        key = dotted + "0." + _LEAF_NAMES.get(path[-1], path[-1])
        layout = transform
        transform = lambda w: layout(pixel_shuffle_order()(w))
    return key, transform


def _is_upsampling(layer: int, num_layers: int) -> bool:
    return sampling_strides(num_layers, reverse=True)[layer]


# Flax path (dotted) -> OpenSTL key prefix for the recurrent family; cell convs sit at index 0 of
# an nn.Sequential (conv_x.0.weight), their LayerNorm (Flax `<conv>_ln`) at index 1.
_RECURRENT_RULES = [
    (r"^cell_list_(\d+)\.(conv_[xhmo])_ln\.$", r"cell_list.\1.\2.1."),
    (r"^cell_list_(\d+)\.(conv_[xhmo])\.$", r"cell_list.\1.\2.0."),
    (r"^cell_list_(\d+)\.", r"cell_list.\1."),
]


def recurrent_key(collection: str, path: tuple[str, ...], shape: tuple[int, ...], cfg):
    """OpenSTL key and layout transform of one PredRNN / PredRNN-V2 / ConvLSTM leaf. LayerNorm
    affines are (C, H, W) in PyTorch and (H, W, C) here."""
    dotted = ".".join(path[:-1]) + "."
    for pattern, repl in _RECURRENT_RULES:
        dotted = re.sub(pattern, repl, dotted)
    key = dotted + _LEAF_NAMES.get(path[-1], path[-1])
    if len(shape) == 3:
        return key, lambda w: np.transpose(w, (1, 2, 0))
    return key, torch_layout(shape)


# model name -> key function(collection, path, shape, model_config); SimVP family by default.
KEY_FNS: dict[str, Callable] = {name: recurrent_key for name in ("predrnn", "predrnnv2", "convlstm")}


def convert_tree(expected: Mapping, state_dict: Mapping[str, np.ndarray], key_fn) -> dict:
    """Fill the variable tree `expected` (shapes/dtypes, e.g. from jax.eval_shape of init) from
    `state_dict` via `key_fn(collection, path, shape) -> (openstl_key, transform)`."""
    flat = traverse_util.flatten_dict(dict(expected))
    out, used, problems = {}, set(), []
    for path, leaf in flat.items():
        key, transform = key_fn(path[0], path[1:], tuple(leaf.shape))
        if key not in state_dict:
            problems.append(f"missing key {key!r} (for {'/'.join(path)})")
            continue
        used.add(key)
        value = transform(np.asarray(state_dict[key]))
        if tuple(value.shape) != tuple(leaf.shape):
            problems.append(f"key {key!r} has shape {tuple(np.shape(state_dict[key]))}, which "
                            f"gives {tuple(value.shape)} but the model needs {tuple(leaf.shape)}")
            continue
        out[path] = jnp.asarray(value, dtype=leaf.dtype)
    extra = sorted(k for k in state_dict
                   if k not in used and not k.endswith(IGNORED_SUFFIXES))
    problems += [f"unexpected key {k!r}" for k in extra]
    if problems:
        shown = "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else "")
        raise ValueError(f"OpenSTL state dict does not fit the model config "
                         f"({len(problems)} problem(s)): {shown}.")
    return traverse_util.unflatten_dict(out)


def strip_prefix(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop the 'model.' (Lightning) or 'module.' (DDP) prefix OpenSTL checkpoints carry."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("model.", "module."):
            if k.startswith(prefix):
                k = k[len(prefix):]
                break
        out[k] = v
    return out


def from_openstl(model_config, state_dict: Mapping[str, np.ndarray]) -> dict:
    """OpenSTL state dict -> Flax variables {'params', 'batch_stats'?} for `model_config`."""
    expected = jax.eval_shape(lambda: models.init(model_config, jax.random.key(0)))
    key_fn = KEY_FNS.get(model_config.name, simvp_key)
    return convert_tree(expected, strip_prefix(state_dict),
                        lambda collection, path, shape: key_fn(collection, path, shape, model_config))


def load_pth(path: str) -> dict[str, np.ndarray]:
    """Read an OpenSTL `.pth` checkpoint (full checkpoint or bare state dict) into numpy arrays."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("Reading a .pth file needs PyTorch: pip install 'tau-jax[torch]'.") from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds no state dict (found {type(obj).__name__}).")
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}
