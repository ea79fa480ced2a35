"""Nothing is lost: corrupt checkpoints, the best checkpoint across resumes, one process per
workdir, preemption (one and two processes), non-finite states, failed writes, refused runs."""

import json
import os
import pathlib
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from tau_jax import data
from tau_jax.train import checkpoint, lock, loop
from tau_jax.train.checkpoint import Checkpointer
from tau_jax.train.workdir import load_config, schedule_epochs
from test_train import ROOT, cli, final_params, tiny_config, write_config_file


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def leftovers(workdir: pathlib.Path) -> list[str]:
    return [str(p) for p in workdir.rglob("*") if checkpoint.TMP_MARK in p.name]


@pytest.fixture(scope="module")
def two_checkpoints(dataset, tmp_path_factory):
    """A 4-step run checkpointed at steps 2 and 4."""
    config = tiny_config(dataset, max_steps=4, eval_every_steps=2)
    run = tmp_path_factory.mktemp("two") / "run"
    loop.train_and_evaluate(config, run)
    return config, run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from test_train import make_dataset
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


# -- corrupt checkpoints -------------------------------------------------------------------------

def corrupt(step_dir: pathlib.Path, kind: str = "state") -> None:
    """Damage a checkpoint as a crash, a bad disk or a person could."""
    if kind == "state":  # the arrays' files
        for f in (step_dir / "state").rglob("*"):
            if f.is_file():
                f.write_bytes(b"\0garbage")
    elif kind == "metrics":  # orbax reads these JSON files when it opens the folder
        (step_dir / "metrics" / "metrics").write_text("{garbage")
    elif kind == "step_metadata":
        (step_dir / "_CHECKPOINT_METADATA").write_text("")
    elif kind == "data_missing":
        shutil.rmtree(step_dir / "data")
    elif kind == "emptied":
        shutil.rmtree(step_dir)
        step_dir.mkdir()


@pytest.mark.parametrize("kind", ["state", "metrics"])
def test_train_moves_a_corrupt_newest_checkpoint_aside_and_goes_on(two_checkpoints, tmp_path,
                                                                   caplog, kind):
    config, run = two_checkpoints
    shutil.copytree(run, tmp_path / "run")
    corrupt(tmp_path / "run" / "checkpoints" / "4", kind)
    metrics = loop.train_and_evaluate(config, tmp_path / "run")  # resumes 2, writes 4 again
    assert np.isfinite(metrics["mse"])
    assert checkpoint_steps(tmp_path / "run") == [2, 4]
    aside = tmp_path / "run" / "checkpoints" / "unreadable" / "4"
    assert (aside / "state").is_dir(), "the damaged checkpoint is kept, not deleted"
    assert "Moved unreadable checkpoint 4 aside" in caplog.text
    step, _ = final_params(tmp_path / "run", config)
    assert step == 4
    corrupt(tmp_path / "run" / "checkpoints" / "4", kind)  # a second corruption of the same step
    loop.train_and_evaluate(config, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "unreadable" / "4.1").is_dir()


@pytest.mark.parametrize("kind", ["state", "metrics", "step_metadata", "data_missing",
                                  "emptied"])
def test_eval_skips_a_corrupt_checkpoint_without_moving_it(two_checkpoints, tmp_path, caplog,
                                                           kind):
    config, run = two_checkpoints
    shutil.copytree(run, tmp_path / "run")
    corrupt(tmp_path / "run" / "checkpoints" / "4", kind)
    step, _ = final_params(tmp_path / "run", config)
    assert step == 2
    assert "Checkpoint" in caplog.text and ("unreadable" in caplog.text
                                            or "damaged" in caplog.text)
    assert checkpoint_steps(tmp_path / "run") == [2, 4]  # read-only: nothing moved


def test_rerunning_a_finished_run_keeps_its_final_metrics(two_checkpoints, tmp_path):
    config, run = two_checkpoints
    shutil.copytree(run, tmp_path / "run")
    before = (tmp_path / "run" / "eval_metrics.json").read_text()
    assert loop.train_and_evaluate(config, tmp_path / "run") == {}  # nothing left to train
    assert (tmp_path / "run" / "eval_metrics.json").read_text() == before


def test_checkpoints_of_another_config_are_not_moved_aside(two_checkpoints, tmp_path):
    config, run = two_checkpoints
    shutil.copytree(run, tmp_path / "run")
    other = config.copy_and_resolve_references()
    other.optim.ema_decay = 0.9  # another training-state layout
    with pytest.raises(ValueError, match="can be restored into this config's training state"):
        loop.train_and_evaluate(other, tmp_path / "run")
    assert checkpoint_steps(tmp_path / "run") == [2, 4]
    assert not (tmp_path / "run" / "checkpoints" / "unreadable").exists()


