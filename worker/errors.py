"""What a team may see of a worker-side failure.

A job's error goes back to the team that submitted it; the worker's paths, its user and the
code's stack frames stay in the worker's log.
"""

from __future__ import annotations

import re

_ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[^\s'\"/:,;()]+/)+([^\s'\"/:,;()]*)")
PUBLIC_ERROR_CHARS = 500


def public_error(error: str) -> str:
    """What a team may see of a failure: one line, no traceback, no paths of this host."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return "the job failed"
    # A traceback ends with "ExceptionType: message"; anything else is already a message.
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    line = _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "<path>", line)
    if len(line) > PUBLIC_ERROR_CHARS:
        line = line[: PUBLIC_ERROR_CHARS - 3] + "..."
    return line
