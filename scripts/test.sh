#!/usr/bin/env bash
# The test command: installs what the tests need, then runs them (extra args go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
python3 -m ruff check .
python3 -m mypy
exec python3 -m pytest "$@"
