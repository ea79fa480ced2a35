"""SIGTERM -> stop at a step every process agrees on, so the loop can checkpoint and exit 143.

One process: a Python signal handler sets a flag the loop reads once per step. Several
processes: each host receives its own signal (or only some do), so a process must not stop
alone: the one that stops would enter the collective save while the others run a training step.
JAX's preemption service (started by `jax.distributed.initialize`, whose SIGTERM handler tells
the coordination service) makes `reached_preemption_sync_point(step)` true on every process at
the same step. With that service switched off (`jax_enable_preemption_service`), the processes
agree through an all-gather of their flags every step.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class Preempted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint; the same command resumes it."""


class Preemption:
    """Context manager; `reached(step)` says whether to checkpoint and stop after `step`."""

    def __init__(self):
        self.requested = False
        self._previous = None
        self._service = False

    def __enter__(self):
        self._service = (jax.process_count() > 1
                         and bool(jax.config.jax_enable_preemption_service))
        # with the service on, its own SIGTERM handler must stay installed
        if not self._service and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint before exiting.")
        self.requested = True

    def reached(self, step: int) -> bool:
        if self._service:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        requested = self.requested  # read once: the signal may arrive at any moment
        if jax.process_count() > 1:
            return bool(np.any(multihost_utils.process_allgather(np.int32(requested))))
        return requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
