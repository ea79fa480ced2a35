"""tau-jax: spatiotemporal predictive learning in JAX/Flax."""

import logging

# A run's own lines (start block, progress, evaluations) are INFO records of the `tau_jax`
# loggers: they reach train.log and a console handler whatever the root logger's level is.
logging.getLogger(__name__).setLevel(logging.INFO)
