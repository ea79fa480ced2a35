"""`tau-jax benchmark`: training and inference throughput, compile time, memory and MFU.

Definitions (the same for our model and the OpenSTL peer):
* train throughput: sequences/s of full optimiser steps (the jitted, state-donating step of
  `train.loop`: forward, loss, backward, optax update) on a fixed device-resident batch of
  uniform noise, so the input pipeline is not part of it (experiments/pipeline_bench.py times it);
* inference throughput: OpenSTL's FPS definition, sequences (not frames) per second of eval-mode
  forward passes at batch 100 (10 when max(H, W) >= 128);
* each figure: `warmup` calls dropped, then `repeats` timings of `steps` calls, median reported
  (all repeats kept in the JSON); the clock stops after `block_until_ready`, once per repeat, so
  no host sync sits inside the timed loop; beside the peer, each of our repeats is followed by
  one of the peer's, so that a machine whose speed drifts (shared CPUs do, by 20% within
  minutes) slows both alike;
* compile time: `jit(...).lower(...).compile()` wall time of each step;
* memory: the device's `peak_bytes_in_use` where the backend reports it (GPU/TPU), and XLA's
  static estimate (arguments + outputs + temporaries - aliased) of each compiled step;
* MFU: XLA cost-analysis FLOPs of one compiled train step x steps/s / the device's dense peak for
  the compute dtype (table below; `peak_tflops` overrides, e.g. for CPUs, where none is known);
* breakdown (opt-in, two more compiles): the same timing for the train-mode forward + loss alone
  and for forward + backward, so that step = forward + backward + optimiser update splits;
* profile (opt-in): a jax.profiler trace of one timed repeat (TensorBoard / Perfetto), and the
  device time per XLA operation kind read from its Perfetto JSON.
"""

from __future__ import annotations

import collections
import datetime
import functools
import gzip
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from tau_jax import models
from tau_jax.train import loop, optim
from tau_jax.train.sharding import batch_sharding, make_mesh

# Dense peak TFLOP/s per device from the vendors' datasheets: (device_kind substring, dtype).
# float32 on NVIDIA Ampere and later is TF32 tensor-core math, XLA:GPU's default for f32 convs and
# dots (`jax_default_matmul_precision` unset); the table gives that peak.
PEAK_TFLOPS = {
    ("H200", "bfloat16"): 989.4, ("H200", "float32"): 494.7,
    ("H100", "bfloat16"): 989.4, ("H100", "float32"): 494.7,  # SXM; PCIe is 756 / 378
    ("A100", "bfloat16"): 312.0, ("A100", "float32"): 156.0,
    ("V100", "bfloat16"): 125.0, ("V100", "float32"): 15.7,   # V100: fp16 tensor cores
    ("TPU v6", "bfloat16"): 918.0, ("TPU v5p", "bfloat16"): 459.0,
    ("TPU v5 lite", "bfloat16"): 197.0, ("TPU v4", "bfloat16"): 275.0,
}
PRECISIONS = ("fp32", "bf16")


def _cpu_name() -> str:
    """The CPU's model name with its family and model numbers (Linux; the same name covers
    several generations on cloud machines), else the architecture."""
    try:
        info = dict(line.split(":", 1) for line in pathlib.Path("/proc/cpuinfo").read_text()
                    .splitlines() if ":" in line)
        info = {key.strip(): value.strip() for key, value in info.items()}
        return (f"{platform.machine()} {info['model name']} (family {info['cpu family']}, "
                f"model {info['model']})")
    except (OSError, KeyError):
        return platform.processor() or platform.machine()


def provenance(argv=None) -> dict:
    """Machine, versions, commit, date and command of a result."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True,
                                cwd=pathlib.Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    device = jax.devices()[0]
    argv = sys.argv if argv is None else argv
    return {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([pathlib.Path(argv[0]).name] + list(argv[1:])),
        "commit": commit,
        "machine": f"{_cpu_name()}, {os.cpu_count()} cores",
        "device": f"{device.platform}: {device.device_kind}",
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def peak_tflops(dtype: str, device=None) -> float | None:
    kind = (device or jax.devices()[0]).device_kind
    for (name, dt), value in PEAK_TFLOPS.items():
        if name in kind and dt == dtype:
            return value
    return None


def inference_batch(in_shape) -> int:
    """OpenSTL's `measure_throughput` batch: 100, or 10 for frames of 128 pixels or more."""
    return 100 if max(int(in_shape[1]), int(in_shape[2])) < 128 else 10


