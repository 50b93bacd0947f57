#!/usr/bin/env bash
# Set the machine up (scripts/setup.sh) and run the test suite; arguments go to pytest.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
bash scripts/setup.sh
rc=0
.venv/bin/python -m pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test: ERROR: pytest collected no tests (exit 5) - the suite must not be empty" >&2
fi
exit "$rc"
