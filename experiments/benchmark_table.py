"""The README's benchmark table, generated from experiments/results/benchmark_*.json.

    python experiments/benchmark_table.py            # print the table
    python experiments/benchmark_table.py --write    # replace it in README.md

Each row is one `tau-jax benchmark ... --output experiments/results/benchmark_<name>.json` run:
ours and, where the run had `--openstl`, OpenSTL's PyTorch model measured in the same process.
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
BEGIN, END = "<!-- benchmark-table:begin -->", "<!-- benchmark-table:end -->"
HEADER = ("| run | device | model, batch | precision | train seq/s (ours / OpenSTL = ratio) "
          "| inference seq/s (ours / OpenSTL = ratio), batch | compile s | MFU | date, commit |\n"
          "|---|---|---|---|---|---|---|---|---|")


def _pair(ours: float, theirs: float | None, ratio: float | None) -> str:
    if theirs is None:
        return f"{ours:.3g}"
    return f"{ours:.3g} / {theirs:.3g} = **{ratio:.2f}x**"


def row(name: str, result: dict) -> str:
    prov, cfg, ours = result["provenance"], result["config"], result["tau_jax"]
    theirs, ratio = result.get("openstl", {}), result.get("ratio", {})
    shape = "x".join(str(v) for v in cfg["in_shape"])
    model = f"{cfg['model']} ({ours['params']:,} params) {shape} -> {cfg['out_frames']}, " \
            f"batch {cfg['batch']}"
    precision = cfg["precision"] + (f" (OpenSTL: {theirs['precision']})" if theirs else "")
    mfu = f"{100 * ours['mfu']:.1f}%" if ours.get("mfu") is not None else "-"
    return (f"| {name} | {prov['device']} ({prov['machine']}) | {model} | {precision} | "
            f"{_pair(ours['train_seq_per_s'], theirs.get('train_seq_per_s'), ratio.get('train'))}"
            f" | {_pair(ours['infer_seq_per_s'], theirs.get('infer_seq_per_s'), ratio.get('infer'))}"
            f", batch {cfg['infer_batch']}"
            f" | {ours['train_compile_s']:.0f} | {mfu} | {prov['date']}, {prov['commit']} |")


def table() -> str:
    rows = [row(path.stem[len("benchmark_"):], json.loads(path.read_text()))
            for path in sorted(RESULTS.glob("benchmark_*.json"))]
    return "\n".join([HEADER, *rows])


def replace_in(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"README.md has no {BEGIN} ... {END} markers.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        readme = ROOT / "README.md"
        readme.write_text(replace_in(readme.read_text()))
        print(f"updated {readme}")
    else:
        print(table())
