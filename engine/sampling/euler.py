"""Euler EDM sampler (sgm ``EulerEDMSampler`` with s_churn 0: plain deterministic Euler)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models.conditioning import Conditioning
from .guiders import Guider

StepCallback = Callable[[int, torch.Tensor], None]


def sample_euler(
    guider: Guider,
    noise: torch.Tensor,
    cond: Conditioning,
    sigmas: torch.Tensor,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Integrate from pure noise along ``sigmas`` (descending, ending in 0).

    ``x₀ = noise·√(1+σ₀²)``; each step ``x ← x + (σ_{i+1} − σ_i)·(x − D̂(x, σ_i))/σ_i``.
    ``callback(i, x)`` sees x after update i (at σ_{i+1}).
    """
    x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0).to(noise.dtype)
    ones = x.new_ones(x.shape[0])
    for i in range(len(sigmas) - 1):
        sigma = ones * sigmas[i]
        denoised = guider(x, sigma, cond)
        d = (x - denoised) / sigma[:, None, None, None]
        x = x + (ones * sigmas[i + 1] - sigma)[:, None, None, None] * d
        if callback is not None:
            callback(i, x)
    return x
