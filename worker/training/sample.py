"""A small speech dataset for trying the whole loop: espeak-ng speech, or a labelled synthetic one.

With the `espeak-ng` binary installed, the clips are real (if robotic) synthesised
speech: English sentences, plus a few Mandarin ones when its Mandarin voice
reads Han characters itself rather than spelling them out. Without it, the
clips are formant-synthesised syllables ("bado kimu ...") with pitch contours,
every speaker field says `synthetic`, and the dataset's README.txt says so too.
Either way the result is a directory with `sample.list` and `wavs/`, 20-60 s of
audio for the default 12 clips, ready for `prepare_dataset` or for upload.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from worker.training.data.annotations import AUDIO_SUFFIXES
from worker.training.data.audio import TRAIN_SAMPLE_RATE, load_mono, write_pcm16

Engine = Literal["auto", "espeak", "synthetic"]
LIST_NAME = "sample.list"

ENGLISH_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Wind and sunshine make the cleanest power of the day.",
    "Please schedule this training job for tonight.",
    "A small voice model can learn from a few minutes of speech.",
    "The grid is greener after midnight in many places.",
    "We measured the energy of every graphics card.",
    "Her budget for this month is almost spent.",
    "Good morning, the forecast looks bright and windy.",
    "Every job says why it waits before it runs.",
    "Save a checkpoint, then pause until the carbon drops.",
    "Thank you for listening to this short sample.",
    "Seven workers share one queue without any conflicts.",
    "Cloudy skies over the valley brought a gentle rain.",
    "Numbers like forty two are read as words.",
)
MANDARIN_SENTENCES = (
    "今天的天气很好，我们去公园散步。",
    "这个模型在晚上训练，用的是清洁能源。",
    "谢谢你听这段简短的录音。",
)
# Used to test whether the Mandarin voice reads Han characters (it switches to
# English, marked "(en)" in its phoneme output, when its dictionary lacks them).
_MANDARIN_PROBE = "你好世界，今天天气很好。"

# Formants (F1, F2, F3 in Hz) of five vowels, adult male averages.
_VOWELS = {
    "a": (730, 1090, 2440),
    "i": (270, 2290, 3010),
    "u": (300, 870, 2240),
    "e": (530, 1840, 2480),
    "o": (570, 840, 2410),
}
_CONSONANTS = ("b", "d", "g", "m", "n", "l", "s", "f", "k", "")
_README = """This is a SYNTHETIC sample dataset, not recorded or synthesised speech.

