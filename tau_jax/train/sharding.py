"""Device mesh and shardings for SPMD training (jit + NamedSharding; no pmap): the one place
where anything says how arrays are laid out over devices.

The mesh has axes ('data', 'fsdp'). Batches are split over both (every device sees different
sequences; the input pipeline places them with `batch_sharding`). Parameters and optimiser
state are replicated, or with fsdp > 1 each array is split along its largest dimension divisible
by the fsdp size (small arrays stay replicated): a shape-based rule that needs no per-module
annotations, so every model family shards the same way.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp")
MIN_SHARDED_SIZE = 2 ** 14  # arrays with fewer elements stay replicated


def make_mesh(shape, devices=None) -> Mesh:
    """Mesh of `shape` = (data, fsdp) over all devices; one entry may be -1 (the rest)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = [int(s) for s in shape]
    if len(shape) != 2 or shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"train.mesh must be (data, fsdp) with positive sizes or one -1, "
                         f"got {tuple(shape)}.")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if len(devices) % known:
            raise ValueError(f"train.mesh {tuple(shape)} does not divide the {len(devices)} "
                             "devices.")
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"train.mesh {tuple(shape)} needs {int(np.prod(shape))} devices, "
                         f"there are {len(devices)}.")
    return Mesh(np.asarray(devices).reshape(shape), AXES)


def param_spec(shape, fsdp: int) -> PartitionSpec:
    """PartitionSpec of one parameter-like array under the fsdp rule above."""
    if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SHARDED_SIZE:
        return PartitionSpec()
    candidates = [i for i, n in enumerate(shape) if n % fsdp == 0]
    if not candidates:
        return PartitionSpec()
    axis = max(candidates, key=lambda i: shape[i])
    return PartitionSpec(*[("fsdp" if i == axis else None) for i in range(len(shape))])


def tree_shardings(tree, mesh: Mesh):
    """NamedShardings for a pytree of arrays (or ShapeDtypeStructs) under the fsdp rule."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree_util.tree_map(
        lambda x: NamedSharding(mesh, param_spec(tuple(getattr(x, "shape", ())), fsdp)), tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch dimension split over the mesh's data (and fsdp) axes, other dimensions replicated."""
    axes = tuple(a for a in AXES if a in mesh.axis_names)
    if not axes:
        raise ValueError(f"mesh axes {mesh.axis_names} include none of {AXES}.")
    return NamedSharding(mesh, PartitionSpec(axes))


def local_batch_size(global_batch_size: int, mesh: Mesh, field: str = "data.batch_size") -> int:
    """Rows of a global batch this process loads; checks the batch splits evenly (errors name
    the config `field` the batch size came from)."""
    sharding = batch_sharding(mesh)
    shards = int(np.prod([mesh.shape[a] for a in sharding.spec[0]]))
    if global_batch_size <= 0 or global_batch_size % shards:
        raise ValueError(f"{field} = {global_batch_size} must be a positive multiple of "
                         f"the {shards} devices the batch is split over (mesh {dict(mesh.shape)}).")
    if global_batch_size % jax.process_count():
        raise ValueError(f"{field} = {global_batch_size} must be divisible by the "
                         f"{jax.process_count()} processes.")
    return global_batch_size // jax.process_count()
