"""Test set-up: 8 fake CPU devices for sharding tests, shared fixtures for the OpenSTL bundles."""

import json
import os
import pathlib

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


@pytest.fixture
def x64():
    """Run a test with float64 enabled (OpenSTL bundles are float64)."""
    with jax.enable_x64(True):
        yield
