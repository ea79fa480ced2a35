"""What `tau-jax --help` and `tau-jax COMMAND --help` print: each command's line, usage, an
example and only its own flags (absl keeps every command's flags in one registry)."""

from __future__ import annotations

import dataclasses
import textwrap


@dataclasses.dataclass(frozen=True)
class Command:
    summary: str        # one line for `tau-jax --help`
    usage: str
    example: str
    flags: tuple[str, ...]  # the flags this command takes (besides --verbose)
    details: str = ""


COMMANDS = {
    "train": Command(
        "train and evaluate a config in a workdir, resuming its newest checkpoint",
        "tau-jax train --config FILE --workdir DIR [--config.SECTION.FIELD=VALUE ...]",
        "tau-jax train --config configs/mmnist/quickstart.py --workdir runs/quickstart "
        "--config.train.max_steps=100",
        ("config", "workdir", "coordinator_address", "num_processes", "process_id"),
        "SIGTERM saves a checkpoint and exits 143, Ctrl-C exits 130; the same command resumes. "
        "Multi-host: --coordinator_address/--num_processes/--process_id on each host, or "
        "nothing on a Cloud TPU VM."),
    "eval": Command(
        "OpenSTL metrics of a run's best (or latest, or any) checkpoint, with its saved config",
        "tau-jax eval --workdir DIR [--checkpoint best|latest|STEP] [--save_predictions]",
        "tau-jax eval --workdir runs/quickstart --checkpoint latest --save_predictions",
        ("workdir", "checkpoint", "save_predictions"),
        "Saved predictions are float32 (N, T, H, W, C) in the data's units (OpenSTL's file "
        "names; it saves normalised N, T, C, H, W arrays); `tau-jax vis` draws them."),
    "predict": Command(
        "predict the frames after a .npy/.npz array, an image folder or a video",
        "tau-jax predict --workdir DIR --input FILE_OR_DIR --horizon N --output OUT.npy "
        "[--gif] [--mp4]",
        "tau-jax predict --workdir runs/quickstart --input clips.npy --horizon 20 "
        "--output pred.npy --gif",
        ("workdir", "input", "horizon", "output", "gif", "mp4", "grayscale", "batch_size",
         "checkpoint"),
        "Inputs are (N, T, H, W, C) or (T, H, W, C) in the dataset's units; any frame size the "
        "model takes after padding."),
    "vis": Command(
        "draw predictions saved by `eval --save_predictions` as a labelled PNG grid and a GIF",
        "tau-jax vis --workdir DIR [--step N] [--sequences 0,1,2,3] [--channel K] [--cmap NAME] "
        "[--output STEM] [--mp4]",
        "tau-jax vis --workdir runs/quickstart --sequences 0,10,20 --cmap magma",
        ("workdir", "step", "sequences", "channel", "cmap", "output", "mp4"),
        "Writes WORKDIR/predictions/STEP/vis_<sequences>.{png,gif} unless --output says where."),
    "convert": Command(
        "make a workdir from OpenSTL weights (needs torch), for eval, predict and fine-tuning",
        "tau-jax convert --from-openstl FILE.pth --config FILE --workdir DIR",
        "tau-jax convert --from-openstl tau_mmnist.pth --config configs/mmnist/tau.py "
        "--workdir runs/openstl_tau",
        ("from_openstl", "config", "workdir")),
    "summary": Command(
        "parameters and forward FLOPs of a config's model",
        "tau-jax summary --config FILE [--config.SECTION.FIELD=VALUE ...]",
        "tau-jax summary --config configs/taxibj/tau.py",
        ("config",)),
    "benchmark": Command(
        "training and inference throughput, compile time, memory and MFU",
        "tau-jax benchmark --config FILE [--precision fp32|bf16] [--batch N] [--openstl PATH] "
        "[--output F.json]",
        "tau-jax benchmark --config configs/mmnist/quickstart.py --precision bf16 "
        "--output bench.json",
        ("config", "precision", "batch", "infer_batch", "repeats", "steps", "infer_steps",
         "warmup", "openstl", "breakdown", "profile", "peak_tflops", "output"),
        "With --openstl PATH, OpenSTL's PyTorch model runs in the same process and the ratios "
        "are printed."),
    "compile": Command(
        "plan a Cloud TPU job on this computer: memory, collectives and step time per device",
        "tau-jax compile --config FILE --topology v5e-8|v4-32|v5e:2x4 [--output F.json]",
        "tau-jax compile --config configs/mmnist/tau.py --topology v5e-8 "
        "--config.data.batch_size=256",
        ("config", "topology", "output"),
        "Compiles the train step for the TPU topology ahead of time (needs libtpu: "
        "pip install -e '.[tpu]'); the numbers are compiler estimates, not measurements."),
    "data": Command(
        "prepare a dataset ahead of time, or draw a few of its sequences",
        "tau-jax data {prepare,show} NAME [--data_dir DIR] [--manual_dir DIR] [--out grid.png] "
        "[--split test] [--num 4] [--config FILE] [--config.data.FIELD=VALUE ...]",
        "tau-jax data show moving_mnist --out grid.png --num 4",
        ("config", "data_dir", "manual_dir", "out", "split", "num")),
}
COMMON_FLAGS = ("verbose",)
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "help")


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: tau-jax COMMAND [flags]", "", "commands:"]
    lines += [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    lines += ["", "`tau-jax COMMAND --help` shows a command's usage, an example and its flags."]
    return "\n".join(lines)


def command_help(name: str, flag_values) -> str:
    c = COMMANDS[name]
    lines = [f"usage: {c.usage}", "", f"{c.summary[0].upper()}{c.summary[1:]}."]
    if c.details:
        lines += textwrap.wrap(c.details, 96, break_on_hyphens=False)
    lines += ["", "example:", f"  {c.example}", "", "flags:"]
    for flag in c.flags + COMMON_FLAGS:
        if flag == "config":
            lines += [_flag_line("--config FILE", "experiment config file (configs/*/*.py)"),
                      _flag_line("--config.SECTION.FIELD=VALUE",
                                 "override one field of it (fields: tau_jax/config.py)")]
            continue
        f = flag_values[flag]
        shown = "--from-openstl" if flag == "from_openstl" else f"--{flag}"
        value = ",".join(f.default) if isinstance(f.default, list) else f.default
        default = "" if value in (None, False) else f" (default: {value})"
        lines.append(_flag_line(shown, own_help(f.help, name) + default))
    return "\n".join(lines)


def own_help(text: str, command: str) -> str:
    """A flag's help for one command: a flag shared by several commands says what it does for
    each ('predict: the .npy file; vis: ...') or for several at once ('predict, vis: ...')."""
    if text.startswith("<"):  # absl's enum flags begin with their values: '<fp32|bf16>: ...'
        text = text.split(">: ", 1)[-1]
    parts, picked = text.split("; "), []
    for part in parts:
        owners, sep, rest = part.partition(": ")
        names = {n.strip().split(" ")[0] for n in owners.replace("/", ",").split(",")}
        if sep and names <= set(COMMANDS) | {"all"}:
            if command in names or "all" in names:
                picked.append(rest)
        elif picked or len(parts) == 1:
            picked.append(part)
    out = "; ".join(picked) or text
    return out if out.endswith(".") else out + "."


def _flag_line(flag: str, text: str) -> str:
    return f"  {flag:<30} {text}"


def foreign_flags(name: str, flag_values) -> list[str]:
    """The flags given on the command line that belong to other commands."""
    ours = {f for c in COMMANDS.values() for f in c.flags}
    allowed = set(COMMANDS[name].flags) | set(COMMON_FLAGS)
    return sorted(f for f in ours - allowed if flag_values[f].present)


def owners(flag: str) -> list[str]:
    return [name for name, c in COMMANDS.items() if flag in c.flags]
