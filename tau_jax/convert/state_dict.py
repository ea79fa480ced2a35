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

# OpenSTL keys with no Flax counterpart: BatchNorm's step counter (momentum is fixed), the
# buffers timm 0.6's Swin blocks save (relative_position_index and attn_mask, recomputed here from
# the window; OpenSTL's SimVP Swin never applies the mask, SwinLSTM does), and PhyDNet's constant
# K2M moment matrices (rebuilt by its family).
IGNORED_SUFFIXES = ("num_batches_tracked", "relative_position_index", "attn_mask",
                    "k2m._M0", "k2m._M1", "k2m._invM0", "k2m._invM1")

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


def merge_twins(state_dict: Mapping[str, np.ndarray], twins) -> dict[str, np.ndarray]:
    """Drop the entries a module registered twice saves under a second name: `twins` is
    ((copy prefix, canonical prefix), ...) (a family's OPENSTL_TWINS). Each copy must
    equal its canonical twin (one ValueError naming the key otherwise); a copy without its twin
    takes the canonical name. So both names load into the one Flax parameter."""
    out = dict(state_dict)
    for copy, canonical in twins:
        for key in [k for k in out if k.startswith(copy)]:
            value, twin = out.pop(key), canonical + key[len(copy):]
            if twin not in out:
                out[twin] = value
            elif (np.shape(out[twin]) != np.shape(value)
                  or not np.array_equal(np.asarray(out[twin]), np.asarray(value))):
                raise ValueError(f"OpenSTL state dict entry {key!r} differs from {twin!r}; they "
                                 "are one module registered twice and must be equal.")
    return out


def from_openstl(model_config, state_dict: Mapping[str, np.ndarray]) -> dict:
    """OpenSTL state dict -> Flax variables {'params', 'batch_stats'?} for `model_config`."""
    expected = jax.eval_shape(lambda: models.init(model_config, jax.random.key(0)))
    family = models.family_of(model_config.name)
    state_dict = merge_twins(strip_prefix(state_dict), family.OPENSTL_TWINS)
    return convert_tree(expected, state_dict, lambda collection, path, shape: family.openstl_key(
        collection, path, shape, model_config))


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
