"""Model summary: parameter counts per top-level module and XLA's FLOP count of one forward pass.

XLA's cost analysis counts 2 FLOPs per multiply-add and includes element-wise work; OpenSTL's
fvcore numbers count one per multiply-add and skip activations. `forward_flops / 2` is therefore
the figure to set next to OpenSTL's. XLA counts the body of a loop once: for the recurrent models
(a `lax.scan` over T + T' - 1 steps) multiply by the step count (experiments/zoo_table.py does).
The pass is traced as a `portable_program()`: XLA counts no FLOPs in the CPU kernels' opaque calls.
"""

from __future__ import annotations

import jax

from tau_jax import models
from tau_jax.models import cpu_kernels


def summarize(model_config) -> dict:
    """Parameters (total and per top-level module) and forward FLOPs of a batch-1 eval pass."""
    model = models.build(model_config)
    inputs = models.example_inputs(model_config)
    variables = jax.eval_shape(lambda: models.init(model_config, jax.random.key(0)))
    forward = jax.jit(lambda v, kw: model.apply(v, train=False, **kw))
    with cpu_kernels.portable_program():
        compiled = forward.lower(variables, inputs).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out = jax.eval_shape(forward, variables, inputs)
    out = out[0] if isinstance(out, tuple) else out
    params = variables["params"]
    return {
        "model": model_config.name,
        "params": models.count_params(params),
        "params_by_module": {k: models.count_params(v) for k, v in params.items()},
        "forward_flops": float(cost.get("flops", float("nan"))),
        "input_shapes": {k: tuple(v.shape) for k, v in inputs.items()},
        "output_shape": tuple(out.shape),
    }
