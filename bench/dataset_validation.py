"""How much work validating a dataset zip takes: decodes and seconds, per zip shape.

    .venv/bin/python bench/dataset_validation.py [--lines 8000] [--wav-seconds 30]

Builds zips in a temporary directory (one wav named by every line; as many distinct wavs
as lines) and prints, for each, its size, the structure check's time (on the request
path), the audio measurement's time (in the background task) and how many clips it
decoded.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import soundfile

from scheduler.datasets import validation


def silent_wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(
        buffer,
        np.zeros(int(16_000 * seconds), dtype=np.int16),
        16_000,
        format="WAV",
        subtype="PCM_16",
    )
    return buffer.getvalue()


def build(path: Path, lines: int, distinct: int, wav_seconds: float) -> Path:
    clip = silent_wav(wav_seconds)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i in range(distinct):
            archive.writestr(f"wavs/c{i}.wav", clip)
        archive.writestr(
            "voice.list",
            "".join(f"c{i % distinct}.wav|spk|en|hello\n" for i in range(lines)),
        )
    return path


def measure(path: Path) -> tuple[float, float, int]:
    decodes = 0
    real_probe = validation.probe_audio

    def counting(data: bytes) -> tuple[int, int]:
        nonlocal decodes
        decodes += 1
        return real_probe(data)

    validation.probe_audio = counting  # type: ignore[assignment]
    try:
        limits = validation.Limits(max_audio_seconds=1e12)
        started = time.perf_counter()
        structure = validation.check_structure(path, limits)
        checked = time.perf_counter()
        validation.measure_audio(path, structure, limits)
        done = time.perf_counter()
    finally:
        validation.probe_audio = real_probe  # type: ignore[assignment]
    return checked - started, done - checked, decodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=8_000)
    parser.add_argument("--wav-seconds", type=float, default=30.0)
    parser.add_argument(
        "--distinct",
        type=int,
        default=200,
        help="distinct wavs in the second zip (bounded by its size)",
    )
    args = parser.parse_args()
    print(f"{'zip':<28} {'size':>10} {'structure s':>12} {'audio s':>9} {'decodes':>8}")
    with tempfile.TemporaryDirectory() as work:
        for label, distinct in (("one wav, every line", 1), ("distinct wavs", args.distinct)):
            path = build(Path(work) / f"{distinct}.zip", args.lines, distinct, args.wav_seconds)
            structure_s, audio_s, decodes = measure(path)
            print(
                f"{label:<28} {path.stat().st_size:>10} {structure_s:>12.3f} "
                f"{audio_s:>9.3f} {decodes:>8}"
            )


if __name__ == "__main__":
    main()
