"""The session's audio timeline: 16 kHz samples and per-frame features on the 25 fps video clock.

Frame ``i`` owns samples ``[640·i, 640·(i+1))``. Frames are silence unless an utterance was placed
on them; an utterance starts at a frame chosen by the scheduler and grows as audio arrives. Its
features come from fresh streaming encoders (so they equal the offline features of the utterance
alone); silent frames use the encoders' silence features. Audio is the master clock: nothing here
knows about wall time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..audio.base import SAMPLES_PER_FRAME

FeatureRows = tuple[torch.Tensor, torch.Tensor]
"""(keyframe rows (n, 2, Dk), interpolation rows (n, 2, Di))."""


class FeatureStreams:
    """Incremental features for one utterance, from the bundle's per-stage encoder recipe."""

    def __init__(self, make_streams: Callable[[], dict[str, object]], recipe: dict[str, list[str]]) -> None:
        self._make = make_streams
        self.recipe = recipe
        self.streams = make_streams()
        self._rows: dict[str, list[torch.Tensor]] = {name: [] for name in self.streams}

    def push(self, samples: torch.Tensor) -> FeatureRows:
        for name, stream in self.streams.items():
            self._rows[name].append(stream.push(samples))  # type: ignore[attr-defined]
        return self._collect()

    def flush(self) -> FeatureRows:
        for name, stream in self.streams.items():
            self._rows[name].append(stream.flush())  # type: ignore[attr-defined]
        return self._collect()

    def _collect(self) -> FeatureRows:
        """Rows final for every encoder (encoders may lag each other)."""
        ready = min(sum(r.shape[0] for r in rows) for rows in self._rows.values())
        taken: dict[str, torch.Tensor] = {}
        for name, rows in self._rows.items():
            cat = torch.cat(rows) if rows else torch.zeros(0)
            taken[name] = cat[:ready]
            self._rows[name] = [cat[ready:]]
        kf = torch.cat([taken[n] for n in self.recipe["keyframe"]], dim=-1)
        ip = torch.cat([taken[n] for n in self.recipe["interpolation"]], dim=-1)
        return kf, ip


@dataclass
class Utterance:
    start: int
    """First frame of the utterance on the timeline."""
    samples: int = 0
    rows: int = 0
    """Frames whose features are final."""
    open: bool = True
    features: FeatureStreams | None = None

    @property
    def end(self) -> int:
        """One past the last frame that holds any of its audio."""
        return self.start + -(-self.samples // SAMPLES_PER_FRAME)


@dataclass
class AudioTimeline:
    silence_rows: FeatureRows
    """Per-frame features of silence: (1, 2, Dk), (1, 2, Di)."""
    audio: dict[int, np.ndarray] = field(default_factory=dict)
    """Frame → its 640 samples (absent = silence)."""
    kf_rows: dict[int, torch.Tensor] = field(default_factory=dict)
    ip_rows: dict[int, torch.Tensor] = field(default_factory=dict)
    utterances: list[Utterance] = field(default_factory=list)
    _partial: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def current(self) -> Utterance | None:
        return self.utterances[-1] if self.utterances and self.utterances[-1].open else None

    @property
    def speech_end(self) -> int:
        """One past the last frame holding speech (0 if none)."""
        return max((u.end for u in self.utterances), default=0)

    def start_utterance(self, frame: int, features: FeatureStreams) -> Utterance:
        utt = Utterance(start=frame, features=features)
        self.utterances.append(utt)
        self._partial = np.zeros(0, np.float32)
        return utt

    def append(self, samples: np.ndarray) -> None:
        """Add 16 kHz samples to the open utterance."""
        utt = self.current
        assert utt is not None and utt.features is not None
        data = np.concatenate([self._partial, samples.astype(np.float32)])
        whole = len(data) // SAMPLES_PER_FRAME
        first = utt.start + utt.samples // SAMPLES_PER_FRAME
        for i in range(whole):
            self.audio[first + i] = data[i * SAMPLES_PER_FRAME : (i + 1) * SAMPLES_PER_FRAME]
        self._partial = data[whole * SAMPLES_PER_FRAME :]
        utt.samples += len(samples)
        self._store_rows(utt, utt.features.push(torch.from_numpy(samples.astype(np.float32))))

    def close(self) -> None:
        """End the open utterance: the partial last frame is zero-padded, features flushed."""
        utt = self.current
        if utt is None:
            return
        if len(self._partial):
            frame = np.zeros(SAMPLES_PER_FRAME, np.float32)
            frame[: len(self._partial)] = self._partial
            self.audio[utt.start + utt.samples // SAMPLES_PER_FRAME] = frame
            self._partial = np.zeros(0, np.float32)
        assert utt.features is not None
        self._store_rows(utt, utt.features.flush())
        utt.open = False
        utt.features = None
        # Rows past the utterance's audio (encoder padding frames) are not kept.
        for rows in (self.kf_rows, self.ip_rows):
            for f in [f for f in rows if f >= utt.end and f >= utt.start + utt.rows]:
                del rows[f]

    def _store_rows(self, utt: Utterance, rows: FeatureRows) -> None:
        kf, ip = rows
        for i in range(kf.shape[0]):
            self.kf_rows[utt.start + utt.rows + i] = kf[i]
            self.ip_rows[utt.start + utt.rows + i] = ip[i]
        utt.rows += kf.shape[0]

    def cut(self, frame: int) -> None:
        """Silence everything from ``frame`` on (interrupt); closes the open utterance."""
        utt = self.current
        if utt is not None:
            utt.open = False
            utt.features = None
        for store in (self.audio, self.kf_rows, self.ip_rows):
            for f in [f for f in store if f >= frame]:
                del store[f]
        for u in self.utterances:
            if u.start >= frame:
                u.samples = 0
            else:
                u.samples = min(u.samples, (frame - u.start) * SAMPLES_PER_FRAME)
        self._partial = np.zeros(0, np.float32)

    def is_final(self, frame: int) -> bool:
        """Whether the frame's audio and features can no longer change (barring an interrupt)."""
        utt = self.current
        if utt is None or frame < utt.start:
            return True
        return frame < utt.start + utt.rows

    def final_until(self, start: int) -> int:
        """First frame ≥ ``start`` that is not final (a large number when all are)."""
        utt = self.current
        if utt is None:
            return 1 << 60
        return max(start, utt.start + utt.rows)

    def rows(self, frames: list[int]) -> FeatureRows:
        kf_sil, ip_sil = self.silence_rows
        kf = torch.stack([self.kf_rows.get(f, kf_sil[0]) for f in frames])
        ip = torch.stack([self.ip_rows.get(f, ip_sil[0]) for f in frames])
        return kf, ip

    def samples(self, frame: int) -> np.ndarray:
        data = self.audio.get(frame)
        return np.zeros(SAMPLES_PER_FRAME, np.float32) if data is None else data

    def is_speech(self, frame: int) -> bool:
        return any(u.start <= frame < max(u.end, u.start + (1 if u.open else 0)) for u in self.utterances[-2:])

    def forget_before(self, frame: int) -> None:
        """Drop per-frame data older than ``frame`` (keeps memory flat in long sessions)."""
        for store in (self.audio, self.kf_rows, self.ip_rows):
            for f in [f for f in store if f < frame]:
                del store[f]
        self.utterances = [u for u in self.utterances if u.open or u.end > frame]
