"""Client audio in: decode raw PCM, downmix to mono and resample to 16 kHz, incrementally.

Two kinds of input framing are supported:

* **message mode** (default, e.g. one websocket message per chunk): every message must hold a whole
  number of sample frames (``bytes_per_sample * channels`` bytes). Anything else is an
  :class:`~engine.errors.InputError` — a message-oriented client never splits a sample.
* **byte-stream mode** (``byte_stream=True``, e.g. a raw TCP/pipe stream): chunk boundaries are
  arbitrary; a trailing partial sample frame is carried over and completed by the next chunk.

A rejected chunk leaves the ingest exactly as if it had never been sent: everything is validated
before any state (carried bytes, resampler) changes. Resampling uses libsoxr's band-limited
streaming resampler, so a chunked stream yields the same samples as a one-shot conversion.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from typing import Final

import numpy as np
import soxr

from engine.audio.base import SAMPLE_RATE
from engine.errors import InputError

log = logging.getLogger(__name__)

SUPPORTED_RATES: Final = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
ENCODINGS: Final = ("pcm16", "f32")
_ALIASES: Final = {"s16le": "pcm16", "int16": "pcm16", "pcm_s16le": "pcm16", "f32le": "f32", "float32": "f32"}
_DTYPES: Final = {"pcm16": np.dtype("<i2"), "f32": np.dtype("<f4")}
MAX_CHANNELS: Final = 2


@dataclass(frozen=True)
class AudioFormat:
    """Wire format of client audio: sample encoding, rate in Hz and interleaved channel count.

    ``encoding`` is ``"pcm16"`` (signed 16-bit little-endian) or ``"f32"`` (IEEE float32
    little-endian, nominally in [-1, 1]); the aliases ``s16le``, ``int16``, ``f32le`` and
    ``float32`` are accepted and normalised. Invalid values raise :class:`InputError`.
    """

    encoding: str = "pcm16"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1

    def __post_init__(self) -> None:
        enc = self.encoding.lower() if isinstance(self.encoding, str) else self.encoding
        enc = _ALIASES.get(enc, enc)
        if enc not in ENCODINGS:
            raise InputError(f"unknown audio encoding {self.encoding!r}; supported: {', '.join(ENCODINGS)}")
        object.__setattr__(self, "encoding", enc)
        object.__setattr__(self, "sample_rate", _check_rate(self.sample_rate))
        object.__setattr__(self, "channels", _check_channels(self.channels))

    @property
    def bytes_per_sample(self) -> int:
        """Bytes of one sample of one channel."""
        return _DTYPES[self.encoding].itemsize

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample frame (one sample for every channel)."""
        return self.bytes_per_sample * self.channels

    def describe(self) -> str:
        """Short human-readable form, e.g. ``pcm16 stereo 44100 Hz``."""
        layout = "mono" if self.channels == 1 else "stereo"
        return f"{self.encoding} {layout} {self.sample_rate} Hz"


def _check_rate(rate: object) -> int:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise InputError(f"sample rate must be a whole number of Hz, got {rate!r}")
    if not math.isfinite(float(rate)) or float(rate) != int(rate):
        raise InputError(f"sample rate must be a whole number of Hz, got {rate!r}")
    value = int(rate)
    if value not in SUPPORTED_RATES:
        raise InputError(
            f"unsupported sample rate {value} Hz; supported: {', '.join(map(str, SUPPORTED_RATES))}"
        )
    return value


def _check_channels(channels: object) -> int:
    if isinstance(channels, bool) or not isinstance(channels, numbers.Integral):
        raise InputError(f"channel count must be an integer, got {channels!r}")
    if not 1 <= int(channels) <= MAX_CHANNELS:
        raise InputError(f"unsupported channel count {channels}; supported: 1 (mono) or 2 (stereo)")
    return int(channels)


