"""Server-side text-to-speech with espeak-ng (when installed), so anyone can try the avatar at once."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np

from engine.audio.base import SAMPLE_RATE
from engine.audio.resample import resample
from engine.errors import InputError, KeyFaceError

TIMEOUT_SECONDS = 30.0


class TTSUnavailable(KeyFaceError):
    """espeak-ng is not installed (HTTP 503)."""


def espeak_binary() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


def synthesize(text: str, voice: str = "en", speed: int = 165) -> np.ndarray:
    """16 kHz mono float32 speech of ``text``."""
    binary = espeak_binary()
    if binary is None:
        raise TTSUnavailable("text-to-speech needs espeak-ng on the server (apt-get install espeak-ng)")
    if not text.strip():
        raise InputError("nothing to say: the text is empty")
    if not voice.replace("-", "").replace("+", "").isalnum():
        raise InputError(f"unknown voice {voice!r}")
    if not 80 <= speed <= 450:
        raise InputError(f"speed must be within [80, 450] words per minute, got {speed}")
    try:
        done = subprocess.run(
            [binary, "--stdout", "-v", voice, "-s", str(speed), "--", text],
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InputError("text-to-speech took too long; send a shorter text") from None
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise InputError(f"text-to-speech failed: {message}")
    return read_wav(done.stdout)


def read_wav(data: bytes) -> np.ndarray:
    """A 16-bit PCM WAV file → 16 kHz mono float32 (espeak-ng's streaming header, with unknown
    sizes, is read to the end of the data)."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise InputError(f"not a PCM WAV file ({exc})") from None
    if width != 2:
        raise InputError(f"{8 * width}-bit WAV audio; expected 16-bit PCM")
    pcm = np.frombuffer(raw[: len(raw) // (2 * channels) * 2 * channels], dtype="<i2")
    mono = pcm.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768.0
    return resample(mono, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else mono


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono WAV file of float samples."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()
