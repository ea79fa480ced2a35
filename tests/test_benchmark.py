"""`tau-jax benchmark`: runs a tiny config on CPU and writes well-formed JSON; its definitions
(OpenSTL's inference batch, peak table, medians) and errors; the OpenSTL peer's loss and patch
layout equal ours, and its import shim runs a checkout's model (with torch, when installed)."""

import json
import statistics
import subprocess
import sys
import types

import numpy as np
import pytest

from test_train import ROOT, cli, write_config_file
from tau_jax import losses
from tau_jax.bench import benchmark, openstl_peer
from tau_jax.config import base_config
from tau_jax.models.recurrent.patches import reshape_patch


def tiny_config():
    config = base_config()
    config.model.update(in_shape=(3, 8, 8, 1), out_frames=3, hid_S=4, hid_T=8, N_S=2, N_T=2,
                        mlp_ratio=2.0, dw_impl="lax")  # 'lax' compiles 2x faster on CPU
    config.data.batch_size = 8
    config.loss.alpha = 0.1
    return config


@pytest.mark.xdist_group("subprocesses")
def test_cli_writes_json(tmp_path):
    config_file = write_config_file(tiny_config(), tmp_path / "tiny.py")
    out = tmp_path / "results" / "bench.json"
    proc = cli("benchmark", f"--config={config_file}", "--precision=bf16", "--repeats=3",
               "--steps=2", "--infer_batch=8", "--warmup=1", "--peak_tflops=0.5",
               f"--output={out}")
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log
    assert "train" in log and "seq/s" in log and str(out) in log
    result = json.loads(out.read_text())
    assert set(result) == {"provenance", "config", "tau_jax"}  # no peer without --openstl
    prov = result["provenance"]
    assert "benchmark" in prov["command"] and f"--output={out}" in prov["command"]
    assert {"date", "commit", "machine", "device", "jax", "python"} <= set(prov)
    assert result["config"]["batch"] == 8 and result["config"]["precision"] == "bf16"
    ours = result["tau_jax"]
    assert len(ours["train_step_s"]) == 3 and len(ours["infer_pass_s"]) == 3
    assert ours["train_seq_per_s"] == pytest.approx(8 / statistics.median(ours["train_step_s"]))
    assert ours["infer_seq_per_s"] == pytest.approx(8 / statistics.median(ours["infer_pass_s"]))
    assert ours["train_compile_s"] > 0 and ours["train_step_flops"] > ours["infer_pass_flops"] > 0
    assert ours["train_static_bytes"] > 0
    assert ours["params"] > 0 and np.isfinite(ours["final_loss"])
    assert ours["precision"].startswith("bfloat16")
    assert ours["achieved_tflops"] == pytest.approx(
        ours["train_step_flops"] * ours["train_seq_per_s"] / 8 / 1e12)
    assert ours["mfu"] == pytest.approx(ours["achieved_tflops"] / 0.5)  # the given peak
    assert not list(out.parent.glob("*.tmp"))


def test_openstl_inference_batch_and_peak_table():
    assert benchmark.inference_batch((10, 64, 64, 1)) == 100
    assert benchmark.inference_batch((10, 128, 160, 3)) == 10
    h100 = types.SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
    assert benchmark.peak_tflops("bfloat16", h100) == 989.4
    assert benchmark.peak_tflops("float32", types.SimpleNamespace(device_kind="NVIDIA H200")) \
        == 494.7
    assert benchmark.peak_tflops("bfloat16", types.SimpleNamespace(device_kind="cpu")) is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(precision="fp16"), "--precision"),
    (dict(batch=3), "--batch 3 is not divisible"),
    (dict(steps=0), "--steps must be at least 1"),
    (dict(infer_batch=5), "--infer_batch 5"),
    (dict(infer_steps=0), "--infer_steps must be at least 1"),
    (dict(warmup=-1), "--warmup must be at least 0"),
    (dict(infer_batch=8, openstl="/nonexistent/OpenSTL"), "not an OpenSTL checkout"),
])
def test_bad_requests_fail_before_compiling(kwargs, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        benchmark.run(tiny_config(), **kwargs)


def test_model_dtype_is_set_by_precision_only():
    config = tiny_config()
    config.model.dtype = "bfloat16"
    with pytest.raises(ValueError, match="--precision"):
        benchmark.run(config, infer_batch=8)


def test_models_without_an_openstl_counterpart(tmp_path):
    config = tiny_config()
    config.model.name = "timesformer"
    with pytest.raises(ValueError, match="no OpenSTL counterpart"):
        openstl_peer.counterpart(config.model, tmp_path)


# ----------------------------------------------------------------------------------------------
# The torch side (torch is an optional extra: `pip install 'tau-jax[openstl]'`)
# ----------------------------------------------------------------------------------------------

def test_peer_ddr_equals_ours():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(2, 2, 5, 4, 4, 1)) * 0.3
    ours = float(losses.ddr(pred, target))
    theirs = float(openstl_peer.ddr(torch.from_numpy(pred), torch.from_numpy(target)))
    np.testing.assert_allclose(theirs, ours, rtol=1e-6)