# -- the best checkpoint -------------------------------------------------------------------------

def test_best_checkpoint_survives_any_number_of_resumes(tmp_path):
    history = {1: 5.0, 2: 1.0, 3: 3.0, 4: None, 5: 4.0, 6: None, 7: 2.0, 8: None}
    for steps in ((1, 2, 3), (4,), (5, 6), (7, 8)):  # each group is a new process's manager
        ckpt = Checkpointer(tmp_path, keep=1)
        for step in steps:
            ckpt.save(step, {"x": np.full(3, step, np.float32)}, {"i": step}, history[step])
        ckpt.close()
        assert ckpt.best_step() == 2
        assert 2 in ckpt.steps() and steps[-1] in ckpt.steps()
    assert Checkpointer(tmp_path, keep=1, writable=False).steps() == [2, 8]


# -- one process per workdir ---------------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from tau_jax.train.lock import workdir_lock
    with workdir_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_second_process_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run"), "60"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(lock.WorkdirLocked, match=rf"pid {holder.pid} on host "
                                                      rf"{socket.gethostname()}, started"):
            with lock.workdir_lock(tmp_path / "run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    # kill -9 leaves the file; the kernel dropped the lock: taken over with a warning
    assert json.loads((tmp_path / "run" / lock.LOCK_FILE).read_text())["pid"] == holder.pid
    with lock.workdir_lock(tmp_path / "run"):
        assert json.loads((tmp_path / "run" / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / lock.LOCK_FILE).exists()


def test_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps(
        {"pid": 2 ** 22 + 17, "host": socket.gethostname(), "started": "yesterday"}))
    with lock.workdir_lock(tmp_path):
        pass
    assert "Taking over the workdir lock left by pid 4194321" in caplog.text


def test_lock_written_on_another_host_is_never_taken_over(tmp_path):
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps(
        {"pid": 1, "host": "tpu-worker-7", "started": "2026-12-01T10:00:00"}))
    with pytest.raises(lock.WorkdirLocked, match="host tpu-worker-7.*delete the lock file"):
        with lock.workdir_lock(tmp_path):
            pass


# -- preemption ----------------------------------------------------------------------------------

def wait_for_training(workdir: pathlib.Path, proc, timeout: float = 300) -> None:
    """Block until the run has logged training steps (its TensorBoard files grew)."""
    tb = workdir / "tensorboard"
    before = sum(p.stat().st_size for p in tb.glob("events.*")) if tb.exists() else 0
    deadline = time.time() + timeout
    while sum(p.stat().st_size for p in tb.glob("events.*")) <= before + 200:
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)


def test_second_train_is_refused_sigterm_exits_143_and_ctrl_c_130(dataset, tmp_path):
    config = tiny_config(dataset, max_steps=10_000, eval_every_steps=10_000,
                         checkpoint_every_steps=10_000)
    config_file = write_config_file(config, tmp_path / "tiny.py")
    run = tmp_path / "run"
    first = cli("train", f"--config={config_file}", f"--workdir={run}")
    wait_for_training(run, first)

    start = time.time()
    second = cli("train", f"--config={config_file}", f"--workdir={run}")
    out2, _ = second.communicate(timeout=120)
    assert second.returncode == 1, out2[-3000:]
    assert time.time() - start < 60
    assert f"in use by another training process: pid {first.pid}" in out2
    assert "Traceback" not in out2

    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 143, out[-3000:]
    assert "SIGTERM received: saving a checkpoint before exiting." in out
    assert "stopped by SIGTERM at step" in out and "Traceback" not in out
    steps = checkpoint_steps(run)
    assert len(steps) == 1 and 0 < steps[0] < 10_000
    assert not (run / "eval_metrics.json").exists(), "a preempted run has no final metrics"
    assert not (run / lock.LOCK_FILE).exists()

    resumed = cli("train", f"--config={config_file}", f"--workdir={run}")  # then Ctrl-C
    wait_for_training(run, resumed)
    resumed.send_signal(signal.SIGINT)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 130, out[-3000:]
    assert f"Resumed from step {steps[0]}" in out and "stopped by SIGINT at step" in out
    assert max(checkpoint_steps(run)) > steps[0]


PREEMPT_WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_compilation_cache", False)  # two writers of one cache key
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, out, cfg, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import ml_collections
    from tau_jax.train import loop
    from tau_jax.train.preemption import Preempted
    config = ml_collections.ConfigDict(json.load(open(cfg)))
    try:
        loop.train_and_evaluate(config, workdir)
        result = {"preempted": None}
    except Preempted as e:
        result = {"preempted": str(e)}
    json.dump(result, open(out, "w"))
    jax.distributed.shutdown()
