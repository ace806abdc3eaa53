"""What the ONNX Runtime and TensorRT backends share: exported graphs behind the Backend interface.

A subclass provides ``manifest`` (the export's :class:`ExportManifest`) and ``runner(name)`` (a
callable runner for one graph); guiders, networks and the decoder are built from those alike.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from ..bundle import SamplingDefaults
from ..sampling.denoiser import NetworkFn
from ..sampling.guiders import Guider
from .base import Backend, NetworkName
from .graph_calls import GraphDecoder, GraphGuider, GraphNetwork, GraphRunner
from .manifest import ExportManifest


class GraphBackend(Backend):
    manifest: ExportManifest

    @abstractmethod
    def runner(self, name: str) -> GraphRunner:
        """The runner of one exported graph (loaded on first use)."""

    def has(self, name: str) -> bool:
        return name in self.manifest.graphs

    def keyframe_guider(self, sampling: SamplingDefaults, num_frames: int = 14) -> Guider:
        if sampling.keyframe_guidance == "none":
            return GraphGuider(self.runner("keyframe_denoiser"), num_frames)
        guidance = (sampling.audio_scale, sampling.ref_scale)
        return GraphGuider(self.runner("keyframe_guided"), num_frames, guidance)

    def interpolation_guider(
        self, sampling: SamplingDefaults, num_frames: int = 14, max_clips_per_call: int | None = None
    ) -> Guider:
        plain = sampling.interpolation_guidance == "none" or not self.has("interpolation_guided")
        if plain or (sampling.autoguidance_scale == 1.0 and self.has("interpolation_denoiser")):
            return GraphGuider(self.runner("interpolation_denoiser"), num_frames, None, max_clips_per_call)
        return GraphGuider(
            self.runner("interpolation_guided"), num_frames, (sampling.autoguidance_scale,), max_clips_per_call
        )

    def network(self, name: NetworkName) -> NetworkFn:
        return GraphNetwork(self.runner(f"{name}_network"))

    def decode(self, z_unscaled: torch.Tensor) -> torch.Tensor:
        factor = int(self.manifest.model.get("vae_factor", 8))
        return GraphDecoder(self.runner("vae_decoder"), factor)(z_unscaled)