def _timed(fn, warmup: int, repeats: int, steps: int, beside=None):
    """Seconds per call of each repeat of `steps` calls of `fn` (which returns arrays); the
    clock stops when every call's outputs are ready (independent calls may finish out of
    order). `beside`: None, or a callable timing one repeat of the peer's step (seconds per
    call), run after each of ours so that both see the machine in the same state. Returns
    (ours, the peer's or [])."""
    jax.block_until_ready([fn() for _ in range(warmup)])
    times, theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready([fn() for _ in range(steps)])
        times.append((time.perf_counter() - start) / steps)
        if beside is not None:
            theirs.append(beside())
    return times, theirs


def _flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _static_bytes(compiled) -> int | None:
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
               - mem.alias_size_in_bytes)


def _device_peak_bytes() -> int | None:
    stats = jax.local_devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def measure_breakdown(model, config, state, frames, warmup: int, repeats: int,
                      steps: int) -> dict:
    """Seconds of the train-mode forward + loss and of forward + backward, same batch."""
    loss = functools.partial(loop.loss_fn, model, config)
    key = jax.random.key(0)
    args = (state.params, state.batch_stats, frames)
    # compiled before the clock starts, with the train step's options, as the train step is
    jit = functools.partial(jax.jit, compiler_options=models.compiler_options(config.model))
    forward = jit(lambda p, b, x: loss(p, b, x, key, state.step)[0]).lower(*args).compile()
    backward = jit(jax.grad(lambda p, b, x: loss(p, b, x, key, state.step),
                            has_aux=True)).lower(*args).compile()
    return {"forward_loss_s": _timed(lambda: forward(*args), warmup, repeats, steps)[0],
            "forward_backward_s": _timed(lambda: backward(*args), warmup, repeats, steps)[0]}


# Perfetto events that are the runtime's bookkeeping or Python, not XLA operations.
_NOT_OPS = ("$", "ThunkExecutor", "Wait", "Rendezvous", "PjitFunction", "PjRt", "Common",
            "Thunk", "TfrtCpu", "Execute", "Launch")


def op_time_by_kind(trace_dir) -> dict:
    """Microseconds per XLA operation kind ('fusion', 'convolution', ...; the op name before its
    first '.') summed over a profile's Perfetto trace, largest first. Checked on XLA:CPU traces
    only; GPU traces name kernels differently (open those in TensorBoard / Perfetto)."""
    files = sorted(pathlib.Path(trace_dir).rglob("*.trace.json.gz"))
    if not files:
        return {}
    events = json.loads(gzip.open(files[-1]).read())
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") == "X" and name and not name.startswith(_NOT_OPS):
            totals[name.split(".")[0]] += float(event.get("dur", 0.0))
    return dict(totals.most_common(15))


def check_request(config, precision: str, counts: dict) -> None:
    """`counts`: flag name -> value of the batch sizes and step counts (all >= 1, warm-up >= 0)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, got {precision!r}.")
    for name, value in counts.items():
        if value < (0 if name == "--warmup" else 1):
            raise ValueError(f"{name} must be at least {0 if name == '--warmup' else 1}, got "
                             f"{value}.")
    for name in ("--batch", "--infer_batch"):
        if counts[name] % jax.device_count():
            raise ValueError(f"{name} {counts[name]} is not divisible by the "
                             f"{jax.device_count()} devices.")
    if config.model.dtype != "float32" or config.model.param_dtype != "float32":
        raise ValueError("benchmark sets the compute dtype from --precision; leave model.dtype "
                         "and model.param_dtype at 'float32'.")


def mfu(step_flops: float | None, steps_per_s: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: FLOPs of a step x steps/s / the peak (TFLOP/s)."""
    return step_flops * steps_per_s / (peak * 1e12) if step_flops and peak else None


