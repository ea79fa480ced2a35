"""Training system: sharded == single device, multi-process, crash-safe resume, outputs, errors."""

import json
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from conftest import run_two_processes
from tau_jax import data, train
from tau_jax.config import base_config
from tau_jax.data.pipeline import train_batches
from tau_jax.metrics import evaluate as evaluate_metrics
from tau_jax.train import loop, optim, sharding
from tau_jax.train.checkpoint import Checkpointer
from tau_jax.train.sharding import make_mesh
from tau_jax.train.workdir import check_workdir, load_config

ROOT = pathlib.Path(__file__).parents[1]


def make_dataset(path: pathlib.Path) -> pathlib.Path:
    """24 smooth random clips of 8 frames, 16x16x1, in [0, 1], as a custom .npy dataset."""
    rng = np.random.default_rng(0)
    base = rng.uniform(size=(24, 1, 16, 16, 1))
    drift = np.linspace(0, 1, 8)[None, :, None, None, None]
    clips = np.clip(0.5 * base + 0.5 * np.sin(3 * drift + 6 * base), 0, 1).astype(np.float32)
    np.save(path, clips)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The .npy file and the tfds data dir it is prepared into, shared by the module's tests."""
    root = tmp_path_factory.mktemp("dataset")
    return make_dataset(root / "clips.npy"), root / "tfds"


def tiny_config(dataset, **train):
    clips, data_dir = dataset
    config = base_config()
    config.model.update(in_shape=(4, 16, 16, 1), out_frames=4, hid_S=8, hid_T=16, N_S=2, N_T=2)
    config.data.update(name="custom", custom_path=str(clips), custom_layout="NTHWC",
                       custom_normalize="none", custom_stride=8, custom_test_fraction=0.25,
                       in_frames=4, out_frames=4, data_dir=str(data_dir), batch_size=8,
                       eval_batch_size=8)
    config.optim.update(lr=1e-3, sched="onecycle")
    config.train.update(epochs=3, log_every_steps=1, num_samples=2, **train)
    return config


CONFIG_FILE = textwrap.dedent("""
    import json, pathlib
    from tau_jax.config import base_config
    def get_config():
        saved = json.loads(pathlib.Path(__file__).with_suffix(".json").read_text())
        config = base_config(saved["model"]["name"])
        for section, values in saved.items():
            config[section].update(values)
        return config
""")


def write_config_file(config, path: pathlib.Path) -> pathlib.Path:
    """A config .py file reproducing `config` (for runs through the CLI)."""
    path.write_text(CONFIG_FILE)
    path.with_suffix(".json").write_text(config.to_json())
    return path


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "tau_jax.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def final_params(workdir, config):
    """Parameters of the newest checkpoint in workdir, as numpy arrays."""
    step, state = loop.restore_state(config, workdir, make_mesh((1, 1), jax.devices()[:1]))
    return step, jax.tree_util.tree_map(np.asarray, state.params)


# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    """A 4-step run evaluated and checkpointed at steps 2 and 4."""
    config = tiny_config(dataset, max_steps=4, eval_every_steps=2)
    run = tmp_path_factory.mktemp("finished") / "run"
    return config, run, loop.train_and_evaluate(config, run)


def test_train_writes_checkpoints_tensorboard_and_samples(finished_run):
    config, run, metrics = finished_run
    assert set(metrics) >= {"mse", "mae", "ssim", "psnr", "mse_per_frame"}
    assert len(metrics["mse_per_frame"]) == 4
    assert json.loads((run / "config.json").read_text())["model"]["hid_T"] == 16
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert {p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()} == {"2", "4"}
    assert (run / "samples" / "step_00000004.png").exists()
    assert (run / "samples" / "step_00000004.gif").exists()
    assert (run / "samples" / "step_00000004_lead_time.png").exists()
    assert len(metrics["copy_last_ssim_per_frame"]) == 4  # the lead-time plot's baseline curve
    assert json.loads((run / "eval_metrics.json").read_text())["mse"] == pytest.approx(
        metrics["mse"])
    # The copy-last-input-frame baseline is reported beside the model, with the same metrics.
    source = data.get_source(config.data, "test")
    clips = np.stack([source[i] for i in range(len(source))])
    copy_last = evaluate_metrics(np.repeat(clips[:, 3:4], 4, axis=1), clips[:, 4:])
    assert metrics["copy_last_mse"] == pytest.approx(copy_last["mse"], rel=1e-6)
    assert metrics["copy_last_ssim"] == pytest.approx(copy_last["ssim"], rel=1e-6)
    # `evaluate` on the workdir reproduces the final metrics from the checkpoint.
    again = train.evaluate(run, checkpoint="latest")
    assert again["step"] == 4 and again["mse"] == pytest.approx(metrics["mse"], rel=1e-6)


