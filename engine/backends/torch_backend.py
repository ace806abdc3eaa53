"""PyTorch backend: the bundle's own modules (eager), optionally ``torch.compile``d and, on CUDA,
replayed through CUDA graphs (one captured graph per input shape)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..bundle import ModelBundle, SamplingDefaults
from ..models.conditioning import Conditioning
from ..sampling.denoiser import NetworkFn
from ..sampling.guiders import AudioRefGuider, AutoGuider, Guider, PlainGuider
from .base import Backend, BackendError, NetworkName


@dataclass
class _Captured:
    graph: Any
    inputs: list[torch.Tensor]
    output: torch.Tensor


@dataclass
class CudaGraphGuider:
    """Replays a guider through CUDA graphs: inputs are copied into static buffers per shape."""

    guider: Guider
    warmup: int = 2
    graphs: dict[tuple, _Captured] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.guider.num_frames

    @staticmethod
    def _flat(x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> list[torch.Tensor]:
        parts = [x, sigma, cond.concat, cond.crossattn]
        return parts + ([cond.vector] if cond.vector is not None else [])

    def _call(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        vector = tensors[4] if len(tensors) > 4 else None
        return self.guider(tensors[0], tensors[1], Conditioning(tensors[2], tensors[3], vector))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        flat = self._flat(x, sigma, cond)
        key = tuple((tuple(t.shape), t.dtype) for t in flat)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture([t.clone() for t in flat])
            self.graphs[key] = entry
        for static, value in zip(entry.inputs, flat, strict=True):
            static.copy_(value)
        entry.graph.replay()
        return entry.output.clone()

    def _capture(self, static: list[torch.Tensor]) -> _Captured:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._call(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self._call(static)
        return _Captured(graph, static, output)


class TorchBackend(Backend):
    """Eager PyTorch on the bundle's device (the reference behaviour)."""

    name = "torch"

    def __init__(self, bundle: ModelBundle, compile: bool = False, cuda_graphs: bool = False) -> None:
        self.bundle = bundle
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        device = bundle.keyframe.audio_projection.linear.weight.device
        if cuda_graphs and device.type != "cuda":
            raise BackendError(f"CUDA graphs need the model on a CUDA GPU; it is on {device}")
        self._compiled: dict[str, NetworkFn] = {}

    def describe(self) -> str:
        extras = [n for n, on in (("compile", self.compile), ("cuda-graphs", self.cuda_graphs)) if on]
        return "torch" + (f" ({', '.join(extras)})" if extras else "")

    def network(self, name: NetworkName) -> NetworkFn:
        modules = {"keyframe": self.bundle.keyframe, "interpolation": self.bundle.interpolation, "bad": self.bundle.bad}
        module = modules[name]
        if module is None:
            raise BackendError("this model has no autoguidance (bad) network")
        if not self.compile:
            return module
        if name not in self._compiled:
            self._compiled[name] = torch.compile(module, dynamic=False)  # type: ignore[assignment]
        return self._compiled[name]

    def _wrap(self, guider: Guider) -> Guider:
        return CudaGraphGuider(guider) if self.cuda_graphs else guider

    def keyframe_guider(self, sampling: SamplingDefaults, num_frames: int = 14) -> Guider:
        net = self.network("keyframe")
        if sampling.keyframe_guidance == "none":
            return self._wrap(PlainGuider(net, num_frames))
        return self._wrap(AudioRefGuider(net, sampling.audio_scale, sampling.ref_scale, num_frames))

    def interpolation_guider(
        self, sampling: SamplingDefaults, num_frames: int = 14, max_clips_per_call: int | None = None
    ) -> Guider:
        good = self.network("interpolation")
        if sampling.interpolation_guidance == "none" or self.bundle.bad is None:
            return self._wrap(PlainGuider(good, num_frames))
        return self._wrap(
            AutoGuider(good, self.network("bad"), sampling.autoguidance_scale, num_frames, max_clips_per_call)
        )

    def decode(self, z_unscaled: torch.Tensor) -> torch.Tensor:
        return self.bundle.vae.decode(z_unscaled, frames_per_call=1)
