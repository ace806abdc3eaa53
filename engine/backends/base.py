"""The one interface every inference backend (PyTorch, ONNX Runtime, TensorRT) implements.

The sampler only ever sees :class:`~engine.sampling.guiders.Guider` objects and the renderer a
decode function, so swapping the backend changes no sampling or scheduling code:

* :meth:`Backend.keyframe_guider` / :meth:`Backend.interpolation_guider` — the guided denoiser of
  one stage, ``D̂(x, σ, cond)``; exported backends run it as **one graph call per sampling step**
  (guidance branches folded into the graph);
* :meth:`Backend.network` — the raw v-prediction :class:`~engine.sampling.denoiser.NetworkFn` of the
  keyframe, interpolation or autoguidance ("bad") network (exported backends need the optional
  ``networks`` graphs for it);
* :meth:`Backend.decode` — VAE decode of unscaled latents, one ``decode_frames`` clip per row group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch

from ..bundle import SamplingDefaults
from ..errors import KeyFaceError
from ..sampling.denoiser import NetworkFn
from ..sampling.guiders import Guider

NetworkName = Literal["keyframe", "interpolation", "bad"]
NETWORK_NAMES: tuple[NetworkName, ...] = ("keyframe", "interpolation", "bad")


class BackendError(KeyFaceError):
    """A backend cannot run here (missing package, no GPU, missing engine or graph)."""


class Backend(ABC):
    """Runs the networks of one model bundle."""

    name: str = "backend"

    @abstractmethod
    def keyframe_guider(self, sampling: SamplingDefaults, num_frames: int = 14) -> Guider:
        """Guided keyframe denoiser (audio/reference guidance unless ``keyframe_guidance='none'``)."""

    @abstractmethod
    def interpolation_guider(
        self, sampling: SamplingDefaults, num_frames: int = 14, max_clips_per_call: int | None = None
    ) -> Guider:
        """Interpolation denoiser with autoguidance (good and bad networks) where configured."""

    @abstractmethod
    def network(self, name: NetworkName) -> NetworkFn:
        """The raw network ``F(c_in·x, c_noise, cond, num_frames) → v``."""

    @abstractmethod
    def decode(self, z_unscaled: torch.Tensor) -> torch.Tensor:
        """``(n, 4, h, w)`` unscaled latents → ``(n, 3, H, W)`` images in ~[-1, 1]."""

    def describe(self) -> str:
        """One line for logs and benchmark tables."""
        return self.name
