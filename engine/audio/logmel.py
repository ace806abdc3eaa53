"""Log-mel features for the demo avatar model, behind the same :class:`AudioEncoder` interface.

Each 640-sample video frame gives two vectors, one per 320-sample half-frame (hop 320 = 20 ms).
The analysis window (``win_length`` samples, Hann, zero-padded to ``n_fft``) is centred on the
middle of its half-frame, so vector ``k`` reads samples ``[320k - L, 320k + 320 + L)`` with
``L = (win_length - 320) / 2`` (40 samples for the default 400-sample window): the signal is
zero-padded by ``L`` at the start and up to the last frame's end plus ``L``. A frame is therefore
final ``L`` samples (2.5 ms by default) after its last sample arrives; :class:`LogMelStream`
emits it then, with output bit-identical to :meth:`LogMelEncoder.encode`.

Features are ``(log10(max(mel_power, 1e-10)) + 4) / 4`` over a Slaney-style mel filterbank
(area-normalised triangles, the librosa/Whisper convention), fixed scaling only — no
utterance-level statistics, so streaming and offline agree.

Context (``context=c``, default 0): each half-frame vector is the concatenation of the vectors
of the same half of frames ``f-c … f+c`` (``n_mels·(2c+1)`` values), frames outside the audio
reading as digital silence (:data:`SILENCE`). Like the hidden states of WavLM, a frame then
"hears" its neighbours, which the mouth shape depends on (coarticulation); a frame becomes final
``c`` frames (40 ms each) later.

Exactness: every frame goes through the same function on a tensor of the same shape, in both
paths; batching frames differently would let BLAS and vectorised kernels round differently.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.audio.base import SAMPLE_RATE, SAMPLES_PER_FRAME, VECTORS_PER_FRAME

HOP = SAMPLES_PER_FRAME // VECTORS_PER_FRAME  # 320
SILENCE = -1.5
"""The feature value of digital silence: ``(log10(1e-10) + 4) / 4``."""


def stack_context(base: torch.Tensor, context: int) -> torch.Tensor:
    """(F, 2, n) per-frame vectors -> (F, 2, n·(2c+1)): each frame with its ``c`` neighbours on
    each side (silence outside ``[0, F)``), nearest-to-farthest order ``f-c … f+c``."""
    if context == 0:
        return base
    pad = base.new_full((context, *base.shape[1:]), SILENCE)
    return _stack_windows(torch.cat([pad, base, pad]), base.shape[0], context)


def _stack_windows(ext: torch.Tensor, count: int, context: int) -> torch.Tensor:
    """Frames ``0 … count-1`` of ``ext`` (already extended by ``context`` on the left) with their context."""
    return torch.cat([ext[j : j + count] for j in range(2 * context + 1)], dim=-1)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = 3.0 * hz / 200.0
    log_part = hz >= 1000.0
    return np.where(log_part, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / (math.log(6.4) / 27.0), mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = 200.0 * mel / 3.0
    return np.where(mel >= 15.0, 1000.0 * np.exp((math.log(6.4) / 27.0) * (mel - 15.0)), hz)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int = SAMPLE_RATE, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) float32 matrix of area-normalised triangular mel filters."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= {sample_rate / 2}, got {f_min}, {f_max}")
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (fft_hz[None] - lo) / (mid - lo)
    fall = (hi - fft_hz[None]) / (hi - mid)
    weights = np.maximum(0.0, np.minimum(rise, fall)) * (2.0 / (hi - lo))
    return torch.from_numpy(weights.T.astype(np.float32))


class LogMelEncoder:
    """Log-mel :class:`~engine.audio.base.AudioEncoder`: 16 kHz wave -> (frames, 2, n_mels)."""

    name = "logmel"

    def __init__(
        self,
        n_mels: int = 80,
        *,
        n_fft: int = 512,
        win_length: int = 400,
        f_min: float = 20.0,
        f_max: float | None = 7600.0,
        context: int = 0,
    ) -> None:
        if win_length < HOP or (win_length - HOP) % 2 or win_length > n_fft:
            raise ValueError(f"win_length must be in [{HOP}, n_fft] with win_length - {HOP} even")
        if n_mels < 1:
            raise ValueError("n_mels must be positive")
        if context < 0:
            raise ValueError("context must be >= 0 frames")
        self.n_mels = n_mels
        self.context = context
        self.dim = n_mels * (2 * context + 1)
        self.n_fft = n_fft
        self.win_length = win_length
        self.pad = (win_length - HOP) // 2
        self._window = torch.hann_window(win_length, periodic=True, dtype=torch.float32)
        self._fbank = mel_filterbank(n_mels, n_fft, SAMPLE_RATE, f_min, f_max)

    @property
    def lookahead_samples(self) -> int:
        """Samples past a frame's end needed before the frame is final."""
        return self.pad + self.context * SAMPLES_PER_FRAME

    @property
    def lookahead_ms(self) -> float:
        """:attr:`lookahead_samples` in milliseconds."""
        return 1000.0 * self.lookahead_samples / SAMPLE_RATE

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Encode a whole 1-D 16 kHz wave into (ceil(len / 640), 2, dim) float32."""
        x = _as_wave(wave)
        frames = math.ceil(x.numel() / SAMPLES_PER_FRAME)
        right = frames * SAMPLES_PER_FRAME - x.numel() + self.pad
        padded = torch.nn.functional.pad(x, (self.pad, right))
        return stack_context(self._frames(padded, frames), self.context)

    def stream(self) -> LogMelStream:
        """A fresh streaming encoder sharing this encoder's parameters."""
        return LogMelStream(self)

    def _frames(self, padded: torch.Tensor, count: int) -> torch.Tensor:
        """Context-free features of the first ``count`` frames of a left-padded signal starting at a frame edge."""
        if count == 0:
            return torch.zeros(0, VECTORS_PER_FRAME, self.n_mels, dtype=torch.float32, device=padded.device)
        windows = padded[: (count - 1) * SAMPLES_PER_FRAME + HOP + self.win_length].unfold(
            0, self.win_length, HOP
        )
        return torch.stack(
            [self._frame(windows[VECTORS_PER_FRAME * f : VECTORS_PER_FRAME * (f + 1)]) for f in range(count)]
        )

    def _frame(self, windows: torch.Tensor) -> torch.Tensor:
        """(2, win_length) samples -> (2, n_mels) features; always called with this exact shape."""
        if self._window.device != windows.device:
            self._window = self._window.to(windows.device)
            self._fbank = self._fbank.to(windows.device)
        spec = torch.fft.rfft(windows * self._window, n=self.n_fft)
        power = torch.view_as_real(spec).square().sum(-1)
        mel = power @ self._fbank
        return (torch.log10(mel.clamp_min(1e-10)) + 4.0) / 4.0


