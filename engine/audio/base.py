"""The contract every audio encoder fulfils, so the scheduler never cares which one runs.

KeyFace consumes audio at 16 kHz in video frames of 640 samples (25 fps); each frame yields two
feature vectors (one per 20 ms half-frame).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
VECTORS_PER_FRAME = 2


@runtime_checkable
class AudioEncoder(Protocol):
    """Offline audio encoder: a whole 16 kHz mono waveform in, per-frame vectors out."""

    name: str
    dim: int
    """Width of each of the two per-frame vectors."""

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Encode a 1-D float32 waveform at 16 kHz into (frames, 2, dim).

        ``frames = ceil(len(wave) / 640)``; encoders whose recipe pads to an even frame count
        trim the padding frame before returning.
        """
        ...
