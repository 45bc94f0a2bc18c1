#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: lint, the import contracts of the
# architecture, then pytest with a real napari viewer under Xvfb. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] ruff"
.venv/bin/ruff check src tests benchmarks scripts
echo "[test] import contracts (docs/architecture.md)"
.venv/bin/lint-imports
echo "[test] pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "[test] pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
