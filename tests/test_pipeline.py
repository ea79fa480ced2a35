"""Input pipeline: same global batches on any mesh or process count, exact resume, full eval."""

import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from tau_jax.data.pipeline import eval_batches, num_eval_batches, train_batches
from tau_jax.train.sharding import batch_sharding, local_batch_size



class ArraySource:
    """Sample i is a (4, 2, 2, 1) clip filled with the value i: batches reveal their indices."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.full((4, 2, 2, 1), i, np.float32)


def mesh_of(num_devices, fsdp=1):
    devices = np.array(jax.devices()[:num_devices]).reshape(num_devices // fsdp, fsdp)
    return Mesh(devices, ("data", "fsdp"))


def batches_on(num_devices, fsdp=1):
    """The batch sharding the trainer uses on a (data, fsdp) mesh of `num_devices`."""
    return batch_sharding(mesh_of(num_devices, fsdp))


def indices(batch):
    return np.asarray(batch)[:, 0, 0, 0, 0].astype(int).tolist()


def take(it, n):
    return [indices(next(it)) for _ in range(n)]


def test_same_global_batches_on_1_and_8_devices():
    source = ArraySource(37)
    one = take(train_batches(source, 8, batches_on(1), seed=3), 12)
    eight = train_batches(source, 8, batches_on(8, fsdp=2), seed=3)
    first = next(eight)
    assert first.sharding.spec[0] == ("data", "fsdp")
    assert len(first.addressable_shards) == 8 and first.addressable_shards[0].data.shape[0] == 1
    assert [indices(first)] + take(eight, 11) == one


def test_epochs_cover_the_data_and_are_reshuffled():
    source = ArraySource(16)
    batches = take(train_batches(source, 4, batches_on(1), seed=0), 8)
    epoch1, epoch2 = sum(batches[:4], []), sum(batches[4:], [])
    assert sorted(epoch1) == sorted(epoch2) == list(range(16))
    assert epoch1 != epoch2
    assert take(train_batches(source, 4, batches_on(1), seed=1), 4) != batches[:4]


def test_resume_from_saved_state_gives_the_identical_next_batch():
    source = ArraySource(23)
    it = train_batches(source, 4, batches_on(2), seed=5)
    take(it, 7)
    state = it.get_state()
    expected = take(it, 3)
    resumed = train_batches(source, 4, batches_on(2), seed=5)
    resumed.set_state(state)
    assert take(resumed, 3) == expected


def test_eval_covers_the_split_exactly_once_with_a_padding_mask():
    source = ArraySource(13)
    got, real = [], 0
    for frames, mask in eval_batches(source, 4, batches_on(4)):
        assert frames.shape == (4, 4, 2, 2, 1) and mask.shape == (4,)
        m = np.asarray(mask)
        got += [i for i, keep in zip(indices(frames), m) if keep]
        real += int(m.sum())
    assert got == list(range(13)) and real == 13
    assert num_eval_batches(13, 4) == 4


@pytest.mark.parametrize("batch,devices,message", [
    (6, 4, "must be a positive multiple of the 4 devices"),
    (0, 1, "must be a positive multiple"),
])
def test_batch_not_divisible_is_a_clear_error(batch, devices, message):
    with pytest.raises(ValueError, match=message):
        local_batch_size(batch, mesh_of(devices))


def test_empty_source_is_a_clear_error():
    with pytest.raises(ValueError, match="split is empty"):
        next(eval_batches(ArraySource(0), 4, batches_on(1)))


WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_compilation_cache", False)  # two writers of one cache key
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import numpy as np
    from jax.sharding import Mesh
    sys.path.insert(0, "tests")
    from test_pipeline import ArraySource, indices
    from tau_jax.data.pipeline import eval_batches, train_batches
    from tau_jax.train.sharding import batch_sharding
    mesh = batch_sharding(Mesh(np.array(jax.devices()).reshape(4, 1), ("data", "fsdp")))
    local = lambda a: np.concatenate([np.asarray(s.data) for s in sorted(
        a.addressable_shards, key=lambda s: s.index[0].start)])
    it = train_batches(ArraySource(37), 8, mesh, seed=3)
    train = [local(next(it))[:, 0, 0, 0, 0].astype(int).tolist() for _ in range(5)]
    evals = [[int(v) for v, m in zip(local(f)[:, 0, 0, 0, 0], local(k)) if m]
             for f, k in eval_batches(ArraySource(13), 8, mesh)]
    json.dump({"train": train, "eval": evals}, open(out, "w"))
    jax.distributed.shutdown()
""")


@pytest.mark.xdist_group("subprocesses")  # one at a time: each starts JAX processes
def test_two_processes_each_read_their_own_half(tmp_path):
    from conftest import run_two_processes  # here: the workers import this module, not conftest
    halves = run_two_processes(WORKER, tmp_path)
    single = take(train_batches(ArraySource(37), 8, batches_on(4), seed=3), 5)
    for step, batch in enumerate(single):
        assert halves[0]["train"][step] == batch[:4]
        assert halves[1]["train"][step] == batch[4:]
    both = [i for a, b in zip(halves[0]["eval"], halves[1]["eval"]) for i in a + b]
    assert both == list(range(13))
