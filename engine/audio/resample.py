"""Offline audio: band-limited resampling (libsoxr) and file loading (PyAV) to 16 kHz mono."""

from __future__ import annotations

import math
import os
from pathlib import Path

import av
import numpy as np
import soxr

from engine.audio.base import SAMPLE_RATE
from engine.errors import InputError

MAX_RATE = 768_000


def _check_rate(rate: object, what: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
        raise InputError(f"{what} sample rate must be a positive whole number of Hz, got {rate!r}")
    if rate != int(rate) or not 1 <= int(rate) <= MAX_RATE:
        raise InputError(f"{what} sample rate {rate!r} Hz is out of range (1..{MAX_RATE})")
    return int(rate)


def resample(wave: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE, quality: str = "HQ") -> np.ndarray:
    """Resample ``wave`` (shape (n,) or (n, channels)) from ``sr_in`` to ``sr_out`` Hz; float32 out.

    One-shot libsoxr conversion; gives the same samples as the streaming path in
    :class:`engine.audio.ingest.AudioIngest` fed the same audio.
    """
    sr_in, sr_out = _check_rate(sr_in, "input"), _check_rate(sr_out, "output")
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise InputError(f"audio must have shape (n,) or (n, channels), got {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("audio contains NaN or infinite samples")
    if sr_in == sr_out or x.shape[0] == 0:
        return np.ascontiguousarray(x)
    return np.ascontiguousarray(soxr.resample(x, sr_in, sr_out, quality=quality), dtype=np.float32)


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of any file FFmpeg reads (WAV, MP3, FLAC, M4A, video...).

    Channels are averaged to mono and the result resampled with libsoxr to ``sample_rate``;
    returns float32 of shape (n,). Missing, unreadable, audio-less or empty files raise
    :class:`InputError`.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"audio file not found: {p}")
    if not p.is_file():
        raise InputError(f"not a regular file: {p}")
    try:
        with av.open(str(p), mode="r") as container:
            if not container.streams.audio:
                raise InputError(f"no audio stream in {p}")
            stream = container.streams.audio[0]
            # Convert to planar float at the native rate; we downmix and resample ourselves.
            converter = av.AudioResampler(format="fltp")
            chunks: list[np.ndarray] = []
            rate = int(stream.sample_rate or 0)
            for frame in container.decode(stream):
                for out in converter.resample(frame):
                    rate = out.sample_rate
                    chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
            for out in converter.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0, dtype=np.float32))
    except InputError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InputError(f"could not decode audio from {p}: {exc}") from exc
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise InputError(f"{p} contains no audio samples")
    wave = np.concatenate(chunks)
    return resample(wave, rate, sample_rate)
