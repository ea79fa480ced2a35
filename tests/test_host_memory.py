"""host_memory.keep_freed_memory: freed large blocks serve the next allocation without new page
faults (what spares XLA:CPU's per-step temporary buffer), and the commands that run programs
set it."""

import platform
import subprocess
import sys
import textwrap

import pytest

from tau_jax import cli, host_memory

# Allocates, touches and frees a 256 MB block twice with glibc's malloc; prints whether the
# policy took and the page faults of the second block.
PROBE = textwrap.dedent("""
    import ctypes, resource, sys
    from tau_jax import host_memory
    took = host_memory.keep_freed_memory() if sys.argv[1] == "keep" else None
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 256 << 20
    def block():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        pointer = libc.malloc(size)
        ctypes.memset(pointer, 1, size)
        libc.free(pointer)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    block()
    print(took, block())
""")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                    reason="keep_freed_memory sets glibc's malloc; this C library is not glibc")
def test_freed_blocks_are_reused_without_page_faults():
    def second_block(mode):
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True,
                             text=True, check=True).stdout.split()
        return out[0], int(out[1])

    pages = (256 << 20) // 4096
    took, kept = second_block("keep")
    _, default = second_block("default")
    assert took == "True"
    assert default > pages // 2  # glibc maps the block anew: (nearly) every page faults again
    assert kept < pages // 100


@pytest.mark.parametrize("command,sets", [("train", True), ("benchmark", True), ("data", False)])
def test_commands_that_run_programs_set_it(monkeypatch, command, sets):
    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(command))
    with pytest.raises(SystemExit):
        cli.main(["tau-jax", command, "--help"])
    assert calls == ([command] if sets else [])
