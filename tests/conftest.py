"""Test set-up: 8 fake CPU devices for sharding tests, shared fixtures for the OpenSTL bundles."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import tau_jax  # noqa: F401 - first: with libtpu installed it keeps JAX (and subprocesses) off the TPU backend
import jax

jax.config.update("jax_num_cpu_devices", 8)
# Compiled programs are cached on disk and shared by the tests' subprocesses (which inherit the
# environment): the CLI runs of the crash/resume tests compile the same programs.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.environ.get("TMPDIR", "/tmp"), "tau_jax_test_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data"
BUNDLES = DATA / "openstl_bundles"


def load_bundle(name: str):
    """(config json, npz arrays, state dict without the 'param/' prefix) of an OpenSTL bundle."""
    meta = json.loads((BUNDLES / f"{name}.json").read_text())
    arrays = dict(np.load(BUNDLES / f"{name}.npz"))
    state_dict = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    return meta, arrays, state_dict


def require_cpu_kernel():
    """The C++ depthwise kernel must build wherever a compiler is; without one only the fallback
    to XLA's form can be tested (tests/test_cpu_kernels.py)."""
    from tau_jax.models import cpu_kernels
    if cpu_kernels._compiler() is None:
        pytest.skip("no C++ compiler on this machine: the kernel cannot be built here")
    assert cpu_kernels.available()


@pytest.fixture
def x64():
    """Run a test with float64 enabled (OpenSTL bundles are float64)."""
    with jax.enable_x64(True):
        yield


def run_two_processes(script: str, tmp_path, *args, timeout: float = 400) -> list:
    """Run `script` as processes 0 and 1 of a jax.distributed job on loopback.

    The script gets argv = [port, process_id, output json path, *args] and writes its result
    as JSON there; returns the two results.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = pathlib.Path(__file__).parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    outs = [tmp_path / f"process_{pid}.json" for pid in (0, 1)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(port), str(pid), str(out),
                               *map(str, args)], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for pid, out in zip((0, 1), outs)]
    for p in procs:
        log, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, log[-3000:]
    return [json.loads(out.read_text()) for out in outs]
