#!/usr/bin/env bash
# The newcomer's first run: set up the environment, then run the whole loop locally.
# Options are passed on to `greenwindow demo` (e.g. --speedup 1800, --exit-when-done).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh && exec .venv/bin/greenwindow demo "$@"
