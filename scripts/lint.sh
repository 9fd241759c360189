#!/usr/bin/env bash
# Lint and types (issue 37): ruff with the rules in pyproject.toml [tool.ruff.lint], then mypy
# (strict on contracts, losses, align, cache and the gateway's services; basic elsewhere).
# Any finding fails: both tools exit non-zero on one and `set -e` stops here.
#   bash scripts/lint.sh              # the whole codebase, as CI runs it
#   bash scripts/lint.sh FILE...      # only these files (tests/test_lint_gate.py seeds findings)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${AVOKIT_VENV:-.venv}/bin/python"
if [[ $# -gt 0 ]]; then
  "$PY" -m ruff check --no-cache "$@"
  "$PY" -m mypy "$@"
else
  "$PY" -m ruff check avokit bench tests scripts
  "$PY" -m mypy  # the files listed in [tool.mypy]
fi
