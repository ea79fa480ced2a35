"""SIGTERM -> stop at a step every process agrees on, so the loop can checkpoint and exit 143.

One process: a Python signal handler sets a flag the loop reads once per step; Ctrl-C (SIGINT)
does the same and exits 130, and a second Ctrl-C interrupts at once. The handler writes nothing:
a signal landing inside a log write would re-enter the stream (a "Logging error" traceback), so
the loop announces the signal when it reads the flag. Several
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

log = logging.getLogger(__name__)

class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint; the same command resumes it.
    `exit_code` is what a shell reports for a process that signal ended (143, 130)."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


class Preemption:
    """Context manager; `reached(step)` says whether to checkpoint and stop after `step`."""

    def __init__(self):
        self.requested = False
        self.signum = signal.SIGTERM  # the signal that asked to stop
        self._previous = {}
        self._service = False
        self._announced = False

    def __enter__(self):
        self._service = (jax.process_count() > 1
                         and bool(jax.config.jax_enable_preemption_service))
        # with the service on, its own SIGTERM handler must stay installed (and Ctrl-C, which
        # it does not agree on, interrupts as usual)
        if not self._service and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def _announce(self) -> None:
        if self.requested and not self._announced:
            self._announced = True
            log.warning("%s received: saving a checkpoint before exiting%s.",
                        signal.Signals(self.signum).name,
                        " (Ctrl-C again to stop at once)" if self.signum == signal.SIGINT else "")

    def reached(self, step: int) -> bool:
        if self._service:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self.requested_between_steps()

    def requested_between_steps(self) -> bool:
        """Whether a signal asked to stop, agreed by every process (each must call it at the
        same point, e.g. once per evaluation batch): lets a long evaluation give way to the
        checkpoint of a preempted job. Always False with JAX's preemption service, which agrees
        only at steps."""
        if self._service:
            return False
        requested = self.requested  # read once: the signal may arrive at any moment
        self._announce()
        if jax.process_count() > 1:
            return bool(np.any(multihost_utils.process_allgather(np.int32(requested))))
        return requested

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