def event_tags(folder: pathlib.Path) -> set[str]:
    """Summary tags in the TensorBoard event files of `folder` (TFRecord framing, no TF)."""
    import struct
    from tensorboardX.proto import event_pb2
    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        raw = path.read_bytes()
        while raw:
            (n,) = struct.unpack("<Q", raw[:8])
            event = event_pb2.Event.FromString(raw[12:12 + n])
            tags |= {v.tag for v in event.summary.value}
            raw = raw[16 + n:]
    return tags


def test_start_block_log_parameters_normalisation_and_tensorboard(finished_run):
    config, run, _ = finished_run
    log = (run / "train.log").read_text()
    for line in ("model     tau: ", "    translator ", "devices   ", "; mesh data ",
                 "batch     8 sequences (", "schedule  4 steps = 2 epochs of 2 (onecycle",
                 "data      custom: 18 train / 6 test sequences of 4 -> 4 frames of 16x16x1",
                 f"workdir   {run}", "Compiling the train step", "First step done in",
                 "step 4 eval: mse "):
        assert line in log, line
    assert "(copy last " in log  # each eval metric beside its baseline
    table = (run / "parameters.txt").read_text()  # clu's per-parameter table
    assert "| Name" in table and "translator/" in table
    norm = json.loads((run / "normalisation.json").read_text())
    assert norm["sub"] == [0.0] and norm["div"] == [1.0]  # custom_normalize='none'
    tags = event_tags(run / "tensorboard")
    assert {"eval/samples", "eval/lead_time", "eval/mse_per_frame/frame_04",
            "custom_scalars__config__"} <= tags
    assert not any(t.startswith("eval/copy_last_mse_per_frame") for t in tags)


def test_eval_saves_predictions_that_vis_draws(finished_run):
    from tau_jax import predict
    config, run, _ = finished_run
    metrics = train.evaluate(run, checkpoint=4, save_predictions=True)
    folder = run / "predictions" / "4"
    assert metrics["predictions"] == str(folder)
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["4"]  # no temporary left
    inputs, trues, preds = (np.load(folder / f"{k}.npy") for k in ("inputs", "trues", "preds"))
    source = data.get_source(config.data, "test")
    clips = np.stack([source[i] for i in range(len(source))])  # normalisation 'none': raw
    np.testing.assert_array_equal(inputs, clips[:, :4])
    np.testing.assert_array_equal(trues, clips[:, 4:])
    np.testing.assert_allclose(preds, predict.load(run, checkpoint=4).predict(inputs, 4),
                               atol=1e-5)
    assert json.loads((folder / "metrics.json").read_text())["mse"] == pytest.approx(
        metrics["mse"])
    drawn = cli("vis", "--workdir", str(run), "--sequences", "0", "--mp4")
    out = drawn.communicate(timeout=300)[0]
    assert drawn.returncode == 0, out
    for suffix in (".png", ".gif", ".mp4"):
        assert (folder / f"vis_0{suffix}").stat().st_size > 0
    wrong = cli("vis", "--workdir", str(run), "--sequences", "0,9")
    out = wrong.communicate(timeout=300)[0]
    assert wrong.returncode == 2
    assert out.strip().endswith("--sequences 0,9: the saved predictions of step 4 hold "
                                "sequences 0 to 5.")


def test_eval_picks_the_best_latest_or_a_given_checkpoint(finished_run):
    _, run, metrics = finished_run
    at_2 = train.evaluate(run, checkpoint=2)
    assert at_2["step"] == 2
    best = train.evaluate(run)  # OpenSTL tests its best checkpoint: the default
    assert best["step"] == (2 if at_2["mse"] < metrics["mse"] else 4)
    assert best["mse"] == pytest.approx(min(at_2["mse"], metrics["mse"]), rel=1e-6)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint 3 .* it has steps \[2, 4\]"):
        train.evaluate(run, checkpoint=3)
    with pytest.raises(ValueError, match="--checkpoint must be best, latest or a step number"):
        train.evaluate(run, checkpoint="newest")


