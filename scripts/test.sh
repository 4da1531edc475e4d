#!/usr/bin/env bash
# The test command: installs what the tests need, then runs them in two stages.
#   1. ruff (check and format --check), mypy and the whole suite (extra args go to pytest)
#      with .venv's Python: the distribution's Python and libraries where there is one (see
#      scripts/install-test-deps.sh).
#   2. A named subset (LATEST_LIBS below: the unit tests and one real-QEMU end-to-end test) in
#      .venv-pypi: the same base Python without the distribution's libraries, the newest
#      prometheus_client, PyYAML, requests and bcrypt from PyPI.
# It fails when either stage fails; both always run.
#
# scripts/test.sh --fast: the contributor's loop, under a minute on 2 cores: ruff check, ruff
# format --check, mypy and the unit tests (UNIT below, less the floods and storms marked
# `load`) in the existing .venv; no install, no QEMU, no Prometheus. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests that need no QEMU, Prometheus, package build or libvirt, and are not soak tests.
UNIT='not qemu and not prometheus and not package and not libvirt and not slow'
# The subset of stage 2, named once (CONTRIBUTING.md, "Running a part of the tests").
LATEST_LIBS="($UNIT) or latest_libs_e2e"

if [ "${1:-}" = "--fast" ]; then
    shift
    if [ ! -x .venv/bin/python ]; then
        echo "scripts/test.sh --fast: no .venv yet; run bash scripts/test.sh once" >&2
        exit 2
    fi
    echo "=== test.sh --fast: ruff check, ruff format --check, mypy, pytest -m '$UNIT and not load'"
    .venv/bin/python -m ruff check .
    .venv/bin/python -m ruff format --check .
    .venv/bin/python -m mypy
    exec .venv/bin/python -m pytest -q -p no:cacheprovider -m "$UNIT and not load" "$@"
fi

bash scripts/install-test-deps.sh
export PATH="$PWD/.venv/bin:$PATH"
base=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')

echo "=== test.sh stage 1: ruff check, ruff format --check, mypy, the whole suite with $base and its libraries (.venv)"
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
.venv/bin/python -m mypy
main=0
.venv/bin/python -m pytest "$@" || main=$?

echo "=== test.sh stage 2: '$LATEST_LIBS' with $base and the newest libraries from PyPI (.venv-pypi)"
if [ ! -x .venv-pypi/bin/python ] || ! grep -qx "home = $(dirname "$base")" .venv-pypi/pyvenv.cfg; then
    rm -rf .venv-pypi
    "$base" -m venv .venv-pypi
fi
.venv-pypi/bin/python -m pip install -q --disable-pip-version-check --upgrade \
    --upgrade-strategy eager -e ".[test]"
latest=0
PATH="$PWD/.venv-pypi/bin:${PATH#"$PWD/.venv/bin:"}" \
    .venv-pypi/bin/python -m pytest -q -p no:cacheprovider -m "$LATEST_LIBS" || latest=$?
.venv-pypi/bin/python -m pip list --disable-pip-version-check 2>/dev/null \
    | grep -iE '^(prometheus.client|pyyaml|requests|bcrypt) ' | tr -s ' ' | paste -sd, \
    | sed 's/^/=== test.sh stage 2 ran on: /'

if ((main)); then exit "$main"; fi
exit "$latest"