""")


def test_signal_handler_writes_nothing_and_the_loop_announces_it_once(caplog):
    """A signal landing inside a log write must not write again (a re-entered stream prints a
    "Logging error" traceback): the handler only sets the flag, the loop's next read logs it."""
    from tau_jax.train.preemption import Preemption
    with caplog.at_level("WARNING"), Preemption() as preemption:
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.requested and not caplog.records
        assert preemption.requested_between_steps() and preemption.reached(7)
    assert [r.getMessage() for r in caplog.records] == [
        "SIGTERM received: saving a checkpoint before exiting."]
    assert signal.getsignal(signal.SIGTERM) is not preemption._handle


@pytest.mark.xdist_group("subprocesses")  # one at a time: each starts JAX processes
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(dataset, tmp_path):
    config = tiny_config(dataset, max_steps=10_000, eval_every_steps=10_000,
                         checkpoint_every_steps=10_000)
    config.train.mesh = (2, 2)
    config.model.dw_impl = "lax"  # split over the processes (the C++ kernel's calls gather the batch)
    data.prepare(config.data)  # prepared once, read by both processes
    cfg = tmp_path / "config.json"
    cfg.write_text(config.to_json())
    run = tmp_path / "run"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    outs = [tmp_path / f"process_{i}.json" for i in (0, 1)]
    procs = [subprocess.Popen([sys.executable, "-c", PREEMPT_WORKER, str(port), str(i),
                               str(outs[i]), str(cfg), str(run)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (0, 1)]
    try:
        wait_for_training(run, procs[0])
        procs[1].send_signal(signal.SIGTERM)  # only the second host is told
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    results = [json.loads(o.read_text()) for o in outs]
    assert results[0]["preempted"] and results[0]["preempted"] == results[1]["preempted"]
    steps = checkpoint_steps(run)
    assert len(steps) == 1 and f"at step {steps[0]} " in results[0]["preempted"]
    assert not (run / "eval_metrics.json").exists()


# -- non-finite states ---------------------------------------------------------------------------

def test_non_finite_state_is_never_saved(dataset, tmp_path, monkeypatch):
    """Parameters that turn NaN while the logged loss is still finite stop the run; every
    checkpoint on disk is finite."""
    make = loop.make_train_step

    def poisoned(*args, **kwargs):
        step = make(*args, **kwargs)

        def run(state, frames):
            state, metrics = step(state, frames)
            if int(state.step) >= 3:  # the loss was computed from the previous, finite params
                state = state.replace(params=jax.tree_util.tree_map(
                    lambda x: x * np.nan, state.params))
            return state, metrics
        return run

    monkeypatch.setattr(loop, "make_train_step", poisoned)
    config = tiny_config(dataset, max_steps=6, eval_every_steps=100, checkpoint_every_steps=1)
    config.train.log_every_steps = 100  # the loss is checked only when saving
    with pytest.raises(FloatingPointError, match=r"training state .* became non-finite by "
                                                 r"step 3; the last good checkpoint \(step 2\)"):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert checkpoint_steps(tmp_path / "run") == [1, 2]
    _, params = final_params(tmp_path / "run", config)
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params))


def test_checkpointer_refuses_a_non_finite_state(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2)
    with pytest.raises(FloatingPointError, match="step 7 holds non-finite values"):
        ckpt.save(7, {"w": np.array([1.0, np.inf], np.float32)}, {})
    ckpt.close()
    assert ckpt.steps() == [] and not leftovers(tmp_path)


# -- failed writes -------------------------------------------------------------------------------

