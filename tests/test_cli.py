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
    # spec 9.2: TaxiBJ TAU encoder / decoder / translator split
    assert info["params_by_module"] == {"enc": 9_984, "dec": 46_434, "translator": 9_489_024}
    assert info["output_shape"] == [1, 4, 32, 32, 2]
    assert 2.49e9 < info["forward_flops"] / 2 < 2.75e9  # fvcore 2.492 G-MAC, XLA counts a bit more


def test_mistyped_override_is_an_error():
    result = run_cli("summary", "--config", "configs/mmnist/tau.py", "--config.model.hid_s=3")
    assert result.returncode != 0
    assert "hid_s" in result.stderr


def test_unknown_command_prints_usage():
    result = run_cli("fly")
    assert result.returncode == 2 and "usage: tau-jax" in result.stderr
