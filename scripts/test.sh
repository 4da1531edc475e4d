#!/usr/bin/env bash
# The test command: installs what the tests need, then runs them (extra args go to pytest)
# with .venv's Python (see scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
