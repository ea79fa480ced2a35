"""`tau-jax compile`: the real train step compiled ahead of time for a TPU topology on this CPU
host (libtpu's compiler; no TPU needed), and what the report reads from it."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from test_train import ROOT, write_config_file
from tau_jax.bench import tpu_plan
from tau_jax.config import base_config
from tau_jax.train.sharding import MIN_SHARDED_SIZE

TOPOLOGY = "v5e:2x2"  # 4 chips, one host: the smallest slice with an fsdp axis of 4


def tiny_config(mesh=(-1, 1), batch=8, hid_T=64):
    config = base_config()
    config.model.update(in_shape=(4, 16, 16, 1), out_frames=4, hid_S=8, hid_T=hid_T, N_S=2,
                        N_T=2, dw_impl="lax")
    config.data.batch_size = batch
    config.train.mesh = mesh
    return config


@pytest.mark.parametrize("name,shape,chips", [
    ("v5e-8", "v5e:2x4", 8), ("v5litepod-16", "v5e:4x4", 16), ("v4-32", "v4:2x2x4", 16),
    ("v5p-16", "v5p:2x2x2", 8), ("v6e-4", "v6e:2x2", 4), ("v5e:2x2", "v5e:2x2", 4)])
def test_cloud_tpu_names(name, shape, chips):
    assert tpu_plan.parse_topology(name)[1:] == (shape, chips)


@pytest.mark.parametrize("name,message", [
    ("v3-8", "not a Cloud TPU name"), ("v4-3", "two per chip"), ("v5e-6", "power-of-two")])
def test_bad_topology_names_are_one_sentence(name, message):
    with pytest.raises(ValueError, match=message):
        tpu_plan.parse_topology(name)


def test_collectives_are_read_from_hlo_text():
    hlo = """
      %all-reduce.1 = f32[1024,256]{1,0} all-reduce(f32[1024,256]{1,0} %p), replica_groups={}
      %ars = (f32[16]{0}, bf16[8,8]{1,0}) all-reduce-start(%a, %b), to_apply=%add
      %ard = (f32[16]{0}, bf16[8,8]{1,0}) all-reduce-done(%ars)
      %all-gather = bf16[4,128]{1,0} all-gather(bf16[1,128]{1,0} %x), dimensions={0}
      %add.3 = f32[4]{0} add(f32[4]{0} %a, f32[4]{0} %b)
    """
    got = tpu_plan.collectives(hlo)
    assert got["all-reduce"] == {"count": 2, "bytes": 1024 * 256 * 4 + 16 * 4 + 64 * 2}
    assert got["all-gather"] == {"count": 1, "bytes": 4 * 128 * 2}
    assert got["reduce-scatter"] == {"count": 0, "bytes": 0}


def test_missing_libtpu_is_one_sentence(monkeypatch):
    monkeypatch.setattr(tpu_plan, "libtpu_installed", lambda: False)
    with pytest.raises(RuntimeError, match=r"pip install -e \"\.\[tpu\]\""):
        tpu_plan.plan(tiny_config(), TOPOLOGY)


def expected_argument_bytes(report_devices: int, config) -> tuple[int, int]:
    """(bytes of one device's state, of one device's batch) under train.sharding's rule."""
    from tau_jax.train import loop, optim
    from tau_jax.train.sharding import make_mesh
    fsdp = config.train.mesh[1]
    mesh = make_mesh((report_devices // fsdp, fsdp), jax.devices()[:report_devices])
    tx, _ = optim.create_optimizer(config.optim, 1, config.train.epochs)
    abstract, _, _ = loop.state_template(config, tx, mesh)
    state = 0
    for leaf in jax.tree_util.tree_leaves(abstract):
        size = int(np.prod(leaf.shape)) * leaf.dtype.itemsize
        split = fsdp > 1 and leaf.size >= MIN_SHARDED_SIZE and any(n % fsdp == 0
                                                                   for n in leaf.shape)
        state += size // fsdp if split else size
    t, h, w, c = config.model.in_shape
    frames = config.data.batch_size * (t + config.model.out_frames) * h * w * c * 4
    return state, frames // report_devices


@pytest.mark.xdist_group("tpu")  # one worker compiles for TPUs at a time (2 cores)
def test_dp_and_fsdp_plans_of_the_real_train_step():
    """Data parallel replicates the state on every device; fsdp = 4 splits every array of 2**14
    elements or more four ways: the compiled programs' argument bytes differ by exactly the
    three quarters of those arrays that a device no longer holds (small arrays are padded to
    TPU tiles, so the totals themselves carry a little padding)."""
    configs = {"dp": tiny_config((-1, 1), hid_T=128), "fsdp": tiny_config((1, 4), hid_T=128)}
    plans = {k: tpu_plan.plan(c, TOPOLOGY) for k, c in configs.items()}
    for report in plans.values():
        assert report["devices"] == 4 and report["chip"] == "TPU v5 lite" and report["fits"]
        assert report["per_device_batch"] == 2 and report["global_batch"] == 8
        assert report["flops_per_device"] > 0 and report["estimated_step_s"] > 0
        assert 0 < report["estimated_mfu"] < 1
    dp, fsdp = plans["dp"], plans["fsdp"]
    assert dp["mesh"] == {"data": 4, "fsdp": 1} and fsdp["mesh"] == {"data": 1, "fsdp": 4}
    (state_dp, batch_dp), (state_fsdp, batch_fsdp) = (expected_argument_bytes(4, configs[k])
                                                      for k in ("dp", "fsdp"))
    assert batch_dp == batch_fsdp and state_fsdp < state_dp / 2
    saved = dp["argument_bytes_per_device"] - fsdp["argument_bytes_per_device"]
    assert saved == pytest.approx(state_dp - state_fsdp, rel=0.01)
    # data parallel all-reduces the gradients (about the parameters' bytes); fsdp gathers the
    # parameters it holds a quarter of, and all-reduces less
    params_bytes = 4 * dp["params"]
    assert dp["collectives"]["all-reduce"]["bytes"] == pytest.approx(params_bytes, rel=0.05)
    assert dp["collectives"]["all-gather"]["count"] == 0
    assert fsdp["collectives"]["all-gather"]["bytes"] > params_bytes / 2
    assert fsdp["collectives"]["all-reduce"]["bytes"] < dp["collectives"]["all-reduce"]["bytes"]


@pytest.mark.xdist_group("tpu")
def test_a_program_too_large_for_hbm_is_reported_not_raised():
    report = tpu_plan.plan(tiny_config(batch=1 << 18), TOPOLOGY)  # 65,536 sequences a device
    assert report["fits"] is False
    assert "DOES NOT FIT" in tpu_plan.table(report)


@pytest.mark.xdist_group("subprocesses")
def test_compile_command_writes_the_report(tmp_path):
    config_file = write_config_file(tiny_config(), tmp_path / "tiny.py")
    out = tmp_path / "plan.json"
    result = subprocess.run(
        [sys.executable, "-m", "tau_jax.cli", "compile", f"--config={config_file}",
         f"--topology={TOPOLOGY}", f"--output={out}"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": ""})
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["topology"] == TOPOLOGY and report["fits"] is True
    assert "memory per device" in result.stdout and "compiler estimates" in result.stdout


@pytest.mark.xdist_group("tpu")
def test_a_train_started_after_planning_is_not_a_tpu_pod():
    """libtpu, loaded to plan, sets TPU variables in the process environment (some natively,
    unseen by os.environ): a `tau-jax train` child must not take itself for a Cloud TPU pod."""
    tpu_plan.plan(tiny_config(), TOPOLOGY)
    check = ("import tau_jax.cli as c, sys; sys.exit(1 if c._on_cloud_tpu_pod() else 0)")
    assert subprocess.run([sys.executable, "-c", check], cwd=ROOT, timeout=120).returncode == 0
