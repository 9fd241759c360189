#!/usr/bin/env bash
# Set up (with test tools), lint and type-check (scripts/lint.sh: any ruff or mypy finding fails
# the run before a test starts), start a throwaway PostgreSQL for the gateway tests, run the suite.
# pytest's exit code passes through: 5 ("no tests ran") fails like any other failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
bash scripts/lint.sh
# The gateway tests run on SQLite and on a real PostgreSQL (installed from Debian if missing).
eval "$(bash .ci/postgres.sh)"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
# one worker per core (test files stay on one worker: their fixtures are module-scoped);
# pass -n 0 to run in one process
.venv/bin/python -m pytest -n "${AVOKIT_TEST_WORKERS:-$(nproc)}" --dist loadfile "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
  echo "pytest collected no tests: failing the run" >&2
fi
exit $rc
