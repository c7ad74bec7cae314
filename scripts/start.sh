#!/usr/bin/env bash
# Set up (if needed) and run greenwindow on its embedded defaults: SQLite under ./.greenwindow,
# the bundled carbon-intensity trace, no network and no API keys needed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export GREENWINDOW_ADMIN_TOKEN="${GREENWINDOW_ADMIN_TOKEN:-change-me-admin-token}"
exec .venv/bin/greenwindow serve "$@"