class LogMelStream:
    """Incremental :class:`LogMelEncoder`: ``push`` returns newly final frames, ``flush`` the rest.

    Concatenating every ``push`` result and ``flush`` equals ``encode`` of the whole audio, bit for
    bit. After ``flush`` the stream is ready for a new utterance.
    """

    def __init__(self, encoder: LogMelEncoder) -> None:
        self.encoder = encoder
        self.reset()

    def reset(self) -> None:
        """Drop buffered audio and start a new utterance."""
        self._buf = torch.zeros(self.encoder.pad, dtype=torch.float32)  # padded signal from a frame edge
        self._received = 0
        self._taken = 0  # context-free frames computed
        self._emitted = 0
        c = self.encoder.context
        self._history = torch.full((c, VECTORS_PER_FRAME, self.encoder.n_mels), SILENCE)  # base frames f-c … f+c-1

    @property
    def frames_emitted(self) -> int:
        """Frames returned since the last reset/flush."""
        return self._emitted

    def push(self, samples: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Append 16 kHz samples; return (n, 2, dim) for the frames that became final (n may be 0)."""
        x = _as_wave(samples)
        if self._buf.device != x.device:
            self._buf = self._buf.to(x.device)
        self._buf = torch.cat([self._buf, x])
        self._received += x.numel()
        need = HOP + self.encoder.win_length  # buffer length for one frame
        ready = (self._buf.numel() - need) // SAMPLES_PER_FRAME + 1 if self._buf.numel() >= need else 0
        return self._with_context(self._take(ready))

    def flush(self) -> torch.Tensor:
        """End of utterance: zero-pad, return the remaining frames, reset."""
        total = math.ceil(self._received / SAMPLES_PER_FRAME)
        remaining = total - self._taken
        need = remaining * SAMPLES_PER_FRAME + 2 * self.encoder.pad
        if remaining and self._buf.numel() < need:
            self._buf = torch.nn.functional.pad(self._buf, (0, need - self._buf.numel()))
        base = self._take(remaining)
        c = self.encoder.context
        out = self._with_context(torch.cat([base, base.new_full((c, *base.shape[1:]), SILENCE)]) if c else base)
        self.reset()
        return out

    def _take(self, count: int) -> torch.Tensor:
        """The next ``count`` context-free frames."""
        out = self.encoder._frames(self._buf, count)
        if count:
            self._buf = self._buf[count * SAMPLES_PER_FRAME :].clone()
            self._taken += count
        return out

    def _with_context(self, base: torch.Tensor) -> torch.Tensor:
        """Frames whose right context is now complete, given newly final context-free frames."""
        c = self.encoder.context
        if c == 0:
            self._emitted += base.shape[0]
            return base
        ext = torch.cat([self._history.to(base.device), base])
        count = ext.shape[0] - 2 * c
        if count <= 0:
            self._history = ext
            return base.new_zeros(0, VECTORS_PER_FRAME, self.encoder.dim)
        out = _stack_windows(ext, count, c)
        self._history = ext[count:]
        self._emitted += count
        return out


def _as_wave(wave: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(wave)
    if x.dim() != 1:
        raise ValueError(f"expected a 1-D 16 kHz waveform, got shape {tuple(x.shape)}")
    return x.to(torch.float32)
