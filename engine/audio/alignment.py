"""Frame alignment of the KeyFace reference: padding, 50 Hz → 2 vectors per frame, concatenation.

All functions work on 1-D float32 waveforms at 16 kHz and follow
``tests/fixtures/keyface_audio/README.md`` §1.2-1.6 exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.audio.base import SAMPLES_PER_FRAME, VECTORS_PER_FRAME


def num_frames(num_samples: int) -> int:
    """Video frames covered by ``num_samples`` samples: ``ceil(N / 640)``."""
    return -(-num_samples // SAMPLES_PER_FRAME)


CONV_STACK = ((10, 5),) + ((3, 2),) * 4 + ((2, 2),) * 2
"""(kernel, stride) of the WavLM / wav2vec2 feature extractor: receptive field 400, hop 320."""


def conv_frames(num_samples: int, stack: tuple[tuple[int, int], ...] = CONV_STACK) -> int:
    """Output length of the conv feature extractor (50 Hz vectors) for ``num_samples`` samples."""
    length = num_samples
    for kernel, stride in stack:
        length = max(0, (length - kernel) // stride + 1)
    return length


def pad_to_frames(wave: torch.Tensor, even: bool = False) -> torch.Tensor:
    """Zero-pad at the end to a multiple of 640 samples (and to an even frame count if ``even``)."""
    frames = num_frames(wave.shape[-1])
    if even:
        frames += frames % 2
    return F.pad(wave, (0, frames * SAMPLES_PER_FRAME - wave.shape[-1]))


def raw_audio_frames(wave: torch.Tensor) -> torch.Tensor:
    """``get_raw_audio``: the waveform zero-padded to whole frames, viewed as (F, 640)."""
    return pad_to_frames(wave).reshape(-1, SAMPLES_PER_FRAME)


def nearest_index(src_len: int, dst_len: int) -> torch.Tensor:
    """Source index per output slot of ``F.interpolate(mode="nearest")`` (float32 arithmetic).

    ``src = min(floor(float32(i) * float32(src_len / dst_len)), src_len - 1)``.
    """
    if src_len <= 0:
        raise ValueError(f"cannot resample an empty sequence to {dst_len} slots")
    scale = torch.tensor(src_len, dtype=torch.float32) / torch.tensor(dst_len, dtype=torch.float32)
    index = (torch.arange(dst_len, dtype=torch.float32) * scale).floor().long()
    return index.clamp_(max=src_len - 1)


def nearest_per_frame(seq: torch.Tensor, frames: int) -> torch.Tensor:
    """WavLM/BEATs rule: resample (T, D) to ``2*frames`` slots by nearest, view (frames, 2, D)."""
    index = nearest_index(seq.shape[0], VECTORS_PER_FRAME * frames).to(seq.device)
    return seq[index].reshape(frames, VECTORS_PER_FRAME, seq.shape[-1])


def pairs_per_frame(seq: torch.Tensor) -> torch.Tensor:
    """wav2vec2 rule: append one zero vector if T is odd, then view (ceil(T/2), 2, D)."""
    if seq.shape[0] % 2:
        seq = torch.cat([seq, seq.new_zeros(1, seq.shape[-1])])
    return seq.reshape(-1, VECTORS_PER_FRAME, seq.shape[-1])


def concat_features(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Truncate two (F, 2, D) embeddings to the common length and concatenate on the last axis."""
    frames = min(first.shape[0], second.shape[0])
    return torch.cat([first[:frames], second[:frames]], dim=-1)


def keyframe_features(wavlm: torch.Tensor, beats: torch.Tensor) -> torch.Tensor:
    """Keyframe-model audio: WavLM ‖ BEATs → (F, 2, 1536) at full size."""
    return concat_features(wavlm, beats)


def interpolation_features(wav2vec2: torch.Tensor, beats: torch.Tensor) -> torch.Tensor:
    """Interpolation-model audio: wav2vec2 ‖ BEATs → (F, 2, 1536) at full size."""
    return concat_features(wav2vec2, beats)
