"""Metric logging: console lines (with steps/s and ETA) and TensorBoard event files.

clu's metric writers import TensorFlow, which accelerator images and this project's default
install lack; tensorboardX writes the same event files with protobuf alone. Only process 0 writes.
Per-frame curves are one scalar per lead time (`eval/<metric>_per_frame/frame_NN`), drawn together
in one chart per metric on TensorBoard's "Custom Scalars" tab.
"""

from __future__ import annotations

import logging
import pathlib
import time

import jax
import numpy as np

log = logging.getLogger(__name__)


class MetricWriter:
    def __init__(self, workdir: str | pathlib.Path, total_steps: int, metrics=()):
        self.enabled = jax.process_index() == 0
        self.total_steps = total_steps
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))
            if metrics:
                self._tb.add_custom_scalars({"eval by lead time": {
                    f"{m} per frame": ["Multiline", [rf"eval/{m}_per_frame/frame_\d+"]]
                    for m in metrics}})
        self._last = (time.perf_counter(), None)

    def restart_clock(self, step: int) -> None:
        """Measure steps/s from now and `step` on (after the compilation)."""
        self._last = (time.perf_counter(), step)

    def rate(self, step: int) -> tuple[float, float]:
        """(steps/s since the previous call, seconds left at that rate)."""
        now, prev_step = time.perf_counter(), self._last[1]
        t0 = self._last[0]
        self._last = (now, step)
        if prev_step is None or step <= prev_step:
            return float("nan"), float("nan")
        rate = (step - prev_step) / (now - t0)
        return rate, (self.total_steps - step) / rate

    def scalars(self, step: int, values: dict, prefix: str) -> None:
        if not self.enabled:
            return
        for key, value in values.items():
            if np.ndim(value) == 0:
                self._tb.add_scalar(f"{prefix}/{key}", float(value), step)
            elif not key.startswith("copy_last_"):  # a lead-time curve: a scalar per frame
                # (the baseline's curve does not change with the step: it is in the plot)
                for t, v in enumerate(np.asarray(value)):
                    self._tb.add_scalar(f"{prefix}/{key}/frame_{t + 1:02d}", float(v), step)
        self._tb.flush()
        log.info("step %d %s: %s", step, prefix, console_line(values))

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        if self.enabled:
            self._tb.add_image(tag, image, step, dataformats="HWC")
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def console_line(values: dict) -> str:
    """'mse 116.9 (copy last 280.4), ssim ...': the scalars, each beside its copy-last baseline."""
    shown = []
    for key, value in values.items():
        if np.ndim(value) or key.startswith("copy_last_"):
            continue
        baseline = values.get(f"copy_last_{key}")
        shown.append(f"{key} {float(value):.6g}" + (
            "" if baseline is None else f" (copy last {float(baseline):.6g})"))
    return ", ".join(shown)