def three_steps(config, mesh):
    """Losses and final state of 3 training steps on the mesh (same batches on any mesh)."""
    tx, _ = optim.create_optimizer(config.optim, 2, config.train.epochs)
    state, shardings = loop.init_state(config, tx, mesh)
    step = loop.make_train_step(loop.models.build(config.model), config, tx, shardings, mesh)
    batches = train_batches(data.get_source(config.data, "train"), 8, sharding.batch_sharding(mesh),
                            seed=0)
    losses = []
    for _ in range(3):
        state, metrics = step(state, next(batches))
        losses.append(float(metrics["loss"]))
    return losses, state


@pytest.fixture(scope="module")
def one_device(dataset):
    losses, state = three_steps(tiny_config(dataset), make_mesh((1, 1), jax.devices()[:1]))
    return losses, jax.tree_util.tree_map(np.asarray, state.params)


@pytest.mark.parametrize("mesh_shape", [(8, 1), (4, 2)])
def test_sharded_training_equals_one_device(dataset, one_device, mesh_shape, monkeypatch):
    monkeypatch.setattr(sharding, "MIN_SHARDED_SIZE", 1024)  # so the tiny model's kernels shard
    losses, state = three_steps(tiny_config(dataset), make_mesh(mesh_shape))
    np.testing.assert_allclose(losses, one_device[0], rtol=2e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
                           jax.tree_util.tree_map(np.asarray, state.params), one_device[1])
    if mesh_shape[1] > 1:  # FSDP really shards the large kernels
        fc1 = state.params["translator"]["enc_0"]["block"]["mlp"]["fc1"]["kernel"]
        assert "fsdp" in fc1.sharding.spec


WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_compilation_cache", False)  # two writers of one cache key
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, out, cfg = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import ml_collections, numpy as np
    from jax.experimental import multihost_utils
    from tau_jax import data, models
    from tau_jax.data.pipeline import train_batches
    from tau_jax.train import loop, optim, sharding
    from tau_jax.train.sharding import make_mesh
    config = ml_collections.ConfigDict(json.load(open(cfg)))
    mesh = make_mesh((2, 2))
    tx, _ = optim.create_optimizer(config.optim, 2, config.train.epochs)
    state, shardings = loop.init_state(config, tx, mesh)
    step = loop.make_train_step(models.build(config.model), config, tx, shardings, mesh)
    batches = train_batches(data.get_source(config.data, "train"), 8, sharding.batch_sharding(mesh),
                            seed=0)
    losses = []
    for _ in range(3):
        state, metrics = step(state, next(batches))
        losses.append(float(metrics["loss"]))
    kernel = multihost_utils.process_allgather(
        state.params["translator"]["enc_0"]["block"]["mlp"]["fc1"]["kernel"], tiled=True)
    json.dump({"losses": losses, "kernel": np.asarray(kernel).tolist()}, open(out, "w"))
    jax.distributed.shutdown()
