"""`tau-jax summary` reports OpenSTL's parameter split and a FLOP count."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tau_jax.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_summary_of_mmnist_tau():
    result = run_cli("summary", "--config", "configs/taxibj/tau.py", "--config.model.dw_impl=lax")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    # OpenSTL's TaxiBJ TAU encoder / decoder / translator split
    assert info["params_by_module"] == {"enc": 9_984, "dec": 46_434, "translator": 9_489_024}
    assert info["output_shape"] == [1, 4, 32, 32, 2]
    # fvcore 2.492 G-MAC; XLA counts elementwise work too, and less since GELU goes through erf
    assert 2.45e9 < info["forward_flops"] / 2 < 2.75e9


def test_mistyped_override_is_an_error():
    result = run_cli("summary", "--config", "configs/mmnist/tau.py", "--config.model.hid_s=3")
    assert result.returncode != 0
    assert "hid_s" in result.stderr


def test_unknown_command_lists_the_commands():
    result = run_cli("fly")
    assert result.returncode == 2
    assert result.stderr.strip() == ("tau-jax: unknown command 'fly'; the commands are train, "
                                     "eval, predict, vis, convert, summary, benchmark, compile, data "
                                     "(`tau-jax --help` says what each does).")


def test_help_lists_every_command_with_a_line():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("train", "eval", "predict", "vis", "convert", "summary", "benchmark", "data"):
        assert f"\n  {command} " in result.stdout


def test_command_help_shows_its_usage_example_and_only_its_flags():
    result = run_cli("train", "--help")
    assert result.returncode == 0
    text = result.stdout
    assert text.startswith("usage: tau-jax train --config FILE --workdir DIR")
    assert "example:\n  tau-jax train --config configs/mmnist/quickstart.py" in text
    for flag in ("--workdir", "--config.SECTION.FIELD=VALUE", "--coordinator_address"):
        assert flag in text
    for flag in ("--from-openstl", "--peak_tflops", "--horizon", "--data_dir"):
        assert flag not in text
    predict = run_cli("predict", "-h").stdout
    assert "--horizon" in predict and "--config" not in predict
    # a flag several commands share says what it does for this one
    assert "--output                       the .npy file of the predictions." in predict
    vis = run_cli("vis", "--help").stdout
    assert "--output                       the PNG/GIF path without its suffix." in vis
    assert "(default: 0,1,2,3)" in vis and "--horizon" not in vis


def test_flag_of_another_command_is_refused():
    result = run_cli("summary", "--config", "configs/mmnist/tau.py", "--horizon=3")
    assert result.returncode == 2
    assert "--horizon is a flag of `tau-jax predict`, not of `tau-jax summary`" in result.stderr


def test_libtpu_warning_in_the_environment_is_not_a_tpu_pod(monkeypatch):
    """libtpu on a TPU-less machine (`tau-jax compile`) writes its warnings into
    TPU_WORKER_HOSTNAMES / CLOUD_TPU_TASK_ID with setenv, which a later `tau-jax train` started as
    a child inherits: it must not take them for a pod and call jax.distributed."""
    from tau_jax import cli
    monkeypatch.delenv("CLOUD_TPU_TASK_ID", raising=False)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "WARNING: could not determine TPU worker hostnames "
                       "or IP addresses, please set env var `TPU_WORKER_HOSTNAMES` manually")
    assert not cli._on_cloud_tpu_pod()
    monkeypatch.setenv("CLOUD_TPU_TASK_ID", "WARNING: could not determine TPU worker number, "
                       "please set env var `TPU_WORKER_ID` manually")
    assert not cli._on_cloud_tpu_pod()
    monkeypatch.setenv("CLOUD_TPU_TASK_ID", "0")
    assert cli._on_cloud_tpu_pod()
    monkeypatch.delenv("CLOUD_TPU_TASK_ID")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "t1v-n-0,t1v-n-1")
    assert cli._on_cloud_tpu_pod()
