"""Incremental per-frame feature extraction for any :class:`AudioEncoder`.

Frames are produced in fixed blocks of ``block_frames`` video frames. Block ``k`` covers frames
``[kB, (k+1)B)`` and is computed by ``encoder.encode`` on the window of audio
``[kB − left_context, (k+1)B + lookahead)`` frames, clipped to the utterance. The windows depend
only on frame indices, never on how the audio was chunked, so the streamed output equals
:func:`encode_windowed` on the whole utterance, whatever the chunk sizes.

Whether that also equals ``encoder.encode(whole_utterance)`` depends on the encoder: exactly for
encoders whose receptive field fits in the context (log-mel and similar), only approximately for
the transformer encoders (global self-attention, wav2vec2's clip-level normalisation, BEATs'
length-dependent token resampling). ``StreamingConfig.exact()`` waits for the end of the utterance
and reproduces the offline recipe bit for bit; see ``docs/audio.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.audio.alignment import num_frames
from engine.audio.base import SAMPLE_RATE, SAMPLES_PER_FRAME, VECTORS_PER_FRAME, AudioEncoder

FRAME_MS = 1000.0 * SAMPLES_PER_FRAME / SAMPLE_RATE  # 40 ms


@dataclass(frozen=True)
class StreamingConfig:
    """Block size, left context and look-ahead, in video frames (40 ms).

    ``block_frames`` and ``left_context_frames`` are multiples of 4 and ``lookahead_frames`` is
    even, so every window starts on a BEATs patch boundary (160 ms) and interior windows have the
    even frame count WavLM/BEATs pad to. ``None`` means unbounded: no left limit (context back to
    the utterance start) or no look-ahead limit (frames are only final at :meth:`flush`).
    """

    block_frames: int = 4
    left_context_frames: int | None = 48
    lookahead_frames: int | None = 12

    def __post_init__(self) -> None:
        if self.block_frames < 1 or self.block_frames % 4:
            raise ValueError(f"block_frames must be a positive multiple of 4, got {self.block_frames}")
        left, ahead = self.left_context_frames, self.lookahead_frames
        if left is not None and (left < 0 or left % 4):
            raise ValueError(f"left_context_frames must be a non-negative multiple of 4, got {left}")
        if ahead is not None and (ahead < 0 or ahead % 2):
            raise ValueError(f"lookahead_frames must be non-negative and even, got {ahead}")

    @classmethod
    def exact(cls) -> StreamingConfig:
        """Whole-utterance mode: nothing is emitted before ``flush``; output == offline recipe."""
        return cls(block_frames=4, left_context_frames=None, lookahead_frames=None)

    @property
    def lookahead_ms(self) -> float:
        """Worst-case audio needed after the end of a frame before it is emitted (inf if unbounded)."""
        if self.lookahead_frames is None:
            return math.inf
        return (self.block_frames - 1 + self.lookahead_frames) * FRAME_MS

    @property
    def model_lookahead_ms(self) -> float:
        """Audio the encoder sees past the end of each block."""
        return math.inf if self.lookahead_frames is None else self.lookahead_frames * FRAME_MS

    @property
    def left_context_ms(self) -> float:
        """Audio the encoder sees before the start of each block."""
        return math.inf if self.left_context_frames is None else self.left_context_frames * FRAME_MS

    def window(self, block: int, total_frames: int | None = None) -> tuple[int, int]:
        """Window ``[start, end)`` in frames for ``block``; ``end`` unclipped if ``total_frames`` is None."""
        first = block * self.block_frames
        start = 0 if self.left_context_frames is None else max(0, first - self.left_context_frames)
        if self.lookahead_frames is None:
            if total_frames is None:
                raise ValueError("with unbounded look-ahead the window end is the utterance end")
            return start, total_frames
        end = first + self.block_frames + self.lookahead_frames
        return start, end if total_frames is None else min(end, total_frames)


def _empty(encoder: AudioEncoder) -> torch.Tensor:
    device = getattr(encoder, "device", torch.device("cpu"))
    return torch.zeros(0, VECTORS_PER_FRAME, encoder.dim, device=device)


def encode_windowed(encoder: AudioEncoder, wave: torch.Tensor, config: StreamingConfig) -> torch.Tensor:
    """Offline counterpart of :class:`StreamingExtractor`: the same windows on a whole utterance."""
    total = num_frames(wave.shape[-1])
    out, cache = [], {}
    for block in range(-(-total // config.block_frames)):
        start, end = config.window(block, total)
        if (start, end) not in cache:
            cache = {(start, end): encoder.encode(wave[start * SAMPLES_PER_FRAME : end * SAMPLES_PER_FRAME])}
        first = block * config.block_frames
        out.append(cache[(start, end)][first - start : min(total, first + config.block_frames) - start])
    return torch.cat(out) if out else _empty(encoder)


class StreamingExtractor:
    """Push 16 kHz mono chunks of any size; get (k, 2, D) frames as soon as they are final.

    ``flush()`` ends the utterance (the tail is zero-padded exactly as offline), returns the
    remaining frames and resets the extractor for the next utterance.
    """

    def __init__(self, encoder: AudioEncoder, config: StreamingConfig | None = None) -> None:
        self.encoder = encoder
        self.config = config or StreamingConfig()
        self.reset()

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def lookahead_ms(self) -> float:
        return self.config.lookahead_ms

    @property
    def left_context_ms(self) -> float:
        return self.config.left_context_ms

    def reset(self) -> None:
        """Forget the current utterance."""
        self._buffer = torch.zeros(0)
        self._buffer_start = 0  # sample index of _buffer[0]
        self._pending: list[torch.Tensor] = []
        self._received = 0
        self._block = 0
        self.frames_emitted = 0

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """Add samples (1-D float32, 16 kHz); return the frames that became final (k, 2, D)."""
        samples = torch.as_tensor(samples, dtype=torch.float32).reshape(-1).cpu()
        if samples.numel():
            self._pending.append(samples)
            self._received += samples.numel()
        out = []
        if self.config.lookahead_frames is not None:  # else nothing is final before flush()
            start, end = self.config.window(self._block)
            while end * SAMPLES_PER_FRAME <= self._received:
                out.append(self._run_block(start, end))
                start, end = self.config.window(self._block)
        return torch.cat(out) if out else _empty(self.encoder)

    def flush(self) -> torch.Tensor:
        """End of utterance: return all remaining frames, then reset."""
        total = num_frames(self._received)
        out, last = [], None
        while self._block * self.config.block_frames < total:
            start, end = self.config.window(self._block, total)
            if last is not None and last[0] == (start, end):
                out.append(self._slice(last[1], start, total))
                self._block += 1
                continue
            encoded = self._encode(start, end)
            last = ((start, end), encoded)
            out.append(self._slice(encoded, start, total))
            self._block += 1
        self.reset()
        return torch.cat(out) if out else _empty(self.encoder)

    # ------------------------------------------------------------------ internals
    def _encode(self, start: int, end: int) -> torch.Tensor:
        if self._pending:
            self._buffer = torch.cat([self._buffer, *self._pending])
            self._pending = []
        lo = start * SAMPLES_PER_FRAME - self._buffer_start
        hi = min(end * SAMPLES_PER_FRAME, self._received) - self._buffer_start
        return self.encoder.encode(self._buffer[lo:hi])

    def _slice(self, encoded: torch.Tensor, start: int, total: int | None) -> torch.Tensor:
        first = self._block * self.config.block_frames
        last = first + self.config.block_frames
        if total is not None:
            last = min(total, last)
        frames = encoded[first - start : last - start]
        self.frames_emitted += frames.shape[0]
        return frames

    def _run_block(self, start: int, end: int) -> torch.Tensor:
        frames = self._slice(self._encode(start, end), start, None)
        self._block += 1
        next_start, _ = self.config.window(self._block)
        drop = next_start * SAMPLES_PER_FRAME - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop
        return frames
