"""Kaldi-compatible log-mel filterbank (``torchaudio.compliance.kaldi.fbank`` defaults) in plain torch.

Defaults reproduced: 25 ms povey window, 10 ms shift, ``snip_edges``, no dither, DC removal,
pre-emphasis 0.97, FFT size rounded up to a power of two, power spectrum, mel bins from 20 Hz to
Nyquist (mel = 1127 ln(1 + f/700)), log with a floor of float32 epsilon.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

_EPS = torch.finfo(torch.float32).eps


def _mel(freq: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(freq, torch.Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=8)
def mel_banks(num_bins: int, fft_size: int, sample_rate: float, low_freq: float = 20.0) -> torch.Tensor:
    """Triangular mel filters (num_bins, fft_size // 2 + 1), float32, last (Nyquist) column zero."""
    high_freq = 0.5 * sample_rate
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    mel = _mel(sample_rate / fft_size * torch.arange(fft_size // 2, dtype=torch.float32)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))


@lru_cache(maxsize=8)
def povey_window(size: int) -> torch.Tensor:
    """Hann window (symmetric) raised to 0.85."""
    return torch.hann_window(size, periodic=False, dtype=torch.float32).pow(0.85)


def num_fbank_frames(num_samples: int, frame_length: int = 400, frame_shift: int = 160) -> int:
    """Rows produced with ``snip_edges``: ``1 + (N - 400) // 160`` (0 if shorter than a window)."""
    return 0 if num_samples < frame_length else 1 + (num_samples - frame_length) // frame_shift


def kaldi_fbank(
    wave: torch.Tensor,
    num_mel_bins: int = 128,
    sample_rate: int = 16_000,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
) -> torch.Tensor:
    """Log-mel filterbank (frames, num_mel_bins) of a 1-D waveform (Kaldi sample scale, ±32768)."""
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    fft_size = 1 << (size - 1).bit_length()
    rows = num_fbank_frames(wave.shape[-1], size, shift)
    if rows == 0:
        return wave.new_zeros(0, num_mel_bins)
    frames = wave.unfold(0, size, shift)[:rows]
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - preemphasis * previous
    frames = frames * povey_window(size).to(wave.device)
    frames = F.pad(frames, (0, fft_size - size))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = mel_banks(num_mel_bins, fft_size, float(sample_rate)).to(wave.device)
    energies = torch.mm(power, banks.T)
    return torch.clamp(energies, min=_EPS).log()
