"""Helpers shared by the tests (imported as `support.helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.serving import serve_in_thread  # noqa: F401  (the tests import it from here)

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
WORKER_TOKEN = "test-worker-token-0123456789abcdef"


class FakeClock:
    """A settable clock, injected into the app instead of the wall clock."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def burn_in_job(**overrides: object) -> dict[str, object]:
    """A small valid job body (the burn-in kind needs no dataset)."""
    body: dict[str, object] = {
        "name": "burn-in",
        "kind": "burn-in",
        "config": {"steps": 50},
        "max_delay_minutes": 600,
    }
    body.update(overrides)
    return body


def tiny_dataset_zip(utterances: int = 2, seconds: float = 1.0) -> bytes:
    """A small valid GPT-SoVITS dataset zip: sine-tone wavs and their annotation list."""
    import io
    import zipfile

    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    lines = []
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(utterances):
            t = np.arange(int(32_000 * seconds)) / 32_000
            wav = io.BytesIO()
            soundfile.write(wav, 0.3 * np.sin(2 * np.pi * (180 + 20 * i) * t), 32_000, format="WAV")
            archive.writestr(f"wavs/u{i}.wav", wav.getvalue())
            lines.append(f"/home/someone/data/u{i}.wav|spk|en|hello number {i}")
        archive.writestr("voice.list", "\n".join(lines) + "\n")
    return buffer.getvalue()
