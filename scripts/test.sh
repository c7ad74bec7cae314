#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, then pytest on SQLite and PostgreSQL.
# PostgreSQL tests use GREENWINDOW_TEST_POSTGRES_URL (default: the local server).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export GREENWINDOW_TEST_POSTGRES_URL="${GREENWINDOW_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
.venv/bin/ruff check .
.venv/bin/python -m pytest -n 2 --dist loadfile "$@"
