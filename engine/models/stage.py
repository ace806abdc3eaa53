"""A KeyFace stage: its network (wrapper + VideoUNet) and its audio projection, with loading.

File key layout (official names, after the DeepSpeed prefix is stripped):

* ``model.diffusion_model.*`` (and ``model.learned_mask``, interpolation) → ``network.*``
* ``conditioner.embedders.3.linear.*`` (keyframe) / ``conditioner.embedders.1.linear.*``
  (interpolation) → ``audio_projection.linear.*``
* ``first_stage_model.*`` (VAE), ``loss_fn.*`` (training LPIPS) and the interpolation
  conditioner's unused autoencoder are ignored here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import load_strict, prefix_rename
from .conditioning import AudioProjection, Conditioning
from .config import StageConfig
from .networks import InterpolationNetwork, KeyframeNetwork

AUDIO_EMBEDDER_INDEX = {"keyframe": 3, "interpolation": 1}
IGNORED_PREFIXES = ("first_stage_model.", "loss_fn.", "conditioner.embedders.0.", "model_ema.")


def build_network(config: StageConfig) -> KeyframeNetwork | InterpolationNetwork:
    if config.kind == "keyframe":
        return KeyframeNetwork(config.unet)
    return InterpolationNetwork(config.unet, config.latent_size)


class KeyFaceStage(nn.Module):
    """Network + audio projection of one stage (keyframe or interpolation)."""

    def __init__(self, config: StageConfig) -> None:
        super().__init__()
        self.config = config
        self.network = build_network(config)
        self.audio_projection = AudioProjection(config.audio.audio_dim, config.audio.linear_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.audio_projection.linear.weight.dtype

    def project_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(b, t, 2, audio_dim) raw per-frame features → (b, t, context_dim) tokens."""
        return self.audio_projection(audio)

    def file_rename(self):
        idx = AUDIO_EMBEDDER_INDEX[self.config.kind]
        return prefix_rename(
            {"model.": "network.", f"conditioner.embedders.{idx}.linear.": "audio_projection.linear."},
            ignore=IGNORED_PREFIXES,
        )

    def load_file_state(
        self, state: Mapping[str, torch.Tensor], source: str | Path, dtype: torch.dtype | None = None
    ) -> None:
        load_strict(self, state, source, self.file_rename(), dtype)

    def file_state_dict(self) -> dict[str, torch.Tensor]:
        """Our tensors under the official file names (inverse of :meth:`load_file_state`)."""
        idx = AUDIO_EMBEDDER_INDEX[self.config.kind]
        out = {}
        for key, value in self.state_dict().items():
            if key.startswith("network."):
                out["model." + key[len("network.") :]] = value
            else:
                out[f"conditioner.embedders.{idx}.linear." + key.split("linear.", 1)[1]] = value
        return out

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Conditioning, num_frames: int) -> torch.Tensor:
        return self.network(x, c_noise, cond, num_frames)


def load_bad_network(
    config: StageConfig,
    state: Mapping[str, torch.Tensor],
    source: str | Path,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> InterpolationNetwork:
    """The autoguidance "bad" interpolation network: only ``diffusion_model`` and ``learned_mask``."""
    with torch.device("meta"):
        network = build_network(config)
    assert isinstance(network, InterpolationNetwork)

    def rename(key: str) -> str | None:
        if "diffusion_model." in key:
            return "diffusion_model." + key.split("diffusion_model.", 1)[1]
        if key.endswith("learned_mask"):
            return "learned_mask"
        return None if key.startswith((*IGNORED_PREFIXES, "conditioner.")) else key

    load_strict(network, state, source, rename, dtype)
    return network.to(device)
