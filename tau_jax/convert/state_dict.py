"""OpenSTL (PyTorch) weights -> tau-jax (Flax) variables.

`from_openstl(model_config, state_dict)` builds the tau-jax model for the config, asks its family
for the OpenSTL key and layout of every Flax leaf, and fails with one message listing missing,
unexpected and mis-shaped keys. A state dict maps PyTorch key names to numpy arrays (as in a `.pth`
file).
`load_pth(path)` reads a real `.pth` file; it needs torch, which nothing else here does.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from tau_jax import models

# OpenSTL keys with no Flax counterpart: BatchNorm's step counter (momentum is fixed) and the
# buffers timm 0.6's Swin blocks save, recomputed here from the window (relative_position_index;
# attn_mask, which OpenSTL's Swin forward never applies).
IGNORED_SUFFIXES = ("num_batches_tracked", "relative_position_index", "attn_mask")

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
    key_fn = models.family_of(model_config.name).openstl_key
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
