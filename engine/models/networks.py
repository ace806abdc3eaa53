"""Network wrappers: turn a :class:`Conditioning` into the VideoUNet's inputs.

``KeyframeNetwork`` is sgm's OpenAIWrapper (identity latent repeated per frame and concatenated);
``InterpolationNetwork`` is KeyFace's InterpolationWrapper (anchors, learned mask, binary mask).
Both take ``x`` already multiplied by ``c_in`` and return the raw v-prediction.
"""

from __future__ import annotations

import torch
from torch import nn

from .conditioning import Conditioning
from .config import UNetConfig
from .unet import VideoUNet


class KeyframeNetwork(nn.Module):
    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.diffusion_model = VideoUNet(config)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Conditioning, num_frames: int) -> torch.Tensor:
        concat = cond.concat.to(x.dtype).repeat_interleave(num_frames, dim=0)
        unet_in = torch.cat([x, concat], dim=1)
        indicator = torch.zeros(cond.num_clips, num_frames, device=x.device)
        return self.diffusion_model(unet_in, c_noise, cond.crossattn, cond.vector, num_frames, indicator)


class InterpolationNetwork(nn.Module):
    def __init__(self, config: UNetConfig, latent_size: int) -> None:
        super().__init__()
        self.diffusion_model = VideoUNet(config)
        self.learned_mask = nn.Parameter(torch.zeros(4, latent_size, latent_size))

    def build_input(self, x: torch.Tensor, concat: torch.Tensor, num_frames: int) -> torch.Tensor:
        """9-channel input: per frame ``[x (4), cond (4), mask (1)]`` with
        cond = ``[start, M × (t−2), end]`` and mask = ``[1, 0 × (t−2), 1]``."""
        b = concat.shape[0]
        h, w = x.shape[-2:]
        concat = concat.to(x.dtype)
        start, end = concat[:, None, :4], concat[:, None, 4:]
        middle = self.learned_mask.to(x.dtype).expand(b, num_frames - 2, 4, h, w)
        cond = torch.cat([start, middle, end], dim=1)
        mask = torch.zeros(b, num_frames, 1, h, w, dtype=x.dtype, device=x.device)
        mask[:, 0] = 1
        mask[:, -1] = 1
        frames = torch.cat([x.reshape(b, num_frames, -1, h, w), cond, mask], dim=2)
        return frames.reshape(b * num_frames, -1, h, w)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Conditioning, num_frames: int) -> torch.Tensor:
        unet_in = self.build_input(x, cond.concat, num_frames)
        indicator = torch.zeros(cond.num_clips, num_frames, device=x.device)
        return self.diffusion_model(unet_in, c_noise, cond.crossattn, None, num_frames, indicator)