def limit_file_size(limit: int):
    """preexec_fn: files written by the child fail past `limit` bytes (EFBIG), as on a full
    disk, without root or a small file system."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_failed_checkpoint_write_is_one_sentence_and_the_run_resumes(dataset, tmp_path):
    config = tiny_config(dataset, max_steps=2, eval_every_steps=2)
    config.train.num_samples = 0
    config.model.hid_T = 128  # 0.5M parameters: checkpoint files well over the 128 KB limit
    run = tmp_path / "run"
    loop.train_and_evaluate(config, run)  # checkpoint 2

    # 128 KB: under the checkpoint's array files, over the lead-time plot (60 KB);
    # no sample GIF (over the limit as well: that failure is one sentence too, naming the GIF)
    config_file = write_config_file(config, tmp_path / "tiny.py")
    args = ("train", f"--config={config_file}", f"--workdir={run}", "--config.train.max_steps=4")
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE="false")  # no cache file to write
    full = subprocess.Popen([sys.executable, "-m", "tau_jax.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit_file_size(128 * 1024))
    out, err = full.communicate(timeout=600)
    assert full.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("tau-jax train:")]
    assert len(lines) == 1, err[-3000:]
    assert f"could not write checkpoint 4 in {run / 'checkpoints'}: File too large" in lines[0]
    assert "the last complete checkpoint is step 2" in lines[0]
    assert not leftovers(run)
    assert checkpoint_steps(run) == [2]

    config.train.max_steps = 4  # the same run, once there is room again
    loop.train_and_evaluate(config, run)
    assert checkpoint_steps(run) == [2, 4]
    assert final_params(run, config)[0] == 4


# -- refused runs ---------------------------------------------------------------------------------

def test_refused_run_leaves_no_workdir(dataset, tmp_path):
    config = tiny_config(dataset, max_steps=1)
    config.model.in_shape = (5, 16, 16, 1)  # found only once the data source is open
    with pytest.raises(ValueError, match="dataset 'custom' gives sequences"):
        loop.train_and_evaluate(config, tmp_path / "a" / "b" / "run")
    assert not (tmp_path / "a").exists()


def test_refused_run_in_an_existing_workdir_keeps_it_as_it_was(dataset, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    config = tiny_config(dataset, max_steps=1)
    config.model.in_shape = (5, 16, 16, 1)
    with pytest.raises(ValueError):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("change,message", [
    (lambda c: c.optim.update(lr=1e39), "optim.lr must be a positive number within float32"),
    (lambda c: c.optim.update(lr=float("nan")), "optim.lr must be a positive number"),
    (lambda c: c.train.update(max_steps=-5), "train.max_steps must be an integer >= 0, got -5"),
    (lambda c: c.train.update(checkpoint_every_steps=-1), "train.checkpoint_every_steps must"),
    (lambda c: c.train.update(eval_every_steps=-2), "train.eval_every_steps must be"),
    (lambda c: c.data.update(batch_size=0), "data.batch_size must be an integer >= 1, got 0"),
    (lambda c: c.data.update(eval_batch_size=6), "data.eval_batch_size = 6 must be a positive "
                                                 "multiple of the 8 devices"),
])
def test_invalid_values_are_refused_naming_the_field(dataset, tmp_path, change, message):
    config = tiny_config(dataset, max_steps=1)
    change(config)
    with pytest.raises(ValueError, match=message):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_max_steps_beyond_the_schedule_stretches_it_with_a_warning(dataset, caplog):
    config = tiny_config(dataset, max_steps=7)  # 3 epochs x 2 steps = 6
    assert schedule_epochs(config, 2) == 4
    assert "schedule is stretched to 4 epochs" in caplog.text
    config.train.max_steps = 6
    assert schedule_epochs(config, 2) == 3


def test_corrupt_config_json_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model": {"name": "tau",')
    with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'} is not valid JSON"):
        load_config(tmp_path)


def test_sigterm_during_an_evaluation_saves_the_checkpoint_without_finishing_it(
        dataset, tmp_path, monkeypatch):
    """A preemption notice gives seconds, an evaluation can take minutes: the evaluation gives
    way, the step's checkpoint is written, and the next run evaluates the finished run."""
    make = loop.make_predict_step
    calls = []

    def signalled(*args, **kwargs):
        step = make(*args, **kwargs)

        def run(variables, frames):
            calls.append(1)
            if len(calls) == 1:  # SIGTERM while the first evaluation batch is predicted
                os.kill(os.getpid(), signal.SIGTERM)
            return step(variables, frames)
        return run

    monkeypatch.setattr(loop, "make_predict_step", signalled)
    config = tiny_config(dataset, max_steps=2, eval_every_steps=2)
    config.data.eval_split = "train"  # 18 sequences: three evaluation batches of 8
    run = tmp_path / "run"
    from tau_jax.train.preemption import Preempted
    with pytest.raises(Preempted, match="stopped by SIGTERM at step 2 after saving checkpoint"):
        loop.train_and_evaluate(config, run)
    assert len(calls) == 1, "the evaluation went on after the signal"
    assert checkpoint_steps(run) == [2] and not (run / "eval_metrics.json").exists()
    assert "given up to save the checkpoint" in (run / "train.log").read_text()

    monkeypatch.setattr(loop, "make_predict_step", make)
    metrics = loop.train_and_evaluate(config, run)  # resumed at its last step: evaluates only
    assert np.isfinite(metrics["mse"]) and checkpoint_steps(run) == [2]
    assert json.loads((run / "eval_metrics.json").read_text())["mse"] == pytest.approx(
        metrics["mse"])
