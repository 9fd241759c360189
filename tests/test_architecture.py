"""The import layers of pyproject.toml ([tool.importlinter], pictured in the README's
"Architecture") hold, and a wrong import breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the ``avokit`` package found in ``root`` with ``root``'s contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's sources and contracts in a scratch folder, to break on purpose."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "avokit", root / "avokit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_layers_hold() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 2 kept, 0 broken." in out.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    # losses take tensors and typed records: the recipe is above them
    ("avokit/losses/_wrong.py", "from avokit.recipe.train import LossConfig\n",
     "avokit.losses._wrong -> avokit.recipe.train"),
    # a component may not reach up into a stage
    ("avokit/teachers/_wrong.py", "import avokit.evaluate.bpb\n", "avokit.teachers._wrong -> avokit.evaluate.bpb"),
    # stages are independent: train never imports evaluate
    ("avokit/train/_wrong.py", "from avokit.evaluate import gate\n", "avokit.train._wrong -> avokit.evaluate"),
    # the gateway serves releases without the training stack
    ("avokit/gateway/_wrong.py", "import avokit.teachers.hf\n", "avokit.gateway._wrong -> avokit.teachers.hf"),
])
def test_a_wrong_import_breaks_the_contract(copy: Path, module: str, line: str, broken: str) -> None:
    wrong = copy / module
    wrong.write_text(line)
    try:
        out = _lint(copy)
    finally:
        wrong.unlink()
    assert out.returncode == 1, out.stdout + out.stderr
    assert broken in out.stdout and "1 broken" in out.stdout
