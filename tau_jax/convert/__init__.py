"""OpenSTL (PyTorch) weights: `from_openstl(model_config, state_dict)` -> Flax variables,
`load_pth(path)` -> a state dict, `convert_openstl(state_dict, config, workdir)` -> a workdir."""

from tau_jax.convert.state_dict import from_openstl, load_pth
from tau_jax.convert.workdir import convert_openstl

__all__ = ["convert_openstl", "from_openstl", "load_pth"]