def measure_ours(config, batch: int, infer_batch: int, warmup: int, repeats: int, steps: int,
                 infer_steps: int, breakdown: bool = False, profile: str | None = None,
                 peak: float | None = None, peer=None) -> dict:
    """Our train and predict steps for `config` (its model.dtype already set); `peak`
    (TFLOP/s) overrides the device table's. With `peer` (openstl_peer.Peer) each of our
    repeats is followed by one of the peer's, and its result is under "peer"."""
    mesh = make_mesh((-1, 1))
    model = models.build(config.model)
    mc = config.model
    t, h, w, c = (int(v) for v in mc.in_shape)
    tx, _ = optim.create_optimizer(config.optim, steps_per_epoch=1000, epochs=1000)
    state, shardings = loop.init_state(config, tx, mesh)
    train_step = loop.make_train_step(model, config, tx, shardings, mesh)
    predict_step = loop.make_predict_step(model, config, mesh)

    def noise(n, seed):
        frames = jax.random.uniform(jax.random.key(seed), (n, t + mc.out_frames, h, w, c))
        return jax.device_put(frames, batch_sharding(mesh))

    train_frames, infer_frames = noise(batch, 1), noise(infer_batch, 2)
    start = time.perf_counter()
    train_compiled = train_step.lower(state, train_frames).compile()
    train_compile_s = time.perf_counter() - start
    variables = state.eval_variables(False)
    start = time.perf_counter()
    predict_compiled = predict_step.lower(variables, infer_frames).compile()
    predict_compile_s = time.perf_counter() - start

    def one_train_step():
        nonlocal state
        state, metrics = train_compiled(state, train_frames)
        return metrics["loss"]

    train, peer_train = _timed(one_train_step, warmup, repeats, steps,
                               peer and peer.train_timer(batch, warmup, steps))
    train_peak = _device_peak_bytes()  # before the breakdown's un-donated steps run
    extra = {}
    if profile:
        jax.profiler.start_trace(profile, create_perfetto_trace=True)
        extra["profiled_step_s"] = _timed(one_train_step, 0, 1, steps)[0][0]
        jax.profiler.stop_trace()
        extra["op_time_us_by_kind"] = op_time_by_kind(profile)
    if breakdown:
        extra.update(measure_breakdown(model, config, state, train_frames, warmup, repeats,
                                       steps))
    loss = float(jax.device_get(one_train_step()))
    if not jnp.isfinite(loss):
        raise FloatingPointError(f"the benchmark's train step produced a non-finite loss "
                                 f"({loss}); the timing would be meaningless.")
    variables = state.eval_variables(False)
    infer, peer_infer = _timed(lambda: predict_compiled(variables, infer_frames), warmup,
                               repeats, infer_steps,
                               peer and peer.infer_timer(infer_batch, warmup, infer_steps))
    if peer is not None:
        extra["peer"] = peer.report(batch, infer_batch, peer_train, peer_infer)
    train_flops = _flops(train_compiled)
    dtype = str(mc.dtype)
    peak = peak or peak_tflops(dtype)
    steps_per_s = 1.0 / statistics.median(train)
    return {
        "framework": f"jax {jax.__version__}",
        "device": jax.devices()[0].device_kind,
        "precision": dtype if dtype == "float32" else f"{dtype} compute, float32 parameters",
        "params": models.count_params(state.params),
        "train_step_s": train,
        "train_seq_per_s": batch * steps_per_s,
        "infer_pass_s": infer,
        "infer_seq_per_s": infer_batch / statistics.median(infer),
        "train_compile_s": train_compile_s,
        "infer_compile_s": predict_compile_s,
        "train_peak_bytes": train_peak,
        "peak_bytes_after_infer": _device_peak_bytes(),
        "train_static_bytes": _static_bytes(train_compiled),
        "infer_static_bytes": _static_bytes(predict_compiled),
        "train_step_flops": train_flops,
        "infer_pass_flops": _flops(predict_compiled),
        "achieved_tflops": train_flops * steps_per_s / 1e12 if train_flops else None,
        "peak_tflops": peak,
        "mfu": mfu(train_flops, steps_per_s, peak),
        "final_loss": loss,
        **extra,
    }


