"""Plan a Cloud TPU job from a CPU host: compile the real train step for a TPU topology ahead of
time and read what XLA's TPU compiler says about it.

    report = plan(config, "v5e-8")      # tau-jax compile --config FILE --topology v5e-8

The train step is the one `train` runs (same jit, shardings, donation and mesh over the
topology's devices); nothing executes. From the compiled program: FLOPs of one step (per device:
the program is the SPMD-partitioned one), argument / output / temporary bytes per device and
whether they fit the chip's HBM, the collectives of one step read from the compiled HLO (count and
bytes of each kind), and an estimate of the step time with the MFU it implies against the chip's
bf16 peak: XLA's TPU cost model (`optimal_seconds`) where it gives one, else (it gives none for
convolutions) a roofline: the larger of FLOPs / peak and bytes accessed / HBM bandwidth. These are
compiler estimates, not measurements.

libtpu (`pip install -e ".[tpu]"`) provides the TPU compiler. With it installed every JAX process
that initialises the TPU backend takes a lock file, so only this command may touch the plugin:
it asks for a topology description and never for the TPU backend itself; other processes on a
CPU host keep to the CPU (`JAX_PLATFORMS=cpu`) when libtpu is installed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re

import jax
import numpy as np

from tau_jax import models
from tau_jax.models.layers import target_platform
from tau_jax.train import loop, optim
from tau_jax.train.sharding import batch_sharding, local_batch_size, make_mesh
from tau_jax.train.workdir import check_config


@dataclasses.dataclass(frozen=True)
class Chip:
    kind: str               # jax device_kind of the generation
    hbm_gib: float          # HBM per JAX device (per chip; megacore chips are one device)
    peak_bf16_tflops: float  # dense bf16 peak per JAX device, from Google's datasheets
    hbm_gbps: float         # HBM bandwidth per JAX device, GB/s, from the same datasheets
    cores_per_chip: int     # TensorCores per chip: Cloud TPU names count cores for v4 / v5p
    host_bounds: tuple      # chips per host (x, y, z)
    megacore: bool


CHIPS = {
    "v4": Chip("TPU v4", 32, 275.0, 1228.0, 2, (2, 2, 1), True),
    "v5e": Chip("TPU v5 lite", 16, 197.0, 819.0, 1, (2, 4, 1), False),
    "v5p": Chip("TPU v5", 95, 459.0, 2765.0, 2, (2, 2, 1), True),
    "v6e": Chip("TPU v6 lite", 32, 918.0, 1640.0, 1, (2, 4, 1), False),
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}


def chip_grid(generation: str, chips: int) -> tuple[int, ...]:
    """The physical chip grid of a slice: 2D for v5e / v6e, 3D tori for v4 / v5p."""
    if chips < 1 or chips & (chips - 1):
        raise ValueError(f"a {generation} slice has a power-of-two number of chips, not {chips}.")
    three_d = CHIPS[generation].megacore
    dims = [1, 1, 1] if three_d else [1, 1]
    for _ in range(int(np.log2(chips))):  # double the smallest side, as Google's shapes grow
        dims[dims.index(min(dims))] *= 2
    return tuple(sorted(dims))


def parse_topology(name: str) -> tuple[str, str, int]:
    """('v5e', 'v5e:2x4', chips) of a Cloud TPU accelerator name such as 'v5e-8' or 'v4-32'
    (v4 / v5p names count TensorCores, two per chip), or of an explicit 'v5e:2x4'."""
    explicit = re.fullmatch(r"(v4|v5e|v5p|v6e):(\d+(?:x\d+){1,2})", name)
    cloud = re.fullmatch(r"(v4|v5e|v5litepod|v5p|v6e)-(\d+)", name)
    if explicit:
        generation, shape = explicit.groups()
        chips = int(np.prod([int(s) for s in shape.split("x")]))
        return generation, name, chips
    if cloud:
        generation = "v5e" if cloud.group(1) == "v5litepod" else cloud.group(1)
        cores = int(cloud.group(2))
        chip = CHIPS[generation]
        if cores % chip.cores_per_chip:
            raise ValueError(f"--topology {name}: {generation} names count TensorCores, two per "
                             "chip; the number must be even.")
        chips = cores // chip.cores_per_chip
        return generation, f"{generation}:{'x'.join(map(str, chip_grid(generation, chips)))}", chips
    raise ValueError(f"--topology {name!r} is not a Cloud TPU name such as v5e-8, v4-32, v5p-16, "
                     f"v6e-8 or a shape such as v5e:2x4 (generations: {', '.join(CHIPS)}).")


def libtpu_installed() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def topology_devices(name: str):
    """(generation, the topology's devices) without a TPU: libtpu's ahead-of-time view."""
    from jax.experimental import topologies
    generation, shape, chips = parse_topology(name)
    if not libtpu_installed():
        raise RuntimeError(f"cannot compile for {name}: the TPU compiler (libtpu) is not "
                           "installed; `pip install -e \".[tpu]\"` installs it.")
    chip = CHIPS[generation]
    # libtpu takes a host-wide lock file when it loads, which only matters to a process that
    # drives TPU chips: this one only compiles, so others may hold it meanwhile. It also asks
    # the (absent) TPU VM for its type and workers, and prints warnings when it gets no answer.
    cloud_name = f"{'v5litepod' if generation == 'v5e' else generation}-{chips * chip.cores_per_chip}"
    # The variables are set only while libtpu loads: a child process (a `tau-jax train` started
    # from this one) that inherited TPU_WORKER_HOSTNAMES would take itself for a TPU pod.
    added = {var: value for var, value in (
        ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"), ("TPU_SKIP_MDS_QUERY", "1"),
        ("TPU_ACCELERATOR_TYPE", cloud_name), ("TPU_WORKER_HOSTNAMES", "localhost"))
        if var not in os.environ}
    grid = [int(s) for s in shape.split(":")[1].split("x")]
    bounds = tuple(min(b, g) for b, g in zip(chip.host_bounds, grid + [1]))
    os.environ.update(added)
    try:
        topology = topologies.get_topology_desc(
            platform="tpu", topology_name=shape, chips_per_host_bounds=bounds, num_slices=1,
            chip_config_name="megacore" if chip.megacore else "default")
    finally:
        for var in added:
            os.environ.pop(var, None)
    return generation, list(topology.devices)


def collectives(hlo_text: str) -> dict:
    """{kind: {'count', 'bytes'}} of the collective ops in compiled HLO text (bytes: the sizes
    of their results, per device; an async pair counts once, at its start)."""
    out = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
    op = re.compile(r"^\s*(?:ROOT\s+)?%\S+ = (.*?) (" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for line in hlo_text.splitlines():
        match = op.match(line)
        if match is None:
            continue
        result, kind = match.group(1), match.group(2)
        size = sum(_BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
                   for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", result))
        out[kind]["count"] += 1
        out[kind]["bytes"] += size
    return out


def plan(config, topology: str) -> dict:
    """Compile `config`'s train step for `topology`; the report described in the module
    docstring. A program that does not fit is reported (`fits` false), not raised. Traced under
    `target_platform('tpu')`: choices made in Python while tracing follow the chip, not this
    host."""
    with target_platform("tpu"):
        return _plan(config, topology)


def _plan(config, topology: str) -> dict:
    check_config(config)
    model = models.build(config.model)
    generation, devices = topology_devices(topology)
    chip = CHIPS[generation]
    mesh = make_mesh(config.train.mesh, devices)
    batch = int(config.data.batch_size)
    local_batch_size(batch, mesh)
    tx, _ = optim.create_optimizer(config.optim, 1, config.train.epochs)
    abstract, shardings, _ = loop.state_template(config, tx, mesh)
    step = loop.make_train_step(model, config, tx, shardings, mesh)
    t, h, w, c = (int(v) for v in config.model.in_shape)
    frames = jax.ShapeDtypeStruct((batch, t + int(config.model.out_frames), h, w, c), np.float32,
                                  sharding=batch_sharding(mesh))
    ways = int(np.prod([mesh.shape[a] for a in batch_sharding(mesh).spec[0]]))
    report = {
        "topology": topology, "shape": parse_topology(topology)[1], "chip": chip.kind,
        "devices": len(devices), "hosts": len({d.process_index for d in devices}),
        "mesh": dict(mesh.shape), "model": config.model.name,
        "params": models.count_params(abstract.params), "global_batch": batch,
        "per_device_batch": batch // ways, "hbm_bytes_per_device": int(chip.hbm_gib * 2 ** 30),
        "peak_bf16_tflops": chip.peak_bf16_tflops, "hbm_gbps": chip.hbm_gbps,
    }
    # not into the persistent compilation cache: a CPU host cannot load a TPU program back
    cache = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)
    try:
        compiled = step.lower(abstract, frames).compile()
    except Exception as e:  # noqa: BLE001 - XlaRuntimeError: the program is too large for HBM
        if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
            raise
        return {**report, "fits": False, "compiler_says": _first_line(e)}
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", cache)
    return {**report, **_analysis(compiled, chip, len(devices), report["hbm_bytes_per_device"])}


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def _analysis(compiled, chip: Chip, devices: int, hbm: int) -> dict:
    """Memory, FLOPs, collectives and the step-time estimate of a compiled SPMD program (its
    numbers are per device: every device runs the same partitioned program)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    memory = compiled.memory_analysis()
    used = (memory.argument_size_in_bytes + memory.output_size_in_bytes
            + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
    flops = float(cost.get("flops", 0.0))
    accessed = float(cost.get("bytes accessed", 0.0))
    xla_seconds = float(cost.get("optimal_seconds", -1.0))
    roofline = max(flops / (chip.peak_bf16_tflops * 1e12), accessed / (chip.hbm_gbps * 1e9))
    seconds = xla_seconds if xla_seconds > 0 else roofline
    return {
        "flops_per_device": flops,
        "flops_per_step": flops * devices,
        "bytes_accessed_per_device": accessed,
        "argument_bytes_per_device": int(memory.argument_size_in_bytes),
        "output_bytes_per_device": int(memory.output_size_in_bytes),
        "temp_bytes_per_device": int(memory.temp_size_in_bytes),
        "alias_bytes_per_device": int(memory.alias_size_in_bytes),
        "bytes_per_device": int(used),
        "fits": bool(used <= hbm),
        "collectives": collectives(compiled.as_text()),
        "estimated_step_s": seconds,
        "estimate": "xla cost model" if xla_seconds > 0 else "roofline",
        "estimated_mfu": flops / (seconds * chip.peak_bf16_tflops * 1e12) if seconds > 0
        else float("nan"),
    }


def table(report: dict) -> str:
    """A short human summary of a report."""
    gib = 2 ** 30
    lines = [
        f"{report['topology']} ({report['shape']}): {report['devices']} x {report['chip']}, "
        f"{report['hosts']} host(s); mesh {report['mesh']}",
        f"{report['model']}, {report['params']:,} parameters; batch {report['global_batch']} "
        f"({report['per_device_batch']} per device)",
    ]
    if "bytes_per_device" not in report:
        return "\n".join(lines + [f"DOES NOT FIT: {report['compiler_says']}"])
    moved = {k: v for k, v in report["collectives"].items() if v["count"]}
    lines += [
        f"memory per device {report['bytes_per_device'] / gib:.3g} GiB of "
        f"{report['hbm_bytes_per_device'] / gib:.3g} GiB HBM: "
        + ("fits" if report["fits"] else "DOES NOT FIT"),
        "collectives per step: " + (", ".join(
            f"{k} {v['count']} ({v['bytes'] / 2 ** 20:.3g} MiB)" for k, v in moved.items())
            or "none"),
        f"estimated step {report['estimated_step_s'] * 1e3:.3g} ms ({report['estimate']}), "
        f"{report['flops_per_device'] / 1e9:.3g} GFLOP per device, MFU "
        f"{100 * report['estimated_mfu']:.3g}% of bf16 peak (compiler estimates, not "
        "measurements)",
    ]
    return "\n".join(lines)
