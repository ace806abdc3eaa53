"""Conditioning embedders: identity/anchor latents, emotion (valence, arousal) and audio.

Each produces one of the three routes the UNet consumes: ``concat`` (channels joined to the noisy
latent), ``crossattn`` (audio tokens, also the per-frame audio vector of the time embedding) and
``vector`` (per-frame emotion, keyframe model only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from .layers import timestep_embedding

LATENT_SCALE = 0.18215
"""SD/SVD VAE latent scale: stored latents are ``scale × VAE latent``."""


@dataclass(frozen=True)
class Conditioning:
    """Conditioning of ``b`` clips for one network: the routes of sgm's GeneralConditioner."""

    concat: torch.Tensor
    """(b, 4, h, w) identity latent (keyframe) or (b, 8, h, w) start‖end anchors (interpolation)."""
    crossattn: torch.Tensor
    """(b, t, context_dim) projected audio tokens."""
    vector: torch.Tensor | None = None
    """(b·t, adm) emotion embedding, keyframe model only."""

    @property
    def num_clips(self) -> int:
        return self.concat.shape[0]

    def unconditional(self) -> Conditioning:
        """KeyFace's ``uc``: identity and audio outputs zeroed, emotion kept."""
        return replace(self, concat=torch.zeros_like(self.concat), crossattn=torch.zeros_like(self.crossattn))

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Stack clips of several conditionings (guidance branches, concurrent sessions)."""
        vectors = [p.vector for p in parts]
        return Conditioning(
            concat=torch.cat([p.concat for p in parts]),
            crossattn=torch.cat([p.crossattn for p in parts]),
            vector=None if any(v is None for v in vectors) else torch.cat(vectors),  # type: ignore[arg-type]
        )

    def clips(self, start: int, stop: int, frames: int) -> Conditioning:
        """The conditioning of clips ``start … stop-1`` (``frames`` per clip)."""
        vector = None if self.vector is None else self.vector[start * frames : stop * frames]
        return Conditioning(self.concat[start:stop], self.crossattn[start:stop], vector)


def emotion_embedding(valence: torch.Tensor, arousal: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-frame ``vector``: sinusoidal(valence) ‖ sinusoidal(arousal); inputs (b, t) → (b·t, 2·dim)."""
    v = timestep_embedding(valence.reshape(-1).float(), dim)
    a = timestep_embedding(arousal.reshape(-1).float(), dim)
    return torch.cat([v, a], dim=1)


class AudioProjection(nn.Module):
    """sgm ``WhisperAudioEmbedder`` (merge mean): (b, t, 2, D) → mean of the 2 → Linear → (b, t, C)."""

    def __init__(self, audio_dim: int, linear_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(audio_dim, linear_dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.linear(audio.mean(dim=2).to(self.linear.weight.dtype))


def identity_concat(latent_scaled: torch.Tensor) -> torch.Tensor:
    """Keyframe ``concat``: the stored (×0.18215) identity latent back in VAE units."""
    return latent_scaled / LATENT_SCALE


def anchor_concat(start_scaled: torch.Tensor, end_scaled: torch.Tensor) -> torch.Tensor:
    """Interpolation ``concat``: (S, 4, h, w) start and end latents → (S, 8, h, w) in VAE units."""
    return torch.cat([start_scaled, end_scaled], dim=1) / LATENT_SCALE
