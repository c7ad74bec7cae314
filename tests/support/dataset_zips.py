"""Builders of dataset zips for upload tests: good ones and each kind of bad one."""

from __future__ import annotations

import io
import stat
import zipfile

import numpy as np
import soundfile

RATE = 32_000


def wav_bytes(seconds: float = 0.5, tone_hz: float = 220.0) -> bytes:
    """A short mono sine tone as WAV."""
    t = np.arange(int(RATE * seconds)) / RATE
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.3 * np.sin(2 * np.pi * tone_hz * t), RATE, format="WAV")
    return buffer.getvalue()


def build_zip(
    members: dict[str, bytes], *, symlinks: dict[str, str] | None = None, compress: bool = False
) -> bytes:
    """A zip holding `members` (name -> bytes) and optional symbolic links (name -> target)."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def good_members(count: int = 3, seconds: float = 0.5) -> dict[str, bytes]:
    """Wavs under wavs/ and a list whose paths come from another machine (Windows paths)."""
    members = {f"wavs/clip{i}.wav": wav_bytes(seconds, 200 + 30 * i) for i in range(count)}
    lines = [f"D:\\voices\\raw\\clip{i}.wav|alice|en|Hello there number {i}." for i in range(count)]
    members["alice.list"] = ("\n".join(lines) + "\n").encode()
    return members
