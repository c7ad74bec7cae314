#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, then pytest on SQLite and PostgreSQL.
# PostgreSQL tests use GREENWINDOW_TEST_POSTGRES_URL (default: the local server).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export GREENWINDOW_TEST_POSTGRES_URL="${GREENWINDOW_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Type check (configured in pyproject.toml; incremental, cached in .mypy_cache).
.venv/bin/mypy
# Tests that restart the shared PostgreSQL server run alone afterwards, so they cannot break
# the database tests running beside them. (Exit status 5 = the selection had none of them.)
.venv/bin/python -m pytest -n 2 --dist loadfile -m "not disruptive" "$@"
.venv/bin/python -m pytest -m disruptive "$@" || [ $? -eq 5 ]
