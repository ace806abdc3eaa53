"""KeyFace's diffusion losses (spec §12) for the keyframe and interpolation stages.

σ per clip with ln σ ~ N(1.0, 1.2²); ``x_σ = x₀ + σ·n``; ``D`` from the engine's own EDM
denoiser; ``w = (σ²+1)/σ²`` (VWeighting); loss = mean of ``w·(D − x₀)²`` with the bottom half of
the latent rows weighted ``λ_lower`` (3 keyframe / 2 interpolation) and, for the demo model (its
faces are small, so the mouth covers ~9 % of the latent), the identity's mouth box (grown by a
margin, at latent resolution) weighted ``MOUTH_WEIGHT`` on top. The keyframe loss adds the
pixel L2 of one decoded frame per clip (weighted by ``w``). Classifier-free condition dropout as
the reference: identity / anchor latents 10 %, audio 20 % (their embedder outputs zeroed).

Training runs on cached latents: :class:`LatentSet` holds the dataset's stored-space latents.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from engine.models.conditioning import Conditioning, anchor_concat, emotion_embedding, identity_concat
from engine.models.stage import KeyFaceStage
from engine.models.vae import AutoencoderKL
from engine.sampling.denoiser import denoise
from export.data.identity import Identity
from export.data.measure import non_mouth_mask

from .dataset import AUDIO_CONTEXT, SessionSet
from .vae import to_model_range

P_MEAN, P_STD = 1.0, 1.2
LAMBDA_LOWER = {"keyframe": 3.0, "interpolation": 2.0}
DROP_IDENTITY, DROP_AUDIO = 0.1, 0.2
MOUTH_WEIGHT = 3.0
WINDOW = 14
SPACING = 13


@dataclass
class LatentSet:
    """Cached stored-space latents of a :class:`SessionSet` (and its identity images)."""

    data: SessionSet
    latents: torch.Tensor
    """(N, 4, h, w) frame latents (×scale_factor)."""
    identity: torch.Tensor
    """(S, 4, h, w) latents of the sessions' neutral identity images."""
    audio_context: int = AUDIO_CONTEXT

    @functools.cached_property
    def mouth(self) -> torch.Tensor:
        """(S, 1, h, w) 1 on the latent cells that touch each session identity's mouth box, else 0."""
        h, w = self.latents.shape[-2:]
        size = self.data.frames.shape[1]
        masks = [~non_mouth_mask(Identity.sample(int(seed)), size) for seed in self.data.identity_seeds]
        cells = np.stack(masks).reshape(len(masks), h, size // h, w, size // w).any(axis=(2, 4))
        return torch.from_numpy(cells).float()[:, None]

    @functools.cached_property
    def audio(self) -> np.ndarray:
        """(N, 2, dim) audio rows with the demo encoder's context."""
        return self.data.context_features(self.audio_context)


@dataclass
class Batch:
    x0: torch.Tensor
    """(b·14, 4, h, w) target latents."""
    audio: torch.Tensor
    """(b, 14, 2, n_mels) audio rows."""
    emotion: torch.Tensor
    """(b, 14, 2) valence, arousal."""
    concat: torch.Tensor
    """(b, 4|8, h, w) identity latent (VAE units) or anchors."""
    frames: np.ndarray
    """(b·14,) dataset frame indices (for the pixel loss)."""
    mouth: torch.Tensor | None = None
    """(b, 1, h, w) mouth-box cells of each clip's identity (weighted ``MOUTH_WEIGHT``)."""

    def to(self, device: torch.device | str) -> Batch:
        mouth = None if self.mouth is None else self.mouth.to(device)
        return Batch(self.x0.to(device), self.audio.to(device), self.emotion.to(device), self.concat.to(device),
                     self.frames, mouth)


def sample_batch(kind: str, lat: LatentSet, clips: int, gen: torch.Generator) -> Batch:
    """Keyframe clips: 14 frames 13 apart (identity = the session's neutral image);
    interpolation clips: 14 consecutive frames (anchors = first and last)."""
    data = lat.data
    sessions = torch.randint(0, data.num_sessions, (clips,), generator=gen).tolist()
    rows, concat = [], []
    for s in sessions:
        a, b = data.span(s)
        span = b - a
        step = SPACING if kind == "keyframe" else 1
        step = max(1, min(step, (span - 1) // (WINDOW - 1)))
        first = a + int(torch.randint(0, span - step * (WINDOW - 1), (1,), generator=gen))
        idx = first + step * np.arange(WINDOW)
        rows.append(idx)
        if kind == "keyframe":
            concat.append(identity_concat(lat.identity[s : s + 1]))
    idx = np.concatenate(rows)
    x0 = lat.latents[idx]
    if kind == "interpolation":
        seg = x0.reshape(clips, WINDOW, *x0.shape[1:])
        concat_t = anchor_concat(seg[:, 0], seg[:, -1])
    else:
        concat_t = torch.cat(concat)
    return Batch(
        x0=x0,
        audio=torch.from_numpy(lat.audio[idx]).reshape(clips, WINDOW, *lat.audio.shape[1:]),
        emotion=torch.from_numpy(data.emotion[idx]).reshape(clips, WINDOW, 2),
        concat=concat_t,
        frames=idx,
        mouth=lat.mouth[sessions],
    )


def conditioning(stage: KeyFaceStage, batch: Batch, gen: torch.Generator | None = None) -> Conditioning:
    """The stage's conditioning; with ``gen``, the reference's condition dropout is applied."""
    crossattn = stage.project_audio(batch.audio)
    concat = batch.concat
    b = concat.shape[0]
    if gen is not None:
        keep_id = (torch.rand(b, generator=gen) >= DROP_IDENTITY).float().to(concat.device)
        keep_audio = (torch.rand(b, generator=gen) >= DROP_AUDIO).float().to(concat.device)
        concat = concat * keep_id[:, None, None, None]
        crossattn = crossattn * keep_audio[:, None, None]
    vector = None
    if stage.config.kind == "keyframe":
        e = batch.emotion
        vector = emotion_embedding(e[..., 0], e[..., 1], stage.config.emotion_dim)
    return Conditioning(concat=concat, crossattn=crossattn, vector=vector)


def sample_sigma(clips: int, gen: torch.Generator) -> torch.Tensor:
    """Per-clip σ with ln σ ~ N(P_MEAN, P_STD²), repeated for the 14 frames."""
    sigma = (P_MEAN + P_STD * torch.randn(clips, generator=gen)).exp()
    return sigma.repeat_interleave(WINDOW)


def lower_weight(h: int, factor: float) -> torch.Tensor:
    w = torch.ones(h, 1)
    w[h // 2 :] = factor
    return w


def loss_weight(kind: str, h: int, mouth: torch.Tensor | None, device: torch.device | str) -> torch.Tensor:
    """Per-cell loss weight: the lower half ``λ_lower``, times ``MOUTH_WEIGHT`` on the clips'
    (b, 1, h, w) mouth cells (repeated over each clip's 14 frames) when ``mouth`` is given."""
    weight = lower_weight(h, LAMBDA_LOWER[kind]).to(device)
    if mouth is not None:
        weight = weight * mouth_factor(mouth.to(device).repeat_interleave(WINDOW, 0))
    return weight


def mouth_factor(mouth: torch.Tensor) -> torch.Tensor:
    """Loss factor of a 0/1 mouth-cell mask: ``MOUTH_WEIGHT`` on the mouth, 1 elsewhere."""
    return 1.0 + (MOUTH_WEIGHT - 1.0) * mouth


def diffusion_loss(
    stage: KeyFaceStage,
    batch: Batch,
    gen: torch.Generator,
    vae: AutoencoderKL | None = None,
    data: SessionSet | None = None,
    pixel_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """KeyFace's training loss for one batch (pixel term when ``vae`` and ``data`` are given)."""
    kind = stage.config.kind
    clips = batch.concat.shape[0]
    cond = conditioning(stage, batch, gen)
    device = batch.x0.device
    sigma = sample_sigma(clips, gen).to(device)
    noise = torch.randn(batch.x0.shape, generator=gen).to(device)
    col = sigma[:, None, None, None]
    denoised = denoise(stage.network, batch.x0 + col * noise, sigma, cond, WINDOW)
    w = (sigma**2 + 1.0) / sigma**2
    row_w = loss_weight(kind, batch.x0.shape[-2], batch.mouth, device)
    latent = (w[:, None, None, None] * row_w * (denoised - batch.x0).square()).mean()
    logs = {"latent": float(latent.detach())}
    loss = latent
    if vae is not None and data is not None and pixel_weight > 0:
        pick = torch.arange(clips) * WINDOW + torch.randint(0, WINDOW, (clips,), generator=gen)
        pick = pick.to(device)
        rgb = vae.decode(vae.unscale_latent(denoised[pick]), frames_per_call=clips).clamp(-1, 1)
        target = to_model_range(data.frames[batch.frames[pick.cpu().numpy()]]).to(device)
        pixel = (w[pick][:, None, None, None] * (rgb - target).square()).mean()
        loss = loss + pixel_weight * pixel
        logs["pixel"] = float(pixel.detach())
    return loss, logs


def stage_step_fn(
    stage: KeyFaceStage, lat: LatentSet, clips: int, vae: AutoencoderKL | None, pixel_every: int = 1,
    device: torch.device | str = "cpu",
):
    def step(i: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        batch = sample_batch(stage.config.kind, lat, clips, gen).to(device)
        use_pixel = vae is not None and pixel_every > 0 and i % pixel_every == 0
        return diffusion_loss(stage, batch, gen, vae if use_pixel else None, lat.data)

    return step
