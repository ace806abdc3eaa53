"""Continuous emotion (valence, arousal): KeyFace's named presets and transitions over time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import InputError

PRESETS: dict[str, tuple[float, float]] = {
    "happy": (0.85, 0.75),
    "angry": (-0.443, 0.908),
    "surprised": (0.0, 0.85),
    "sad": (-0.85, -0.35),
    "neutral": (0.0, 0.0),
    "fear": (0.181, 0.949),
    "disgusted": (-0.8, 0.5),
    "contempt": (0.307, 0.535),
    "calm": (0.65, -0.5),
    "excited": (0.9, 0.9),
    "bored": (-0.6, -0.9),
    "confused": (-0.3, 0.4),
    "anxious": (-0.85, 0.9),
    "confident": (0.7, 0.4),
    "frustrated": (-0.8, 0.6),
    "amused": (0.7, 0.5),
    "proud": (0.8, 0.4),
    "ashamed": (-0.8, -0.3),
    "grateful": (0.7, 0.2),
    "jealous": (-0.7, 0.5),
    "hopeful": (0.7, 0.3),
    "disappointed": (-0.7, -0.3),
    "curious": (0.5, 0.5),
    "overwhelmed": (-0.6, 0.8),
}


@dataclass(frozen=True)
class Emotion:
    valence: float = 0.0
    arousal: float = 0.0

    def __post_init__(self) -> None:
        for name, value in (("valence", self.valence), ("arousal", self.arousal)):
            if not -1.0 <= value <= 1.0:
                raise InputError(f"{name} must be within [-1, 1], got {value}")

    @classmethod
    def preset(cls, name: str) -> Emotion:
        try:
            return cls(*PRESETS[name.strip().lower()])
        except KeyError:
            raise InputError(f"unknown emotion {name!r}; choose one of: {', '.join(sorted(PRESETS))}") from None

    def accentuated(self, factor: float = 1.5) -> Emotion:
        """Scale both axes and clip to [-1, 1]."""
        return Emotion(max(-1.0, min(1.0, self.valence * factor)), max(-1.0, min(1.0, self.arousal * factor)))


def parse_emotion(spec: str) -> Emotion:
    """``"happy"`` or ``"0.5,-0.2"`` (valence,arousal)."""
    if "," in spec:
        try:
            v, a = (float(p) for p in spec.split(","))
        except ValueError:
            raise InputError(f"emotion {spec!r}: expected 'valence,arousal' numbers") from None
        return Emotion(v, a)
    return Emotion.preset(spec)


def emotion_track(states: Sequence[Emotion], num_frames: int) -> torch.Tensor:
    """Per-frame (valence, arousal), shape (num_frames, 2).

    One state is constant; several are joined by linear ramps spread evenly over the video
    (state k reached at frame k·(N−1)/(n−1)) — KeyFace's transitions, always N frames long.
    """
    if not states:
        raise InputError("at least one emotion state is needed")
    values = torch.tensor([[s.valence, s.arousal] for s in states], dtype=torch.float32)
    if len(states) == 1 or num_frames <= 1:
        return values[:1].expand(num_frames, 2).clone()
    pos = torch.linspace(0, len(states) - 1, num_frames)
    lo = pos.floor().long().clamp(max=len(states) - 2)
    frac = (pos - lo.float())[:, None]
    return values[lo] * (1 - frac) + values[lo + 1] * frac