def run(config, precision: str = "fp32", batch: int | None = None, repeats: int = 5,
        steps: int = 10, warmup: int = 2, infer_batch: int | None = None,
        infer_steps: int | None = None, openstl: str | None = None,
        peak: float | None = None, breakdown: bool = False, profile: str | None = None,
        argv=None) -> dict:
    """Benchmark `config` (a ConfigDict, not modified); with `openstl` (a checkout path) also
    OpenSTL's torch model in the same process and the ratios ours / OpenSTL."""
    config = config.copy_and_resolve_references()
    batch = config.data.batch_size if batch is None else batch
    infer_batch = inference_batch(config.model.in_shape) if infer_batch is None else infer_batch
    infer_steps = steps if infer_steps is None else infer_steps
    check_request(config, precision, {"--batch": batch, "--infer_batch": infer_batch,
                                      "--repeats": repeats, "--steps": steps,
                                      "--infer_steps": infer_steps, "--warmup": warmup})
    peer = None
    if openstl:  # build it first: a bad path or model fails before any compiling
        from tau_jax.bench import openstl_peer
        peer = openstl_peer.Peer(config, openstl, precision)
    with config.unlocked():
        config.model.dtype = "bfloat16" if precision == "bf16" else "float32"
        config.data.batch_size = batch
    ours = measure_ours(config, batch, infer_batch, warmup, repeats, steps, infer_steps,
                        breakdown, profile, peak, peer)
    theirs = ours.pop("peer", None)
    result = {
        "provenance": provenance(argv),
        "config": {"model": config.model.name, "in_shape": list(config.model.in_shape),
                   "out_frames": config.model.out_frames, "batch": batch,
                   "infer_batch": infer_batch, "precision": precision, "warmup": warmup,
                   "repeats": repeats, "steps": steps, "infer_steps": infer_steps,
                   "dw_impl": config.model.get("dw_impl")},
        "tau_jax": ours,
    }
    if theirs is not None:
        theirs["mfu"] = mfu(ours["train_step_flops"], theirs["train_seq_per_s"] / batch,
                            ours["peak_tflops"])
        result["openstl"] = theirs
        result["ratio"] = {
            "train": ours["train_seq_per_s"] / theirs["train_seq_per_s"],
            "infer": ours["infer_seq_per_s"] / theirs["infer_seq_per_s"],
        }
        if ours["params"] != theirs["params"]:
            result["warning"] = (f"parameter counts differ: ours {ours['params']:,}, OpenSTL "
                                 f"{theirs['params']:,}")
    return result


def write(result: dict, path) -> pathlib.Path:
    """Write `result` as JSON to `path` (atomically: a temporary file renamed into place)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    return path


def summary_line(result: dict) -> str:
    ours = result["tau_jax"]
    cfg = result["config"]
    parts = [f"{cfg['model']} {cfg['precision']} batch {cfg['batch']}: train "
             f"{ours['train_seq_per_s']:.2f} seq/s, infer {ours['infer_seq_per_s']:.2f} seq/s "
             f"(batch {cfg['infer_batch']}), compile {ours['train_compile_s']:.1f} s"]
    if ours["mfu"] is not None:
        parts.append(f"MFU {100 * ours['mfu']:.1f}%")
    if "forward_loss_s" in ours:
        step = statistics.median(ours["train_step_s"])
        fwd = statistics.median(ours["forward_loss_s"])
        bwd = statistics.median(ours["forward_backward_s"]) - fwd
        parts.append(f"step {1e3 * step:.1f} ms = forward {100 * fwd / step:.0f}% + backward "
                     f"{100 * bwd / step:.0f}% + update {100 * (step - fwd - bwd) / step:.0f}%")
    if "ratio" in result:
        theirs = result["openstl"]
        parts.append(f"OpenSTL ({theirs['precision']}) train {theirs['train_seq_per_s']:.2f}, "
                     f"infer {theirs['infer_seq_per_s']:.2f} seq/s; ratio train "
                     f"{result['ratio']['train']:.2f}x, infer {result['ratio']['infer']:.2f}x")
    return "; ".join(parts)
