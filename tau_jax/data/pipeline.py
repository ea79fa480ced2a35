"""Input pipeline: a random-access source -> grain -> global batches sharded over the mesh.

Global batches are defined on one global sample order (the source shuffled by `seed`, reshuffled
every epoch), independent of the number of processes and devices: process p of P reads rows
[p*B/P, (p+1)*B/P) of each global batch and `jax.make_array_from_process_local_data` assembles
the global `jax.Array`. So a run on 1 device, 8 devices or 2 hosts sees the same batches, and
the iterator state (grain's next index) resumes a run on exactly the batch it would have seen.

Evaluation walks the split once across all processes; the last batch is padded by repeating
sample 0 and carries a mask marking the real rows.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXES = ("data", "fsdp")  # mesh axes the batch dimension is split over (those present)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch dimension split over the mesh's data (and fsdp) axes, other dimensions replicated."""
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    if not axes:
        raise ValueError(f"mesh axes {mesh.axis_names} include none of {BATCH_AXES}.")
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


@dataclasses.dataclass(frozen=True)
class _LocalRow:
    """Position q of this process's sample stream -> sample index in the global order."""

    order: Any  # MapDataset of sample indices, shuffled and repeated
    global_batch: int
    local_batch: int
    process_index: int

    def __call__(self, q: int) -> int:
        step, row = divmod(q, self.local_batch)
        return self.order[step * self.global_batch + self.process_index * self.local_batch + row]


@dataclasses.dataclass(frozen=True)
class _Read:
    source: Any

    def __call__(self, index: int) -> np.ndarray:
        return np.asarray(self.source[int(index)], np.float32)


def _to_global(sharding: NamedSharding, global_batch: int):
    def put(local: np.ndarray) -> jax.Array:
        shape = (global_batch,) + local.shape[1:]
        return jax.make_array_from_process_local_data(sharding, local, shape)
    return put


def train_batches(source, global_batch_size: int, mesh: Mesh, seed: int, *,
                  num_threads: int = 4, prefetch: int = 2) -> Iterator[jax.Array]:
    """Endless (grain) iterator of global training batches `(B, T+T', H, W, C)`, sharded over
    the batch axes; `get_state()` / `set_state()` resume it exactly (deterministic in (seed,
    step))."""
    import grain  # here, not at the top: the train step and benchmark run without grain
    if len(source) == 0:
        raise ValueError("the training split is empty.")
    local = local_batch_size(global_batch_size, mesh)
    order = grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat()
    rows = _LocalRow(order, global_batch_size, local, jax.process_index())
    ds = (grain.MapDataset.range(0, sys.maxsize).map(rows).map(_Read(source))
          .batch(local, drop_remainder=True))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                              prefetch_buffer_size=max(prefetch * local, 1)))
    it = it.map(_to_global(batch_sharding(mesh), global_batch_size))
    return iter(grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=prefetch))


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    return -(-num_examples // global_batch_size)


def eval_batches(source, global_batch_size: int, mesh: Mesh, *,
                 num_threads: int = 4) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Every sample of `source` exactly once, in order, as (frames, mask) global batches; the
    last batch is padded with copies of sample 0 and `mask` (B,) is False on the padding."""
    import grain
    n = len(source)
    if n == 0:
        raise ValueError("the evaluation split is empty.")
    local = local_batch_size(global_batch_size, mesh, "data.eval_batch_size")
    sharding = batch_sharding(mesh)
    positions = _EvalRow(global_batch_size, local, jax.process_index() * local)
    ds = (grain.MapDataset.range(num_eval_batches(n, global_batch_size) * local)
          .map(positions).map(_ReadMasked(source, n)).batch(local))
    put = _to_global(sharding, global_batch_size)
    for frames, mask in ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads)):
        yield put(frames), put(mask)


@dataclasses.dataclass(frozen=True)
class _EvalRow:
    """Position q of this process's eval stream -> global row index (may exceed the split)."""

    global_batch: int
    local_batch: int
    start: int

    def __call__(self, q: int) -> int:
        step, row = divmod(q, self.local_batch)
        return step * self.global_batch + self.start + row


@dataclasses.dataclass(frozen=True)
class _ReadMasked:
    source: Any
    size: int

    def __call__(self, g: int) -> tuple[np.ndarray, np.bool_]:
        real = g < self.size
        return np.asarray(self.source[int(g) if real else 0], np.float32), np.bool_(real)