def test_peer_patches_equal_ours():
    torch = pytest.importorskip("torch")
    frames = np.random.default_rng(1).normal(size=(2, 3, 8, 12, 2)).astype(np.float32)
    theirs = openstl_peer._patches(torch.from_numpy(frames), 4).numpy()
    np.testing.assert_array_equal(theirs, np.asarray(reshape_patch(frames, 4)))


FAKE_SIMVP = '''
import torch
from torch import nn


class SimVP_Model(nn.Module):
    """A stand-in with OpenSTL's constructor and (B, T, C, H, W) interface."""

    def __init__(self, in_shape, hid_S=16, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], in_shape[1], 3, padding=1)

    def forward(self, x):
        b, t, c, h, w = x.shape
        return self.conv(x.view(b * t, c, h, w)).view(b, t, c, h, w)
'''


def test_side_by_side_with_a_checkout(tmp_path):
    pytest.importorskip("torch")
    models_dir = tmp_path / "OpenSTL" / "openstl" / "models"
    models_dir.mkdir(parents=True)
    (models_dir / "simvp_model.py").write_text(FAKE_SIMVP)
    result = benchmark.run(tiny_config(), repeats=2, steps=1, warmup=1, infer_batch=8,
                           openstl=str(tmp_path / "OpenSTL"), argv=["test"])
    theirs = result["openstl"]
    assert theirs["params"] == 10 and len(theirs["train_step_s"]) == 2
    assert result["ratio"]["train"] == pytest.approx(
        result["tau_jax"]["train_seq_per_s"] / theirs["train_seq_per_s"])
    assert "parameter counts differ" in result["warning"]


def test_recurrent_peer_inputs(tmp_path):
    torch = pytest.importorskip("torch")
    config = base_config("predrnnv2")
    config.model.update(in_shape=(3, 8, 8, 1), out_frames=2, num_hidden=(4, 4), patch_size=2)
    peer = types.SimpleNamespace(config=config, recurrent=True, torch=torch,
                                 device=torch.device("cpu"))
    batch = openstl_peer.Peer.batch(peer, 2)
    assert tuple(batch.shape) == (2, 5, 4, 4, 4)
    train_mask = openstl_peer.Peer._mask(peer, 2, True)
    test_mask = openstl_peer.Peer._mask(peer, 2, False)
    assert tuple(train_mask.shape) == (2, 3, 4, 4, 4)  # reverse sampling: T + T' - 2
    np.testing.assert_array_equal(test_mask[:, :2].numpy(), 1.0)  # first T - 1 given
    np.testing.assert_array_equal(test_mask[:, 2:].numpy(), 0.0)


def test_readme_table_is_generated_from_the_results():
    """README.md's benchmark table is `experiments/benchmark_table.py`'s output for the JSON files
    in experiments/results (run `python experiments/benchmark_table.py --write` after a run)."""
    import importlib.util
    path = ROOT / "experiments" / "benchmark_table.py"
    spec = importlib.util.spec_from_file_location("benchmark_table", path)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    readme = (ROOT / "README.md").read_text()
    assert table.replace_in(readme) == readme
    rows = table.table().splitlines()[2:]
    assert len(rows) == len(list(table.RESULTS.glob("benchmark_*.json")))


def test_benchmark_imports_without_tensorflow_or_grain():
    """Accelerator images often lack TensorFlow and grain: the CLI, the train step and the
    benchmark import without them (they load only when a dataset is built or read)."""
    code = ("import sys, tau_jax.cli, tau_jax.bench.benchmark, tau_jax.train.loop; "
            "print(sorted(m for m in ('tensorflow', 'grain', 'tensorflow_datasets') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out
