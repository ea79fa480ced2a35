"""Host memory policy for the processes that run programs: keep what XLA:CPU frees between steps.

XLA:CPU gives each execution of a program one buffer for all its temporaries (230 MB for a small
PredRNN's train step, 1.2 GB for the full Moving MNIST TAU's at batch 2) and frees it afterwards.
glibc's malloc serves blocks that large with fresh pages from the kernel and returns them on
free, so every step first touches its whole temporary buffer again: 50,000-150,000 page faults,
10-16% of a CPU train step on the 2-core benchmark machine (README, "Benchmark"). Kept in one
heap that is never trimmed, the buffer's pages are reused from the second step on.
"""

from __future__ import annotations

import ctypes

# glibc's mallopt options (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
    """Set glibc's malloc to serve every thread from one heap (`M_ARENA_MAX` 1), without
    `mmap` for large blocks (`M_MMAP_MAX` 0) and without giving freed memory back
    (`M_TRIM_THRESHOLD` -1). The process then keeps its peak host memory until it exits, as
    PyTorch's caching allocators do on GPUs.

    Call it before JAX starts its CPU client: threads that already exist keep their own heaps,
    whose large blocks glibc maps anew every time. The `tau-jax` commands that run programs
    (train, eval, predict, benchmark) call it first. Returns whether glibc took the settings
    (False elsewhere: macOS, musl), in which case nothing changed."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return all(mallopt(option, value) == 1 for option, value in
               ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
