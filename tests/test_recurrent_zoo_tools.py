"""PredRNN++, MIM, E3D-LSTM and MAU through the tools every model gets: `tau-jax summary`,
`tau-jax benchmark` (our side) and `tau-jax compile` (the train step compiled for a TPU slice on
this CPU). Their OpenSTL fidelity: tests/test_predrnnpp_mim.py, tests/test_e3dlstm_mau.py."""

import jax
import numpy as np
import pytest

from tau_jax import models
from tau_jax.bench import benchmark, tpu_plan
from tau_jax.config import base_config
from tau_jax.summary import summarize

NAMES = ("predrnnpp", "mim", "e3dlstm", "mau")


def small(name):
    config = base_config(name)
    config.model.update(in_shape=(4, 16, 16, 1), out_frames=4, num_hidden=(8, 8), filter_size=3,
                        patch_size=1 if name == "mau" else 4)
    if name == "mau":
        config.model.update(sr_size=2, tau=2)
    config.data.batch_size = 8
    return config


@pytest.mark.parametrize("name", NAMES)
def test_summary(name):
    info = summarize(small(name).model)
    shapes = jax.eval_shape(lambda: models.init(small(name).model, jax.random.key(0)))
    assert info["params"] == models.count_params(shapes["params"])
    assert info["forward_flops"] > 0 and info["output_shape"] == (1, 7, 16, 16, 1)


@pytest.mark.parametrize("name", ["mim", "mau"])  # the step is the family's: two suffice
def test_benchmark(name):
    result = benchmark.run(small(name), batch=8, repeats=1, steps=1, warmup=1, infer_batch=8,
                           argv=["test"])["tau_jax"]
    assert np.isfinite(result["final_loss"]) and result["train_seq_per_s"] > 0
    assert result["params"] == summarize(small(name).model)["params"]


@pytest.mark.xdist_group("tpu")  # one worker compiles for TPUs at a time (2 cores)
@pytest.mark.parametrize("name", NAMES)
def test_tpu_plan(name):
    report = tpu_plan.plan(small(name), "v5e:2x2")
    assert report["fits"] and report["devices"] == 4 and report["per_device_batch"] == 2
    assert report["flops_per_device"] > 0 and report["estimated_step_s"] > 0
