"""A cached idle loop per session: the living face on silence, computed once and replayed.

Idle keyframes are periodic on the keyframe grid: idle keyframe ``k`` is loop keyframe ``k mod M``,
so the loop closes on itself (keyframe ``M`` is keyframe 0) and every idle segment between loop
keyframes ``m`` and ``m+1`` can be replayed from its first computation. Speech segments are always
computed, anchored on loop keyframes where they meet idle, so entering and leaving speech goes
through the interpolation model like any other segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class IdleLoop:
    keyframes: int
    """Loop length M in keyframes (0 disables the cache: idle is always computed)."""
    valid_from: int = 0
    """First keyframe index the loop applies to (after the latest emotion ramp)."""
    latents: dict[int, torch.Tensor] = field(default_factory=dict)
    segments: dict[int, torch.Tensor] = field(default_factory=dict)
    """Loop segment m → its raw decoded frames, uint8 (spacing+1, H, W, 3)."""

    def _slot(self, k: int) -> int | None:
        if self.keyframes <= 0 or k < self.valid_from:
            return None
        return k % self.keyframes

    def keyframe(self, k: int) -> torch.Tensor | None:
        slot = self._slot(k)
        return None if slot is None else self.latents.get(slot)

    def store_keyframe(self, k: int, latent: torch.Tensor) -> None:
        slot = self._slot(k)
        if slot is not None:
            self.latents.setdefault(slot, latent)

    def segment(self, j: int) -> torch.Tensor | None:
        slot = self._slot(j)
        return None if slot is None else self.segments.get(slot)

    def store_segment(self, j: int, rgb: torch.Tensor) -> None:
        slot = self._slot(j)
        if slot is not None:
            self.segments.setdefault(slot, (rgb * 255.0).round().to(torch.uint8))

    def reset(self, valid_from: int) -> None:
        """Forget the loop (new emotion): it is rebuilt from ``valid_from`` on."""
        self.valid_from = valid_from
        self.latents.clear()
        self.segments.clear()
