"""`tau-jax COMMAND --config FILE [--config.field=value ...]`.

Commands available now: `summary` (parameters and forward FLOPs of a config's model).
Training, evaluation and prediction commands arrive with the training system.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)

COMMANDS = ("summary",)


def _summary(_):
    from tau_jax.summary import summarize
    info = summarize(_CONFIG.value.model)
    print(json.dumps(info, indent=2))


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(f"usage: tau-jax {{{','.join(COMMANDS)}}} --config FILE [--config.x=y ...]",
              file=sys.stderr)
        sys.exit(2)
    command = argv.pop(1)
    flags.mark_flag_as_required("config")
    app.run({"summary": _summary}[command], argv=argv)


if __name__ == "__main__":
    main()
