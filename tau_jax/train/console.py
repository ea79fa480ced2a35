"""What a training run tells its user: one block at the start (model, parameters per module,
devices and mesh, batch, schedule, data, workdir), and a progress bar with the log lines printed
above it, never inside it.
"""

from __future__ import annotations

import contextlib
import logging
import sys

import jax
import numpy as np
import tqdm

from tau_jax import models


def module_table(params) -> list[tuple[str, int]]:
    """(top-level module, parameter count) rows, in the model's order."""
    return [(name, models.count_params(tree)) for name, tree in params.items()]


def start_block(config, params, mesh, train_source, eval_source, *, total_steps: int,
                steps_per_epoch: int, start_step: int, workdir) -> str:
    """The lines printed (and logged to train.log) before the first step."""
    mc, dc = config.model, config.data
    total = models.count_params(params)
    table = module_table(params)
    width = max(len(name) for name, _ in table)
    rows = [f"    {name:<{width}}  {count:>12,}  {100 * count / max(total, 1):5.1f}%"
            for name, count in table]
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    data_ways = mesh.shape["data"]
    epochs = total_steps / steps_per_epoch
    t, h, w, c = train_source.shape[0], *train_source.shape[1:]
    schedule = (f"{total_steps:,} steps = {epochs:.3g} epoch{'' if epochs == 1 else 's'} of "
                f"{steps_per_epoch:,} ({config.optim.sched}, peak lr {config.optim.lr:g})")
    lines = [
        f"model     {mc.name}: {total:,} parameters ({mc.param_dtype}, compute {mc.dtype})",
        *rows,
        f"devices   {len(devices)} x {jax.default_backend()} ({', '.join(kinds)}), "
        f"{jax.process_count()} process(es); mesh "
        + " x ".join(f"{k} {v}" for k, v in mesh.shape.items()),
        f"batch     {dc.batch_size} sequences ({dc.batch_size // data_ways} per data-parallel "
        f"device); eval batch {dc.eval_batch_size}",
        f"schedule  {schedule}" + (f"; resuming at step {start_step:,}" if start_step else ""),
        f"data      {train_source.name}: {len(train_source):,} train / {len(eval_source):,} "
        f"{eval_source.split} sequences of {train_source.in_frames} -> "
        f"{train_source.out_frames} frames of {h}x{w}x{c} (of {t})",
        f"workdir   {workdir}",
    ]
    return "\n".join(lines)


def parameter_overview(params) -> str:
    """Every parameter's name, shape, size and statistics (clu's table), for parameters.txt."""
    from clu import parameter_overview as overview
    return overview.get_parameter_overview(jax.tree_util.tree_map(np.asarray, params))


class _AboveBar:
    """A stream that prints through tqdm.write: the bar is cleared, the line printed, the bar
    redrawn below it."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> None:
        if text.strip():
            tqdm.tqdm.write(text.rstrip("\n"), file=self._stream)

    def flush(self) -> None:
        self._stream.flush()


@contextlib.contextmanager
def progress_bar(total: int, initial: int):
    """A tqdm bar on stderr when it is a terminal (process 0 only); while it is open, log lines
    that would go to the terminal are printed above it."""
    enabled = sys.stderr.isatty() and jax.process_index() == 0
    bar = tqdm.tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                    disable=not enabled)
    swapped = []
    if enabled:
        for handler in _terminal_handlers():
            swapped.append((handler, handler.setStream(_AboveBar(handler.stream))))
    try:
        yield bar
    finally:
        for handler, stream in swapped:
            handler.setStream(stream)
        bar.close()


def _terminal_handlers() -> list[logging.StreamHandler]:
    """The stream handlers that write to the terminal: the root logger's, and absl's own."""
    out = []
    for handler in logging.getLogger().handlers:
        handler = getattr(handler, "python_handler", handler)  # absl wraps a StreamHandler
        if (isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and getattr(handler.stream, "isatty", lambda: False)()):
            out.append(handler)
    return out
