"""The `tau-jax` command. `tau-jax --help` lists the commands, `tau-jax COMMAND --help` shows
one's usage, an example and its flags (tau_jax/cli_help.py). Errors a user can cause are one
sentence on stderr with exit code 2 (usage) or 1 (the run cannot go on); `--verbose` or
TAU_JAX_VERBOSE=1 shows the traceback.
"""

from __future__ import annotations

import difflib
import json
import os
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

from tau_jax import cli_help, host_memory

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)

_DATA_DIR = flags.DEFINE_string("data_dir", None, "data: overrides config.data.data_dir.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "data: overrides config.data.manual_dir.")
_OUT = flags.DEFINE_string("out", "grid.png", "data show: PNG file to write.")
_SPLIT = flags.DEFINE_string("split", "test", "data show: split to show.")
_NUM = flags.DEFINE_integer("num", 4, "data show: number of sequences in the grid.")

_WORKDIR = flags.DEFINE_string("workdir", None, "the run directory (config, checkpoints, logs).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "train: multi-host coordinator HOST:PORT (process 0).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "train: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "train: this process's index.")

_INPUT = flags.DEFINE_string("input", None, "predict: .npy/.npz, image folder or video file.")
_HORIZON = flags.DEFINE_integer("horizon", None, "predict: frames to predict.")
_OUTPUT = flags.DEFINE_string("output", None,
                               "predict: the .npy file of the predictions; benchmark, compile: the "
                               "JSON file of the results; vis: the PNG/GIF path without its "
                               "suffix.")
_TOPOLOGY = flags.DEFINE_string("topology", None, "compile: Cloud TPU slice (v5e-8, v4-32, ...) "
                                "or shape (v5e:2x4).")
_GIF = flags.DEFINE_bool("gif", False, "predict: also write a PNG grid and a GIF next to it.")
_MP4 = flags.DEFINE_bool("mp4", False, "predict, vis: also write the GIF's frames as an MP4.")
_GRAYSCALE = flags.DEFINE_bool("grayscale", False, "predict: reduce RGB inputs to luma.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "predict: sequences per batch.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best",
                                  "which checkpoint: best (lowest validation MSE), latest, or a "
                                  "step number.")
_FROM_OPENSTL = flags.DEFINE_string("from_openstl", None, "convert: OpenSTL .pth file.")
_SAVE_PREDICTIONS = flags.DEFINE_bool(
    "save_predictions", False, "eval: also write inputs.npy, trues.npy and preds.npy of the "
    "whole split to WORKDIR/predictions/STEP/.")
_STEP = flags.DEFINE_integer("step", None, "vis: the step whose saved predictions to draw "
                             "(default: the newest).")
_SEQUENCES = flags.DEFINE_list("sequences", ["0", "1", "2", "3"],
                               "vis: indices of the sequences to draw, comma-separated.")
_CHANNEL = flags.DEFINE_integer("channel", None, "vis: draw only this channel, with a colormap.")
_CMAP = flags.DEFINE_string("cmap", None, "vis: matplotlib colormap (default: grey for video, "
                            "viridis for fields).")

_PRECISION = flags.DEFINE_enum("precision", "fp32", ["fp32", "bf16"],
                               "benchmark: fp32, or bf16 compute with float32 parameters.")
_BATCH = flags.DEFINE_integer("batch", None, "benchmark: training batch (default: the config's).")
_INFER_BATCH = flags.DEFINE_integer("infer_batch", None,
                                    "benchmark: inference batch (default: OpenSTL's 100 or 10).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "benchmark: timed repeats (the median is reported).")
_STEPS = flags.DEFINE_integer("steps", 10, "benchmark: train steps per timed repeat.")
_INFER_STEPS = flags.DEFINE_integer("infer_steps", None,
                                    "benchmark: forward passes per repeat (default: --steps).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "benchmark: untimed calls before the repeats.")
_OPENSTL = flags.DEFINE_string("openstl", None,
                               "benchmark: path of an OpenSTL checkout to run side by side.")
_BREAKDOWN = flags.DEFINE_bool("breakdown", False,
                                "benchmark: also time forward and forward+backward alone.")
_PROFILE = flags.DEFINE_string("profile", None,
                               "benchmark: write a jax.profiler trace of one repeat to this folder.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "all commands: show the traceback of an error "
                              "(also TAU_JAX_VERBOSE=1), for a bug report.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", None,
                                  "benchmark: device peak TFLOP/s for MFU (default: known GPUs/TPUs).")

DATA_ACTIONS = ("prepare", "show")


def _distributed_init():
    """jax.distributed for multi-host runs: explicit flags, or the Cloud TPU environment."""
    import jax
    if _COORDINATOR.value:
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    elif _on_cloud_tpu_pod():
        jax.distributed.initialize()


def _on_cloud_tpu_pod() -> bool:
    """Cloud TPU's variables hold hosts / a task number (libtpu without TPUs writes warnings)."""
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "").strip()
    return bool(hosts and " " not in hosts) or os.environ.get("CLOUD_TPU_TASK_ID", "").isdigit()


# ----------------------------------------------------------------------------------------------
# Errors: one sentence on stderr and an exit code, the traceback only when asked for
# ----------------------------------------------------------------------------------------------

EXIT_FAILURE, EXIT_USAGE = 1, 2


def _verbose(argv=()) -> bool:
    return (os.environ.get("TAU_JAX_VERBOSE", "") not in ("", "0")
            or any(a in ("--verbose", "-verbose") for a in argv)
            or (flags.FLAGS.is_parsed() and _VERBOSE.value))


def _exit_code(error: BaseException) -> int | None:
    """Exit code of an error a user can cause, or None for a bug (which keeps its traceback)."""
    from tau_jax.train.preemption import Preempted
    if isinstance(error, Preempted):
        return error.exit_code
    if isinstance(error, (ValueError, KeyError, FileNotFoundError, IsADirectoryError,
                          NotADirectoryError, flags.Error)):
        return EXIT_USAGE  # the request names something wrong: a field, a value, a path
    if isinstance(error, (OSError, FloatingPointError, RuntimeError)):
        return EXIT_FAILURE  # the run could not go on: disk, numbers, another process
    return None


def _message(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, OSError) and error.strerror:
        text = (f"cannot use {error.filename}: {error.strerror}." if error.filename else
                f"{error.strerror}.")
    return " ".join(str(text).split())


def _fail(command: str, error: BaseException, argv=()) -> None:
    """Print `tau-jax COMMAND: <one sentence>` and exit; re-raise bugs and --verbose runs."""
    code = _exit_code(error)
    if code is None or _verbose(argv):
        raise error
    print(f"tau-jax {command}: {_message(error)}", file=sys.stderr)
    sys.exit(code)


def _guarded(command):
    """Run a command; errors a user can cause end it with one sentence (see `_fail`)."""
    def run(argv):
        try:
            command(argv)
        except KeyboardInterrupt:  # a second Ctrl-C during training, or one outside it
            if _verbose():
                raise
            print(f"tau-jax {command.__name__.strip('_')}: interrupted.", file=sys.stderr)
            sys.exit(128 + signal.SIGINT)
        except Exception as e:  # noqa: BLE001 - _fail re-raises what is not a user's error
            _fail(command.__name__.strip("_"), e)
    return run


def _check_config_args(argv: list[str]) -> None:
    """Load `--config FILE` and check each `--config.a.b=v` names a field, before absl parses
    them (its errors there are tracebacks): one sentence naming the file or the override."""
    from tau_jax.config import load_config_file
    path, overrides = None, []
    for i, a in enumerate(argv):
        if a in ("--config", "-config") and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith(("--config=", "-config=")):
            path = a.split("=", 1)[1]
        elif a.startswith(("--config.", "-config.")):
            overrides.append(a.lstrip("-")[len("config."):].split("=", 1)[0])
    if path is None:
        return
    try:
        config = load_config_file(path)
    except Exception as e:  # noqa: BLE001 - the file's own error (syntax, import, ...)
        if isinstance(e, (FileNotFoundError, ValueError)):
            raise  # load_config_file's own sentences
        raise ValueError(f"config file {path} cannot be loaded: {type(e).__name__}: "
                         f"{_message(e)}") from e
    for override in overrides:
        node, done = config, []
        for name in override.split("."):
            if not hasattr(node, "keys") or name not in node:
                where = ".".join(done) or "the config"
                known = list(node.keys()) if hasattr(node, "keys") else []
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {'.'.join(done + close)}?" if close else (
                    f"; its fields: {', '.join(known)}." if known else ".")
                raise ValueError(f"--config.{override}: {where} has no field {name!r}{hint}")
            node, done = node[name], done + [name]


def _parse_flags(argv):
    """absl's flag parsing with our one-sentence errors (exit 2) instead of its FATAL lines;
    a flag of another command is an error too."""
    command = argv[0].rsplit(" ", 1)[-1]
    try:
        rest = flags.FLAGS(argv)
        foreign = cli_help.foreign_flags(command, flags.FLAGS)
        if foreign:
            raise ValueError(f"--{foreign[0]} is a flag of `tau-jax "
                             f"{' / '.join(cli_help.owners(foreign[0]))}`, not of `tau-jax "
                             f"{command}` (`tau-jax {command} --help` lists its flags).")
        return rest
    except Exception as e:  # noqa: BLE001 - _fail re-raises what is not a user's error
        _fail(command, e, argv)


def _print_scalars(metrics: dict) -> None:
    print(json.dumps({k: v for k, v in metrics.items() if not hasattr(v, "shape")}))


def _quiet_libraries():
    """Keep the console to tau-jax's own lines: other libraries' INFO logs are dropped, their
    warnings kept, and orbax's logs dropped whole (a failed save reaches tau-jax as an error,
    reported in one sentence; its threads would log the same failure with 4-8 tracebacks).
    `--verbose` keeps everything."""
    import logging
    from absl import logging as absl_logging
    if _verbose():
        return

    def keep(record):
        if "tau_jax" in record.pathname:
            return True
        message = record.getMessage()
        if "exception was never retrieved" in message:
            return False  # asyncio on the writes orbax abandoned after a failed one
        if message.startswith(("Using custom data configuration", "Variant folder")):
            return False  # tfds on each open of a dataset tau-jax configures itself
        return record.levelno >= logging.WARNING and "orbax" not in record.pathname

    absl_logging.get_absl_handler().addFilter(keep)
    default_hook = sys.unraisablehook

    def unraisable(event):
        # after a failed save orbax closes its event loop while tensorstore still completes
        # the other writes: each completion reports 'Event loop is closed' (hundreds of them)
        if not (isinstance(event.exc_value, RuntimeError)
                and str(event.exc_value) == "Event loop is closed"):
            default_hook(event)

    sys.unraisablehook = unraisable


@_guarded
def _train(_):
    _quiet_libraries()
    _distributed_init()
    from tau_jax.train import train_and_evaluate
    _print_scalars(train_and_evaluate(_CONFIG.value, _WORKDIR.value))


@_guarded
def _eval(_):
    _quiet_libraries()
    from tau_jax.train import evaluate
    _print_scalars(evaluate(_WORKDIR.value, checkpoint=_CHECKPOINT.value,
                            save_predictions=_SAVE_PREDICTIONS.value))


@_guarded
def _vis(_):
    import pathlib
    import numpy as np
    from tau_jax import data, visualize
    from tau_jax.train import predictions
    from tau_jax.train.workdir import load_config
    if _CMAP.value is not None:
        visualize.colormap(_CMAP.value)  # an unknown name: one sentence before any reading
    workdir = pathlib.Path(_WORKDIR.value)
    step, arrays = predictions.load(workdir, _STEP.value)
    n, c = len(arrays["inputs"]), arrays["inputs"].shape[-1]
    try:
        chosen = [int(i) for i in _SEQUENCES.value]
    except ValueError:
        raise ValueError(f"--sequences must be indices such as 0,5,7; got "
                         f"{','.join(_SEQUENCES.value)}.") from None
    if not chosen or any(not 0 <= i < n for i in chosen):
        raise ValueError(f"--sequences {','.join(_SEQUENCES.value)}: the saved predictions of "
                         f"step {step} hold sequences 0 to {n - 1}.")
    data_config = load_config(workdir).data
    channels, names = slice(None), data.channel_labels(data_config)
    if _CHANNEL.value is not None:
        k = _CHANNEL.value
        if not 0 <= k < c:
            raise ValueError(f"--channel {k}: the frames have "
                             + ("one channel, 0." if c == 1 else f"channels 0 to {c - 1}."))
        channels, names = slice(k, k + 1), [names[k] if names else f"channel {k}"]
    inputs, trues, preds = (np.asarray(arrays[k][chosen][..., channels])
                            for k in predictions.ARRAYS)
    stem = pathlib.Path(_OUTPUT.value) if _OUTPUT.value else (
        workdir / predictions.FOLDER / str(step) / f"vis_{'_'.join(map(str, chosen))}")
    paths = visualize.save_samples(
        inputs, trues, preds, stem, mp4=_MP4.value, channel_names=names, cmap=_CMAP.value,
        ids=chosen, spatial_norm=data.metric_conventions(data_config)["spatial_norm"],
        field=True if _CHANNEL.value is not None else None,
        title=f"step {step}, sequences {', '.join(map(str, chosen))}")
    print(f"wrote {', '.join(map(str, paths))}")


@_guarded
def _predict(_):
    _quiet_libraries()
    from tau_jax import data, predict
    if _HORIZON.value is None:
        raise ValueError("--horizon is required (frames to predict).")
    out = predict.output_path(_OUTPUT.value)  # checked before any work
    predictor = predict.load(_WORKDIR.value, checkpoint=_CHECKPOINT.value)
    data_config = predictor.config.data
    t, _, _, c = predictor.in_shape
    custom = data_config.name == "custom"  # frames read as the custom dataset read its files
    frames = predict.read_inputs(
        _INPUT.value, t, c,
        grayscale=_GRAYSCALE.value or bool(custom and data_config.custom_grayscale),
        resize=tuple(data_config.custom_resize) if custom else (0, 0))
    preds = predictor.predict(frames, _HORIZON.value, _BATCH_SIZE.value)
    written = [predict.save_array(out, preds)]
    if _GIF.value or _MP4.value:
        from tau_jax.visualize import save_samples
        names = data.channel_labels(data_config)
        written += [str(p) for p in save_samples(frames, None, preds, out.with_suffix(""),
                                                 mp4=_MP4.value, title=f"step {predictor.step}",
                                                 channel_names=names)]
    print(f"predicted {preds.shape} (N, horizon, H, W, C) from {frames.shape} at step "
          f"{predictor.step}; wrote {', '.join(map(str, written))}")


@_guarded
def _convert(_):
    _quiet_libraries()
    from tau_jax import convert
    if not _FROM_OPENSTL.value:
        raise ValueError("--from-openstl FILE.pth is required.")
    if not os.path.exists(_FROM_OPENSTL.value):
        raise FileNotFoundError(f"{_FROM_OPENSTL.value} does not exist.")
    try:
        state_dict = convert.load_pth(_FROM_OPENSTL.value)
    except ImportError as e:
        raise ValueError(str(e)) from None
    workdir = convert.convert_openstl(state_dict, _CONFIG.value, _WORKDIR.value)
    print(f"converted {_FROM_OPENSTL.value} into {workdir} (step 0)")


@_guarded
def _summary(_):
    from tau_jax.summary import summarize
    info = summarize(_CONFIG.value.model)
    print(json.dumps(info, indent=2))


@_guarded
def _benchmark(_):
    _quiet_libraries()
    if _OPENSTL.value:  # PyTorch shares the device: JAX must not reserve 75% of it up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from tau_jax.bench import benchmark
    result = benchmark.run(_CONFIG.value, _PRECISION.value, _BATCH.value, _REPEATS.value,
                           _STEPS.value, _WARMUP.value, _INFER_BATCH.value, _INFER_STEPS.value,
                           _OPENSTL.value, _PEAK_TFLOPS.value, _BREAKDOWN.value,
                           _PROFILE.value)
    print(benchmark.summary_line(result))
    if _OUTPUT.value:
        print(f"wrote {benchmark.write(result, _OUTPUT.value)}")
    else:
        print(json.dumps(result, indent=2))


@_guarded
def _compile(_):
    _quiet_libraries()
    from tau_jax.bench import benchmark, tpu_plan
    report = tpu_plan.plan(_CONFIG.value, _TOPOLOGY.value)
    print(tpu_plan.table(report))
    if _OUTPUT.value:
        print(f"wrote {benchmark.write(report, _OUTPUT.value)}")


@_guarded
def _data(argv):
    from tau_jax import data
    args = argv[1:]
    if len(args) != 2 or args[0] not in DATA_ACTIONS:
        given = " ".join(args) or "nothing"
        raise ValueError(f"expected prepare or show and a dataset name, got {given}; usage: "
                         f"{cli_help.COMMANDS['data'].usage}")
    action, name = args
    config = _CONFIG.value
    config.data.name = name
    if _DATA_DIR.value is not None:
        config.data.data_dir = _DATA_DIR.value
    if _MANUAL_DIR.value is not None:
        config.data.manual_dir = _MANUAL_DIR.value
    if action == "prepare":
        import tensorflow_datasets as tfds
        tfds.enable_progress_bar()
        builder = data.prepare(config.data)
        sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
        print(f"{name}: prepared in {builder.data_dir} ({sizes} records)")
    else:
        from tau_jax.data import preview
        source = data.get_source(config.data, _SPLIT.value)
        path = preview.save_grid(source, _OUT.value, _NUM.value)
        print(f"{name}/{_SPLIT.value}: {len(source)} sequences of {source.shape}; wrote {path}")


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 1 and argv[1] in cli_help.HELP_FLAGS:
        print(cli_help.overview())
        sys.exit(0)
    if len(argv) < 2 or argv[1] not in cli_help.COMMANDS:
        given = f"unknown command {argv[1]!r}" if len(argv) > 1 else "no command given"
        print(f"tau-jax: {given}; the commands are {', '.join(cli_help.COMMANDS)} "
              "(`tau-jax --help` says what each does).", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    command = argv.pop(1)
    argv[0] = f"tau-jax {command}"
    if command in ("train", "eval", "predict", "benchmark"):
        host_memory.keep_freed_memory()  # before JAX's CPU client exists
    if any(a in cli_help.HELP_FLAGS for a in argv[1:]):
        print(cli_help.command_help(command, flags.FLAGS))
        sys.exit(0)
    argv = [a.replace("--from-openstl", "--from_openstl", 1) if a.startswith("--from-openstl")
            else a for a in argv]
    if command == "data":
        if not any(a in ("--config", "-config") or a.startswith(("--config=", "-config="))
                   for a in argv):
            # before any --config.x=y override, which config_flags parses after the file
            argv.insert(1, "--config=" + os.path.join(os.path.dirname(__file__), "data",
                                                      "default_config.py"))
    if command in ("train", "summary", "convert", "benchmark", "compile"):
        flags.mark_flag_as_required("config")
    if command == "compile":
        flags.mark_flag_as_required("topology")
    if command in ("train", "eval", "predict", "convert", "vis"):
        flags.mark_flag_as_required("workdir")
    if command == "predict":
        for name in ("input", "horizon", "output"):
            flags.mark_flag_as_required(name)
    try:
        _check_config_args(argv)
    except Exception as e:  # noqa: BLE001 - _fail re-raises what is not a user's error
        _fail(command, e, argv)
    app.run({"train": _train, "eval": _eval, "predict": _predict, "convert": _convert,
             "vis": _vis, "summary": _summary, "benchmark": _benchmark, "compile": _compile,
             "data": _data}[command], argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
    main()
