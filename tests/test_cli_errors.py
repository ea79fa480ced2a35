"""Every mistake a user can make on the command line is one sentence on stderr, exit code 2
(usage) or 1 (the run cannot go on), no traceback unless --verbose, and no workdir left behind."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tau_jax import data
from test_train import ROOT, make_dataset, tiny_config, write_config_file


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny config file, a file where a folder is expected, broken config files, garbage."""
    root = tmp_path_factory.mktemp("cli_errors")
    config = tiny_config((make_dataset(root / "clips.npy"), root / "tfds"))
    data.prepare(config.data)  # refused runs must not be told apart by a dataset appearing
    (root / "garbage.npy").write_bytes(b"this is not an array\n" * 4)
    (root / "syntax.py").write_text("def get_config(:\n")
    (root / "no_get_config.py").write_text("X = 1\n")
    (root / "a_file").write_text("")
    (root / "other_run").mkdir()
    other = config.copy_and_resolve_references()
    other.model.hid_T = 32
    (root / "other_run" / "config.json").write_text(other.to_json())
    (root / "broken_run").mkdir()
    (root / "broken_run" / "config.json").write_text('{"model": {"name": ')
    return root, write_config_file(config, root / "tiny.py")


def run(root: pathlib.Path, *args: str, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "tau_jax.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


# (arguments with {root} / {config} placeholders, exit code, words the sentence must hold)
CASES = {
    "unknown command": (["fly"], 2, "unknown command 'fly'"),
    "missing config file": (["summary", "--config={root}/missing.py"], 2, "does not exist"),
    "config not python": (["summary", "--config={root}/a_file"], 2, "not a Python file"),
    "config syntax error": (["summary", "--config={root}/syntax.py"], 2, "SyntaxError"),
    "config without get_config": (["summary", "--config={root}/no_get_config.py"], 2,
                                  "defines no get_config()"),
    "no config flag": (["summary"], 2, "--config"),
    "unknown field": (["summary", "--config={config}", "--config.optim.lrr=1"], 2,
                      "optim has no field 'lrr'; did you mean optim.lr?"),
    "unknown section": (["summary", "--config={config}", "--config.optimm.lr=1"], 2,
                        "the config has no field 'optimm'; did you mean optim?"),
    "value of the wrong type": (["summary", "--config={config}", "--config.optim.lr=abc"], 2,
                                "could not convert string to float"),
    "unknown flag": (["summary", "--config={config}", "--bogus=1"], 2, "bogus"),
    "batch size 0": (["train", "--config={config}", "--workdir={root}/run",
                      "--config.data.batch_size=0"], 2, "data.batch_size must be an integer"),
    "negative max_steps": (["train", "--config={config}", "--workdir={root}/run",
                            "--config.train.max_steps=-5"], 2, "train.max_steps must be"),
    "negative checkpoint period": (["train", "--config={config}", "--workdir={root}/run",
                                    "--config.train.checkpoint_every_steps=-1"], 2,
                                   "train.checkpoint_every_steps must be"),
    "lr beyond float32": (["train", "--config={config}", "--workdir={root}/run",
                           "--config.optim.lr=1e39"], 2, "within float32 range"),
    "eval batch 0": (["train", "--config={config}", "--workdir={root}/run",
                      "--config.data.eval_batch_size=0"], 2, "data.eval_batch_size must be"),
    "garbage npy": (["train", "--config={config}", "--workdir={root}/run",
                     "--config.data.custom_path={root}/garbage.npy"], 2,
                    "not NumPy's .npy header"),
    "data_dir under a file": (["train", "--config={config}", "--workdir={root}/run",
                               "--config.data.data_dir={root}/a_file/tfds"], 2, "a_file"),
    "workdir under a file": (["train", "--config={config}", "--workdir={root}/a_file/run"], 1,
                             "Cannot write to workdir"),
    "workdir of another model": (["train", "--config={config}", "--workdir={root}/other_run"],
                                 2, "model.hid_T: 32 there, 16 now"),
    "corrupt config.json": (["eval", "--workdir={root}/broken_run"], 2,
                            "broken_run/config.json is not valid JSON"),
    "eval of no workdir": (["eval", "--workdir={root}/nothing"], 2, "is not a tau-jax workdir"),
    "predict without horizon": (["predict", "--workdir={root}/run", "--input={root}/clips.npy",
                                 "--output={root}/out.npy"], 2, "--horizon"),
    "predict output under a file": (["predict", "--workdir={root}/other_run",
                                     "--input={root}/clips.npy", "--horizon=2",
                                     "--output={root}/a_file/out.npy"], 2,
                                    "a_file is a file, not a folder"),
    "convert without weights": (["convert", "--config={config}", "--workdir={root}/run"], 2,
                                "--from-openstl"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_mistake_is_one_sentence(files, case):
    root, config = files
    template, code, words = CASES[case]
    args = [a.format(root=root, config=config) for a in template]
    before = sorted(p.name for p in root.iterdir())
    result = run(root, *args)
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    ours = [line for line in result.stderr.splitlines() if line.startswith("tau-jax")]
    assert len(ours) == 1 and words in ours[0], result.stderr[-3000:]
    assert sorted(p.name for p in root.iterdir()) == before, "a refused command left files"


def test_verbose_shows_the_traceback(files):
    root, config = files
    result = run(root, "summary", f"--config={config}", "--config.optim.lrr=1", "--verbose")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_predict_output_without_suffix_is_named_as_written(tmp_path):
    from tau_jax.predict import output_path
    assert output_path(tmp_path / "pred") == tmp_path / "pred.npy"
    assert output_path(tmp_path / "pred.npy") == tmp_path / "pred.npy"
    assert output_path(tmp_path) == tmp_path / "predictions.npy"
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        output_path(tmp_path / "f" / "pred.npy")


def test_garbage_npy_is_named_not_called_pickled(tmp_path):
    from tau_jax.data.base import load_array
    (tmp_path / "x.npy").write_bytes(b"PNG or anything else")
    with pytest.raises(ValueError, match=r"x.npy as a NumPy array file: it starts with"):
        load_array(tmp_path / "x.npy")
    np.save(tmp_path / "ok.npy", np.arange(3))
    assert load_array(tmp_path / "ok.npy").tolist() == [0, 1, 2]
    assert json.dumps(load_array(tmp_path / "ok.npy").tolist())
