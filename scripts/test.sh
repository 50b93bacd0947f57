#!/usr/bin/env bash
# Set the machine up (scripts/setup.sh), lint (ruff), type-check (mypy) and run the test suite; arguments go to pytest.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
bash scripts/setup.sh
# lint first: a finding fails the run before the (long) test suite starts
if ! .venv/bin/ruff check omview tests bench; then
    echo "test: ERROR: ruff found problems (above); fix them or run: .venv/bin/ruff check --fix omview tests bench" >&2
    exit 1
fi
# types: omview/ is fully annotated ([tool.mypy] in pyproject.toml); keep it so
if ! .venv/bin/mypy; then
    echo "test: ERROR: mypy found type errors (above); fix them before the suite runs" >&2
    exit 1
fi
rc=0
.venv/bin/python -m pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test: ERROR: pytest collected no tests (exit 5) - the suite must not be empty" >&2
fi
exit "$rc"
