"""The shape of the code: one seam per model family, modules a reader can hold in mind, lint."""

import pathlib
import re
import subprocess
import sys

from tau_jax import config, models
from tau_jax.models import family

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_LINES = 450


def test_every_family_declares_the_whole_seam_and_owns_its_names():
    seen = set()
    for fam in models.FAMILIES:
        missing = [name for name in family.SEAM if not hasattr(fam, name)]
        assert not missing, f"{fam.__name__} lacks {missing}"
        assert not seen & set(fam.NAMES)
        seen |= set(fam.NAMES)
        for name in fam.NAMES:
            section = config.default_model_config(name)
            assert section.name == name and models.family_of(name) is fam
            assert config.base_config(name).model.to_dict() == section.to_dict()
    assert sorted(seen) == models.names()


def test_only_family_modules_name_models():
    """train/, predict, convert and bench look families up: no model name in their code."""
    names = "|".join(models.names())
    pattern = re.compile(rf"""["']({names})["']""")
    places = [ROOT / "tau_jax" / p for p in ("train", "convert", "bench", "predict.py")]
    files = [f for p in places for f in (sorted(p.rglob("*.py")) if p.is_dir() else [p])]
    offenders = {str(f.relative_to(ROOT)): pattern.findall(f.read_text()) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_module_over_450_lines_and_docstrings_cite_only_this_repository():
    for path in sorted((ROOT / "tau_jax").rglob("*.py")):
        text = path.read_text()
        assert text.count("\n") <= MAX_LINES, f"{path.relative_to(ROOT)} is too long"
        assert "reference spec" not in text.lower(), path


def test_ruff_is_clean():
    """pyproject.toml's ruff configuration holds (ruff comes with the test extras)."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "tau_jax", "tests",
                             "experiments", "configs"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
