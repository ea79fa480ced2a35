"""Input pipeline: a random-access source -> grain -> global batches placed by a sharding.

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
from typing import Any
from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding

def _local_rows(global_batch_size: int, sharding: NamedSharding) -> int:
    """Rows of a global batch this process loads (train.sharding.local_batch_size has checked
    the batch against the mesh and names the config field)."""
    rows = global_batch_size // jax.process_count()
    if global_batch_size < 1 or rows * jax.process_count() != global_batch_size:
        raise ValueError(f"a global batch of {global_batch_size} does not split over "
                         f"{jax.process_count()} processes.")
    sharding.shard_shape((global_batch_size,))  # ValueError when the devices do not divide it
    return rows


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


def train_batches(source, global_batch_size: int, sharding: NamedSharding, seed: int, *,
                  num_threads: int = 4, prefetch: int = 2) -> Iterator[jax.Array]:
    """Endless (grain) iterator of global training batches `(B, T+T', H, W, C)` placed by
    `sharding` (train.sharding.batch_sharding); `get_state()` / `set_state()` resume it exactly
    (deterministic in (seed, step))."""
    import grain  # here, not at the top: the train step and benchmark run without grain
    if len(source) == 0:
        raise ValueError("the training split is empty.")
    local = _local_rows(global_batch_size, sharding)
    order = grain.MapDataset.range(len(source)).seed(seed).shuffle().repeat()
    rows = _LocalRow(order, global_batch_size, local, jax.process_index())
    ds = (grain.MapDataset.range(0, sys.maxsize).map(rows).map(_Read(source))
          .batch(local, drop_remainder=True))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                              prefetch_buffer_size=max(prefetch * local, 1)))
    it = it.map(_to_global(sharding, global_batch_size))
    return iter(grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=prefetch))


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    return -(-num_examples // global_batch_size)


def eval_batches(source, global_batch_size: int, sharding: NamedSharding, *,
                 num_threads: int = 4) -> Iterator[tuple[jax.Array, jax.Array]]:
    """Every sample of `source` exactly once, in order, as (frames, mask) global batches; the
    last batch is padded with copies of sample 0 and `mask` (B,) is False on the padding."""
    import grain
    n = len(source)
    if n == 0:
        raise ValueError("the evaluation split is empty.")
    local = _local_rows(global_batch_size, sharding)
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
