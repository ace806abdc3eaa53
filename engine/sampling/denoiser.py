"""EDM denoiser with v-scaling (``VScalingWithEDMcNoise``) around any network callable."""

from __future__ import annotations

from typing import Protocol

import torch

from ..models.conditioning import Conditioning


class NetworkFn(Protocol):
    """One network evaluation on ``b`` clips of ``num_frames``: the unit every backend provides.

    ``x`` (b·t, 4, h, w) is already multiplied by c_in; returns the raw v-prediction.
    """

    def __call__(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Conditioning, num_frames: int) -> torch.Tensor: ...


def _col(v: torch.Tensor) -> torch.Tensor:
    return v[:, None, None, None]


def denoise(
    network: NetworkFn,
    x: torch.Tensor,
    sigma: torch.Tensor,
    cond: Conditioning,
    num_frames: int,
    max_clips_per_call: int | None = None,
) -> torch.Tensor:
    """``D(x, σ) = c_skip·x + c_out·F(c_in·x, ¼ ln σ)`` with σ per row (σ_data = 1).

    ``max_clips_per_call`` splits the batch into network calls of at most that many clips
    (the reference evaluates interpolation two segments at a time); None = one call.
    """
    sigma = sigma.to(x.dtype)
    c_skip = 1.0 / (sigma**2 + 1.0)
    c_out = -sigma / (sigma**2 + 1.0).sqrt()
    c_in = 1.0 / (sigma**2 + 1.0).sqrt()
    c_noise = 0.25 * sigma.log()
    x_in = x * _col(c_in)
    clips = cond.num_clips
    step = max_clips_per_call or clips
    outs = []
    for start in range(0, clips, step):
        stop = min(start + step, clips)
        rows = slice(start * num_frames, stop * num_frames)
        outs.append(network(x_in[rows], c_noise[rows], cond.clips(start, stop, num_frames), num_frames))
    out = torch.cat(outs).to(x.dtype)
    return x * _col(c_skip) + out * _col(c_out)
