"""Train the demo VAE on synthetic frames and cache the dataset's latents.

Loss: L1 + L2 in [-1, 1] RGB (the lower half, where the mouth is, weighted ×2) plus a small KL
term. Afterwards ``scale_factor`` is set so that stored latents have unit standard deviation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.models.vae import AutoencoderKL

from .config import demo_vae
from .dataset import SessionSet
from .loop import LoopConfig, train

KL_WEIGHT = 1e-6
LOWER_WEIGHT = 2.0


def to_model_range(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (n, H, W, 3) → float (n, 3, H, W) in [-1, 1]."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def lower_half_weight(height: int, factor: float, device: torch.device | None = None) -> torch.Tensor:
    """(height, 1) row weights: 1 on the top half, ``factor`` on the bottom half."""
    w = torch.ones(height, 1, device=device)
    w[height // 2 :] = factor
    return w


def vae_step_fn(vae: AutoencoderKL, data: SessionSet, batch: int, device: torch.device | str = "cpu",
                crop: int = 32):
    """Random ``crop``×``crop`` crops (the VAE is fully convolutional): 4× cheaper steps at 64×64."""
    frames = data.frames
    size = frames.shape[1]
    crop = min(crop, size)
    weight = lower_half_weight(size, LOWER_WEIGHT).to(device)

    def step(_: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        idx = np.sort(torch.randint(0, len(frames), (batch,), generator=gen).numpy())
        offs = torch.randint(0, size - crop + 1, (2,), generator=gen).tolist()
        rows, cols = slice(offs[0], offs[0] + crop), slice(offs[1], offs[1] + crop)
        x = to_model_range(frames[idx, rows, cols]).to(device)
        moments = vae.encode_moments(x)
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean + torch.randn(mean.shape, generator=gen).to(device) * (0.5 * logvar).exp()
        rec = vae.decode(z, frames_per_call=batch)
        err = rec - x
        rec_loss = ((err.abs() + err.square()) * weight[rows]).mean()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean()
        return rec_loss + KL_WEIGHT * kl, {"rec": float(rec_loss.detach()), "kl": float(kl.detach())}

    return step


def train_vae(data: SessionSet, out: Path, steps: int, batch: int = 16, lr: float = 5e-4, seed: int = 0,
              log=None, device: torch.device | str = "cpu") -> AutoencoderKL:
    """Train (or resume) the demo VAE; ``out/vae.pt`` is the checkpoint."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(demo_vae()).to(device)
    cfg = LoopConfig(steps=steps, lr=lr, seed=seed, warmup=20)
    train(vae, vae_step_fn(vae, data, batch, device), cfg, out / "vae.pt", desc="vae", log=log)
    return vae


@torch.no_grad()
def encode_frames(vae: AutoencoderKL, frames: np.ndarray, chunk: int = 256) -> torch.Tensor:
    """Posterior-mode latents in VAE units (n, 4, h, w)."""
    device = vae.encoder.conv_in.weight.device
    outs = [vae.encode_mode(to_model_range(frames[i : i + chunk]).to(device)).cpu() for i in
            tqdm(range(0, len(frames), chunk), desc="encode", unit="chunk", mininterval=2.0)]
    return torch.cat(outs)


def calibrate_scale(vae: AutoencoderKL, latents: torch.Tensor) -> AutoencoderKL:
    """Return ``vae`` with ``scale_factor`` = 1 / std of its latents (stored latents ~ unit std)."""
    scale = float(1.0 / latents.std())
    new = AutoencoderKL(demo_vae(scale_factor=scale))
    new.load_state_dict(vae.state_dict())
    return new.eval().requires_grad_(False)