class AudioIngest:
    """Stateful converter from client audio chunks to 16 kHz mono float32.

    Each ``push_*`` returns the 16 kHz samples that became available (possibly none: libsoxr HQ
    holds back about 20 ms on average from 22.05-48 kHz and about 60 ms from 8 kHz, in blocks; 16 kHz
    input passes straight through); :meth:`flush` drains the rest at the end of an utterance and
    readies the ingest for the next one. ``samples_out`` counts 16 kHz samples returned so far,
    i.e. the position on the 16 kHz timeline.
    """

    def __init__(
        self,
        fmt: AudioFormat,
        *,
        byte_stream: bool = False,
        quality: str = "HQ",
        max_abs: float = 16.0,
    ) -> None:
        """``max_abs`` bounds float input magnitude (catches int16 data mislabelled as ``f32``)."""
        if not isinstance(fmt, AudioFormat):
            raise TypeError(f"fmt must be an AudioFormat, got {type(fmt).__name__}")
        self.format = fmt
        self.byte_stream = byte_stream
        self.max_abs = float(max_abs)
        self._resampler = (
            None
            if fmt.sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(fmt.sample_rate, SAMPLE_RATE, 1, dtype="float32", quality=quality)
        )
        self._carry = b""
        self.samples_in = 0
        """Sample frames accepted at the input rate since the last reset."""
        self.samples_out = 0
        """16 kHz samples returned since the last reset."""
        self.dropped_bytes = 0
        """Bytes of incomplete sample frames discarded by :meth:`flush` (byte-stream mode only)."""

    @property
    def pending_bytes(self) -> int:
        """Bytes of a partial sample frame carried to the next chunk (byte-stream mode)."""
        return len(self._carry)

    def push(self, data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
        """Dispatch to :meth:`push_bytes` or :meth:`push_array` by type."""
        if isinstance(data, np.ndarray):
            return self.push_array(data)
        return self.push_bytes(data)

    def push_bytes(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        """Accept one chunk of raw interleaved samples in ``self.format``; return new 16 kHz audio."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InputError(f"audio chunk must be bytes, got {type(data).__name__}")
        raw = bytes(data)
        fb = self.format.frame_bytes
        if self.byte_stream:
            raw = self._carry + raw
            whole = len(raw) - len(raw) % fb
            raw, carry = raw[:whole], raw[whole:]
        elif len(raw) % fb:
            raise InputError(
                f"audio message of {len(raw)} bytes is not a whole number of sample frames "
                f"({fb} bytes each for {self.format.describe()})"
            )
        else:
            carry = b""
        samples = np.frombuffer(raw, dtype=_DTYPES[self.format.encoding]).reshape(-1, self.format.channels)
        mono = self._to_mono_float(samples)  # validates; raises before any state change
        self._carry = carry
        return self._resample(mono)

    def push_array(self, samples: np.ndarray) -> np.ndarray:
        """Accept decoded samples at ``self.format``'s rate: int16 or float, shape (n,) for mono or
        (n, channels) interleaved-frame order. Returns new 16 kHz audio."""
        if not isinstance(samples, np.ndarray):
            raise InputError(f"audio array must be a numpy array, got {type(samples).__name__}")
        if self._carry:
            raise InputError(
                f"cannot push an array while {len(self._carry)} bytes of a partial sample frame are pending"
            )
        ch = self.format.channels
        if samples.ndim == 1 and ch == 1:
            samples = samples[:, None]
        if samples.ndim != 2 or samples.shape[1] != ch:
            expected = "(n,) or (n, 1)" if ch == 1 else f"(n, {ch})"
            raise InputError(
                f"audio array of shape {samples.shape} does not match {self.format.describe()}: "
                f"expected shape {expected}"
            )
        if samples.dtype != np.int16 and not np.issubdtype(samples.dtype, np.floating):
            raise InputError(f"unsupported audio array dtype {samples.dtype}; use int16 or float32")
        return self._resample(self._to_mono_float(samples))

    def flush(self) -> np.ndarray:
        """End of utterance: return the resampler's remaining output and restart the resampler.

        The sample counters keep running, so the 16 kHz timeline stays continuous across utterances.

        A partial sample frame still pending in byte-stream mode cannot be decoded; it is dropped
        (counted in ``dropped_bytes``) with a warning.
        """
        if self._carry:
            log.warning("dropping %d bytes of an incomplete sample frame at end of stream", len(self._carry))
            self.dropped_bytes += len(self._carry)
            self._carry = b""
        if self._resampler is None:
            out = np.zeros(0, np.float32)
        else:
            out = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            self._resampler.clear()
        self.samples_out += len(out)
        return np.ascontiguousarray(out, dtype=np.float32)

    def reset(self) -> None:
        """Discard all pending audio and start a fresh stream."""
        self._carry = b""
        if self._resampler is not None:
            self._resampler.clear()
        self.samples_in = self.samples_out = 0

    def _to_mono_float(self, samples: np.ndarray) -> np.ndarray:
        """(n, channels) int16/float -> (n,) float32, rejecting NaN/Inf and absurd magnitudes."""
        if samples.dtype == np.int16:
            x = samples.astype(np.float32) * np.float32(1.0 / 32768.0)
        else:
            x = samples.astype(np.float32)
            if not np.isfinite(x).all():
                bad = int(np.count_nonzero(~np.isfinite(x)))
                raise InputError(f"audio contains {bad} NaN or infinite sample(s); chunk rejected")
            peak = float(np.abs(x).max()) if x.size else 0.0
            if peak > self.max_abs:
                raise InputError(
                    f"float audio reaches {peak:g}, expected samples in [-1, 1]; "
                    "is this 16-bit PCM sent as f32?"
                )
        if x.shape[1] == 1:
            return np.ascontiguousarray(x[:, 0])
        return x.mean(axis=1, dtype=np.float32)

    def _resample(self, mono: np.ndarray) -> np.ndarray:
        self.samples_in += len(mono)
        out = mono if self._resampler is None else self._resampler.resample_chunk(mono)
        self.samples_out += len(out)
        return np.ascontiguousarray(out, dtype=np.float32)
