"""Noise schedules: KeyFace's Align-Your-Steps (AYS) sigmas."""

from __future__ import annotations

import math

import torch

AYS_BASE = (700.0, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002)
"""The 11 AYS noise levels KeyFace samples with (σ_max 700, σ_min 0.002)."""


def ays_sigmas(num_steps: int = 10) -> torch.Tensor:
    """AYS sigmas (float64, descending, with a trailing 0).

    ``num_steps`` 10 or 11 gives the 11 base levels (KeyFace's ``num_steps: 10`` means 11 Euler
    updates, as in the reference); other counts log-linearly resample the base list to
    ``num_steps`` levels (the reference refuses fewer than 10; few-step distilled models need
    them), and 1 step is σ_max alone.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    base = torch.tensor(AYS_BASE, dtype=torch.float64)
    if num_steps in (10, 11):
        sigmas = base
    elif num_steps == 1:
        sigmas = base[:1]
    else:
        log_asc = torch.log(base.flip(0))
        xs = torch.linspace(0, 1, len(AYS_BASE), dtype=torch.float64)
        query = torch.linspace(0, 1, num_steps, dtype=torch.float64)
        sigmas = torch.exp(_interp(query, xs, log_asc)).flip(0)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """``numpy.interp`` for increasing ``xp``."""
    idx = torch.searchsorted(xp, x, right=True).clamp(1, len(xp) - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    y0, y1 = fp[idx - 1], fp[idx]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def apply_strength(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """Keep the last ``int(len·strength)`` sigmas (sgm's img2img ``strength``; 1.0 keeps all)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if strength == 1.0:
        return sigmas
    keep = min(int(len(sigmas) * strength), len(sigmas))
    return sigmas[len(sigmas) - keep :]


def c_noise(sigma: float) -> float:
    """The UNet's noise-level input for σ: ¼·ln σ."""
    return 0.25 * math.log(sigma)
