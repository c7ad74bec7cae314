"""A short-lived memory of credentials the request gate found valid.

The gate (request_gate.py) checks a POST's bearer token before it reads the body, so an
unknown caller cannot make the service buffer uploads. That check cost a transaction and a
SELECT on every write call, in addition to the route's own authentication.

Only positive answers are remembered, for at most `TTL_SECONDS`, keyed by the token's
SHA-256 (never the token). That is safe because the gate is not what authorises: it only
decides whether to read a body. A key revoked, or a worker re-registered, within the window
still gets past the gate, and is then refused at once by the route's own check against the
database, which is never cached (team keys: `deps.principal_from_request`; workers: the
fenced UPDATE of `workers/token_auth.py`). Every replica keeps its own memory; none can
make another accept a credential the database refuses.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

TTL_SECONDS = 30.0
MAX_ENTRIES = 10_000


class KnownCredentials:
    """Digests of recently validated tokens, oldest first, bounded in count and age."""

    def __init__(self, ttl_seconds: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def recently_valid(self, token: str, *, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        digest = self._digest(token)
        with self._lock:
            seen_at = self._seen.get(digest)
            if seen_at is None:
                return False
            if now - seen_at > self.ttl_seconds:
                del self._seen[digest]
                return False
            return True

    def remember(self, token: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        digest = self._digest(token)
        with self._lock:
            self._seen.pop(digest, None)
            self._seen[digest] = now
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