espeak-ng was not available when it was written, so every clip is a sequence of
formant-synthesised consonant-vowel syllables with a pitch contour, and the text
of each line spells those syllables. Every speaker field is `synthetic`. It is
meant for exercising the pipeline (upload, preparation, a tiny training run),
not for judging voice quality. Install espeak-ng and write it again for speech.
"""


def espeak_binary() -> str | None:
    """Path of espeak-ng, or None."""
    return shutil.which("espeak-ng")


def _espeak(binary: str, voice: str, text: str, target: Path, speed: int) -> None:
    command = [binary, "-v", voice, "-s", str(speed), "-w", str(target), text]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def mandarin_voice_works(binary: str) -> bool:
    """Whether espeak-ng's `cmn` voice reads Han characters without falling back to English."""
    try:
        result = subprocess.run(
            [binary, "-q", "-v", "cmn", "-x", _MANDARIN_PROBE],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (subprocess.SubprocessError, OSError):
        return False
    return bool(result.stdout.strip()) and "(en)" not in result.stdout


def _espeak_lines(
    binary: str, wav_dir: Path, n_utterances: int, rng: np.random.Generator
) -> list[str]:
    prompts = [("en-us", "en", s) for s in ENGLISH_SENTENCES]
    if mandarin_voice_works(binary):
        # Interleave a few Mandarin lines so even short datasets get one.
        for offset, sentence in enumerate(MANDARIN_SENTENCES):
            prompts.insert(3 + 4 * offset, ("cmn", "zh", sentence))
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(n_utterances):
            voice, language, text = prompts[index % len(prompts)]
            raw = Path(tmp) / f"{index}.wav"
            _espeak(binary, voice, text, raw, speed=int(rng.integers(150, 176)))
            audio = load_mono(raw, TRAIN_SAMPLE_RATE)
            audio = 0.8 * audio / max(float(np.max(np.abs(audio))), 1e-6)
            name = f"sample_{index:03d}.wav"
            write_pcm16(wav_dir / name, audio)
            lines.append(f"wavs/{name}|espeak-{voice}|{language}|{text}")
    return lines


def _resonator(signal: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    # Two-pole resonance with unity gain at DC, the classic formant filter.
    radius = np.exp(-np.pi * bandwidth / TRAIN_SAMPLE_RATE)
    theta = 2 * np.pi * freq / TRAIN_SAMPLE_RATE
    a1, a2 = -2 * radius * np.cos(theta), radius * radius
    return lfilter([1 + a1 + a2], [1, a1, a2], signal)


def _voiced(duration: float, f0: np.ndarray, formants: tuple[int, ...]) -> np.ndarray:
    phase = np.cumsum(f0 / TRAIN_SAMPLE_RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    source = lfilter([1.0], [1.0, -0.97], pulses)  # glottal roll-off
    out = source
    for freq, bandwidth in zip(formants, (80, 100, 140), strict=True):
        out = _resonator(out, freq, bandwidth)
    return out[: int(duration * TRAIN_SAMPLE_RATE)]


def _fade(segment: np.ndarray, seconds: float = 0.008) -> np.ndarray:
    ramp = min(int(seconds * TRAIN_SAMPLE_RATE), segment.shape[0] // 2)
    if ramp:
        window = np.linspace(0.0, 1.0, ramp)
        segment[:ramp] *= window
        segment[-ramp:] *= window[::-1]
    return segment


def _syllable(consonant: str, vowel: str, f0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rate = TRAIN_SAMPLE_RATE
    pieces: list[np.ndarray] = []
    if consonant in ("s", "f"):
        noise = rng.standard_normal(int(0.09 * rate))
        centre = 5500 if consonant == "s" else 3500
        pieces.append(_fade(0.4 * _resonator(noise, centre, 1500) / 6))
    elif consonant in ("b", "d", "g", "k"):
        pieces.append(np.zeros(int(0.04 * rate)))
        burst = rng.standard_normal(int(0.012 * rate))
        centre = {"b": 800, "d": 3000, "g": 1800, "k": 2200}[consonant]
        pieces.append(_fade(0.5 * _resonator(burst, centre, 900) / 6, 0.002))
    elif consonant in ("m", "n", "l"):
        formants = {"m": (250, 1100, 2300), "n": (250, 1600, 2500), "l": (360, 1300, 2700)}
        n = int(0.07 * rate)
        pieces.append(_fade(0.5 * _voiced(0.07, f0[:n], formants[consonant])))
    used = sum(p.shape[0] for p in pieces)
    vowel_seconds = float(rng.uniform(0.14, 0.22))
    n_vowel = int(vowel_seconds * rate)
    contour = f0[used : used + n_vowel]
    if contour.shape[0] < n_vowel:
        contour = np.pad(contour, (0, n_vowel - contour.shape[0]), mode="edge")
    pieces.append(_fade(_voiced(vowel_seconds, contour, _VOWELS[vowel])))
    return np.concatenate(pieces)


def synthetic_utterance(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """One formant-synthesised utterance and the text spelling its syllables."""
    n_words = int(rng.integers(3, 7))
    words = [
        [
            (str(rng.choice(_CONSONANTS)), str(rng.choice(list(_VOWELS))))
            for _ in range(int(rng.integers(2, 4)))
        ]
        for _ in range(n_words)
    ]
    base = float(rng.uniform(95, 150))
    rate = TRAIN_SAMPLE_RATE
    n = int(0.35 * rate)
    audio: list[np.ndarray] = [np.zeros(int(0.15 * rate))]
    for word_index, word in enumerate(words):
        # Declining pitch over the phrase, with a small rise at each word's start.
        level = base * (1.0 - 0.25 * word_index / n_words)
        for syllable_index, (consonant, vowel) in enumerate(word):
            rise = 1.0 + (0.08 if syllable_index == 0 else 0.0) * np.linspace(1, 0, n)
            f0 = level * rise * (1.0 + 0.01 * rng.standard_normal())
            audio.append(_syllable(consonant, vowel, f0, rng))
        audio.append(np.zeros(int(rng.uniform(0.06, 0.14) * rate)))
    audio.append(np.zeros(int(0.15 * rate)))
    signal = np.concatenate(audio)
    signal = 0.7 * signal / max(float(np.max(np.abs(signal))), 1e-9)
    text = " ".join("".join(c + v for c, v in word) for word in words)
    return text.capitalize() + ".", signal.astype(np.float32)


def _synthetic_lines(wav_dir: Path, n_utterances: int, rng: np.random.Generator) -> list[str]:
    lines: list[str] = []
    for index in range(n_utterances):
        text, audio = synthetic_utterance(rng)
        name = f"synthetic_{index:03d}.wav"
        write_pcm16(wav_dir / name, audio)
        lines.append(f"wavs/{name}|synthetic|en|{text}")
    return lines


def write_sample_dataset(
    out_dir: Path, *, n_utterances: int = 12, seed: int = 0, engine: Engine = "auto"
) -> Path:
    """Write a small dataset (`sample.list` + `wavs/`) into `out_dir`; returns the list path."""
    if n_utterances < 1:
        raise ValueError("n_utterances must be at least 1")
    binary = espeak_binary()
    if engine == "espeak" and binary is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    rng = np.random.default_rng(seed)
    wav_dir = out_dir / "wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    if binary is not None and engine != "synthetic":
        lines = _espeak_lines(binary, wav_dir, n_utterances, rng)
        # A README left by an earlier synthetic run would mislabel this speech.
        (out_dir / "README.txt").unlink(missing_ok=True)
    else:
        lines = _synthetic_lines(wav_dir, n_utterances, rng)
        (out_dir / "README.txt").write_text(_README, encoding="utf-8")
    list_path = out_dir / LIST_NAME
    list_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return list_path


def zip_dataset(dataset_dir: Path, zip_path: Path) -> Path:
    """Zip a dataset directory for upload: its `.list` and audio files only (the service
    refuses any other member, e.g. a synthetic sample's README.txt), paths relative to it,
    in a stable order."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    resolved_zip = zip_path.resolve()
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(dataset_dir.rglob("*")):
            name = path.name.lower()
            if not path.is_file() or path.resolve() == resolved_zip:
                continue
            if name.endswith(".list") or name.endswith(AUDIO_SUFFIXES):
                archive.write(path, path.relative_to(dataset_dir).as_posix())
    return zip_path


def audio_seconds(list_path: Path) -> float:
    """Total seconds of the clips named in a sample list."""
    total = 0.0
    for line in list_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            info = sf.info(str(list_path.parent / line.split("|", 1)[0]))
            total += info.frames / info.samplerate
    return total
