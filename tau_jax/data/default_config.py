"""`get_config()` = the base config, for `tau-jax data ...` run without `--config` (so
`--config.data.field=value` overrides still work)."""

from tau_jax.config import base_config


def get_config():
    return base_config()
