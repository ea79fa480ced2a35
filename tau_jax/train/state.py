"""The training state: everything a resumed run needs besides the data iterator's position."""

from __future__ import annotations

from typing import Any

import flax
import jax


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # optimiser steps taken
    params: Any
    batch_stats: Any         # BatchNorm running statistics ({} for models without BatchNorm)
    opt_state: Any
    ema_params: Any          # exponential moving average of params (None when EMA is off)

    def eval_variables(self, use_ema: bool = False) -> dict:
        """Variables for `model.apply` in eval mode."""
        params = self.ema_params if use_ema and self.ema_params is not None else self.params
        return {"params": params, "batch_stats": self.batch_stats}