""")


@pytest.mark.xdist_group("subprocesses")  # one at a time: each starts JAX processes
def test_two_processes_train_like_one_device(dataset, tmp_path):
    config = tiny_config(dataset)
    config.model.dw_impl = "lax"  # split over the processes (the C++ kernel's calls gather the batch)
    data.prepare(config.data)  # prepared once, read by both processes
    cfg = tmp_path / "config.json"
    cfg.write_text(config.to_json())
    losses, state = three_steps(config, make_mesh((1, 1), jax.devices()[:1]))
    kernel = np.asarray(state.params["translator"]["enc_0"]["block"]["mlp"]["fc1"]["kernel"])
    for result in run_two_processes(WORKER, tmp_path, cfg):
        np.testing.assert_allclose(result["losses"], losses, rtol=2e-5)
        np.testing.assert_allclose(np.asarray(result["kernel"]), kernel, atol=2e-5)


def wait_for_checkpoint(workdir: pathlib.Path, proc, step: int, timeout: float = 300):
    """Block until checkpoint `step` is finalised (orbax renames tmp dirs when done)."""
    deadline = time.time() + timeout
    target = workdir / "checkpoints" / str(step)
    while time.time() < deadline:
        if target.is_dir() and (target / "state").is_dir():
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint {step} after {timeout} s")


@pytest.mark.xdist_group("subprocesses")  # one at a time: each starts JAX processes
def test_sigkill_then_resume_ends_bitwise_equal(dataset, tmp_path):
    config = tiny_config(dataset, max_steps=8, eval_every_steps=4, checkpoint_every_steps=2)
    config_file = write_config_file(config, tmp_path / "tiny.py")
    straight = cli("train", f"--config={config_file}", f"--workdir={tmp_path / 'straight'}")
    out, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, out[-3000:]

    crashed = cli("train", f"--config={config_file}", f"--workdir={tmp_path / 'crashed'}")
    wait_for_checkpoint(tmp_path / "crashed", crashed, 4)
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    resumed = cli("train", f"--config={config_file}", f"--workdir={tmp_path / 'crashed'}")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    assert "Resumed from step" in out

    step_a, a = final_params(tmp_path / "straight", config)
    step_b, b = final_params(tmp_path / "crashed", config)
    assert step_a == step_b == 8
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_checkpoints_keep_the_latest_and_the_best(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2)
    for step, val_mse in {1: 5.0, 2: 1.0, 3: 3.0, 4: None, 5: 4.0, 6: None}.items():
        ckpt.save(step, {"x": np.full(3, step, np.float32)}, {"next_index": step}, val_mse)
        ckpt.wait()
    assert ckpt.steps() == [2, 5, 6]  # best val MSE (step 2) + the newest two
    ckpt.close()


def test_nan_loss_stops_with_the_step(dataset, tmp_path):
    config = tiny_config(dataset, max_steps=30, eval_every_steps=100)
    config.optim.lr = 1e12
    with pytest.raises(FloatingPointError, match=r"training loss became (nan|inf) by step \d+"):
        loop.train_and_evaluate(config, tmp_path / "run")


@pytest.mark.parametrize("change,message", [
    (lambda c: c.optim.update(lr=-1.0), "optim.lr must be a positive number"),
    (lambda c: c.data.update(batch_size=6), "positive multiple of the 8 devices"),
    (lambda c: c.train.update(mesh=(3, 2)), r"train.mesh \(3, 2\) needs 6 devices"),
    (lambda c: c.model.update(in_shape=(5, 16, 16, 1)), "dataset 'custom' gives sequences"),
])
def test_bad_config_fails_before_compiling(dataset, tmp_path, change, message):
    config = tiny_config(dataset, max_steps=1)
    change(config)
    with pytest.raises(ValueError, match=message):
        loop.train_and_evaluate(config, tmp_path / "run")


def test_unwritable_workdir_is_a_clear_error(dataset, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(PermissionError, match="Cannot write to workdir"):
        loop.train_and_evaluate(tiny_config(dataset, max_steps=1), tmp_path / "file" / "run")


def test_workdir_of_another_model_is_refused(dataset, tmp_path):
    config = tiny_config(dataset, max_steps=1)
    (tmp_path / "run").mkdir()
    other = tiny_config(dataset)
    other.model.hid_T = 32
    (tmp_path / "run" / "config.json").write_text(other.to_json())
    with pytest.raises(ValueError, match=r"different model \(model.hid_T: 32 there, 16 now\)"):
        loop.train_and_evaluate(config, tmp_path / "run")


def test_workdir_saved_before_a_model_field_existed_is_accepted(dataset, tmp_path):
    """A run saved by an older tau-jax lacks newer fields; they had their defaults there."""
    config = tiny_config(dataset)
    saved = json.loads(config.to_json())
    del saved["model"]["tau_ablation"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    check_workdir(tmp_path, config)  # no error
    old = load_config(tmp_path)  # resuming with the run's own (older) config
    assert old.model.tau_ablation == "none"  # made whole where it is loaded
    check_workdir(tmp_path, old)
    config.model.tau_ablation = "no_sa"
    with pytest.raises(ValueError, match=r"model.tau_ablation: 'none' there, 'no_sa' now"):
        check_workdir(tmp_path, config)


def test_unknown_config_field_is_an_error(dataset, tmp_path):
    config_file = write_config_file(tiny_config(dataset), tmp_path / "tiny.py")
    proc = cli("train", f"--config={config_file}", f"--workdir={tmp_path / 'run'}",
               "--config.train.max_stepz=3")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "max_stepz" in out
