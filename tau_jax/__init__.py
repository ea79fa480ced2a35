"""tau-jax: spatiotemporal predictive learning in JAX/Flax."""

import glob
import importlib.util
import logging
import os
import sys

# A run's own lines (start block, progress, evaluations) are INFO records of the `tau_jax`
# loggers: they reach train.log and a console handler whatever the root logger's level is.
logging.getLogger(__name__).setLevel(logging.INFO)


def _keep_off_absent_tpus() -> None:
    """With libtpu installed (the `tpu` extra, which `tau-jax compile` needs) every JAX process
    that starts the TPU backend takes libtpu's lock file, and a second one on the host then
    fails. On a host without TPU chips, JAX is kept to its other platforms unless JAX_PLATFORMS
    says otherwise; `tau-jax compile` reaches the TPU compiler without the TPU backend."""
    if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
        return
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return  # TPU chips: a TPU VM trains on them
    gpu = [name for name, plugin in (("cuda", "jax_cuda12_plugin"), ("cuda", "jax_cuda13_plugin"),
                                     ("rocm", "jax_rocm60_plugin"))
           if importlib.util.find_spec(plugin) is not None]
    platforms = ",".join(dict.fromkeys(gpu + ["cpu"]))
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", platforms)
    else:
        os.environ["JAX_PLATFORMS"] = platforms


_keep_off_absent_tpus()
