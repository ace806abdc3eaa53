"""Fine-tune the VAE decoder alone on cached latents (encoder, latent space and scale unchanged).

The diffusion stages see only latents, so a better decoder improves a trained or shipped model
without retraining them: whole 64×64 frames are decoded from their cached posterior-mode latents
and compared with the frames, L1 + L2 with the lower half ×2 (as the VAE's own loss) and the
identity's mouth box ×``MOUTH_WEIGHT`` on top (as the diffusion losses), so the mouth's opening is
drawn to scale on every identity.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.models.vae import AutoencoderKL

from .diffusion import LatentSet, mouth_factor
from .vae import LOWER_WEIGHT, lower_half_weight, to_model_range


def decoder_parameters(vae: AutoencoderKL) -> list[torch.nn.Parameter]:
    """The parameters decoder fine-tuning trains (the encoder's stay frozen)."""
    vae.encoder.requires_grad_(False)
    return list(vae.decoder.requires_grad_(True).parameters())


def mouth_pixels(lat: LatentSet, frames: np.ndarray) -> torch.Tensor:
    """(b, 1, H, W) 1 on the pixels of the latent cells touching each frame's identity mouth box."""
    sessions = np.searchsorted(lat.data.starts, frames, side="right") - 1
    cells = lat.mouth[sessions]
    scale = lat.data.frames.shape[1] // cells.shape[-1]
    return cells.repeat_interleave(scale, -2).repeat_interleave(scale, -1)


def decoder_step_fn(vae: AutoencoderKL, lat: LatentSet, batch: int, device: torch.device | str = "cpu"):
    """One step: ``batch`` random frames decoded from their cached latents, weighted L1 + L2."""
    frames = lat.data.frames
    rows = lower_half_weight(frames.shape[1], LOWER_WEIGHT).to(device)

    def step(_: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        idx = np.sort(torch.randint(0, len(frames), (batch,), generator=gen).numpy())
        weight = rows * mouth_factor(mouth_pixels(lat, idx).to(device))
        target = to_model_range(frames[idx]).to(device)
        rec = vae.decode(vae.unscale_latent(lat.latents[idx].to(device)), frames_per_call=batch)
        err = rec - target
        loss = ((err.abs() + err.square()) * weight).mean()
        return loss, {"rec": float(loss.detach())}

    return step
