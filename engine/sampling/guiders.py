"""Guidance: the keyframe audio/reference multi-condition guider and interpolation autoguidance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..models.conditioning import Conditioning
from .denoiser import NetworkFn, denoise


class Guider(Protocol):
    """Guided denoised estimate ``D̂(x, σ)`` for clips of ``num_frames`` frames."""

    num_frames: int

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor: ...


@dataclass
class AudioRefGuider:
    """KeyFace's ``AudioRefMultiCondGuider``: three branches in **one** network call.

    Branches (clip-stacked in this order): unconditional (no identity, no audio), reference
    (identity, no audio), full. ``D̂ = D_uc + ref·(D_ref − D_uc) + audio·(D_full − D_ref)``.
    """

    network: NetworkFn
    audio_scale: float = 5.0
    ref_scale: float = 2.0
    num_frames: int = 14

    def branches(self, cond: Conditioning) -> Conditioning:
        uc = cond.unconditional()
        ref = Conditioning(cond.concat, uc.crossattn, cond.vector)
        return Conditioning.cat([uc, ref, cond])

    def denoise_branches(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """The three branch outputs stacked ``[uc ; ref ; full]`` (3·rows)."""
        return denoise(self.network, x.repeat(3, 1, 1, 1), sigma.repeat(3), self.branches(cond), self.num_frames)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        d_uc, d_ref, d_full = self.denoise_branches(x, sigma, cond).chunk(3)
        return d_uc + self.ref_scale * (d_ref - d_uc) + self.audio_scale * (d_full - d_ref)


@dataclass
class AutoGuider:
    """Autoguidance (KeyFace's ``KarrasGuider``): ``D̂ = D_bad + scale·(D_good − D_bad)``.

    ``bad`` None (or scale 1) evaluates the good model alone — one evaluation per step.
    """

    good: NetworkFn
    bad: NetworkFn | None
    scale: float = 2.0
    num_frames: int = 14
    max_clips_per_call: int | None = None

    def denoise_pair(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(D_bad, D_good)."""
        if self.bad is None:
            raise ValueError("autoguidance needs a bad model")
        args = (x, sigma, cond, self.num_frames, self.max_clips_per_call)
        return denoise(self.bad, *args), denoise(self.good, *args)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        if self.bad is None or self.scale == 1.0:
            return denoise(self.good, x, sigma, cond, self.num_frames, self.max_clips_per_call)
        d_bad, d_good = self.denoise_pair(x, sigma, cond)
        return d_bad + self.scale * (d_good - d_bad)


@dataclass
class PlainGuider:
    """No guidance: one evaluation of the network with the full conditioning (distilled models)."""

    network: NetworkFn
    num_frames: int = 14

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return denoise(self.network, x, sigma, cond, self.num_frames)
