"""The README's test command fails on a lint finding, a type finding, and a pytest run that
collects nothing: scripts/lint.sh on seeded files with the project's own ruff and mypy
configuration, and scripts/test.sh itself with its setup, database and tools replaced by stubs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(*files: Path) -> subprocess.CompletedProcess[str]:
    venv = Path(sys.executable).parent.parent  # the venv running the tests has ruff and mypy
    return subprocess.run(["bash", str(ROOT / "scripts" / "lint.sh"), *map(str, files)], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "AVOKIT_VENV": str(venv)},
                          timeout=300)


def test_lint_passes_a_clean_file(tmp_path: Path) -> None:
    clean = tmp_path / "clean.py"
    clean.write_text('"""Clean."""\n\n\ndef f() -> int:\n    return 1\n')
    done = _lint(clean)
    assert done.returncode == 0, done.stdout + done.stderr


def test_lint_fails_on_a_ruff_finding(tmp_path: Path) -> None:
    seeded = tmp_path / "unused.py"
    seeded.write_text("import os\n")
    done = _lint(seeded)
    assert done.returncode != 0 and "F401" in done.stdout


def test_lint_fails_on_a_type_finding(tmp_path: Path) -> None:
    seeded = tmp_path / "wrong.py"  # lint-clean, so the run reaches mypy
    seeded.write_text('def f() -> int:\n    return "one"\n')
    done = _lint(seeded)
    assert done.returncode != 0 and "[return-value]" in done.stdout, done.stdout + done.stderr


def _stub(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of scripts/test.sh with stub setup, lint, database and python: each stub appends
    its name to calls.log; lint and python exit with LINT_RC / PYTEST_RC."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "test.sh", tmp_path / "scripts" / "test.sh")
    log = tmp_path / "calls.log"
    _stub(tmp_path / "scripts" / "setup.sh", f'echo setup >> "{log}"')
    _stub(tmp_path / "scripts" / "lint.sh", f'echo lint >> "{log}"; exit "${{LINT_RC:-0}}"')
    _stub(tmp_path / ".ci" / "postgres.sh", f'echo postgres >> "{log}"; echo true')
    _stub(tmp_path / ".venv" / "bin" / "python", f'echo pytest >> "{log}"; exit "${{PYTEST_RC:-0}}"')
    return tmp_path


def _run_test_sh(checkout: Path, **env: str) -> tuple[int, list[str], str]:
    done = subprocess.run(["bash", str(checkout / "scripts" / "test.sh")], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)
    calls = (checkout / "calls.log").read_text().split() if (checkout / "calls.log").exists() else []
    return done.returncode, calls, done.stderr


def test_the_test_command_runs_lint_before_the_suite(checkout: Path) -> None:
    rc, calls, _ = _run_test_sh(checkout)
    assert (rc, calls) == (0, ["setup", "lint", "postgres", "pytest"])


def test_a_lint_finding_fails_the_test_command_before_any_test(checkout: Path) -> None:
    rc, calls, _ = _run_test_sh(checkout, LINT_RC="1")
    assert rc == 1 and calls == ["setup", "lint"]


@pytest.mark.parametrize("pytest_rc", ["1", "5"])
def test_pytest_failing_or_collecting_nothing_fails_the_test_command(checkout: Path, pytest_rc: str) -> None:
    rc, calls, err = _run_test_sh(checkout, PYTEST_RC=pytest_rc)
    assert rc == int(pytest_rc) and calls[-1] == "pytest"
    assert ("collected no tests" in err) == (pytest_rc == "5")
