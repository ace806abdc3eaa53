"""Guiders, networks and decoders backed by exported graphs (shared by ONNX Runtime and TensorRT).

A :class:`GraphRunner` runs one graph on named float32 tensors and fills an output of a known
shape; the classes here turn it into the engine's :class:`Guider`, :class:`NetworkFn` and decode
callables, splitting batches larger than the graph's profile into several calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..models.conditioning import Conditioning
from .base import BackendError
from .manifest import GraphRecord


class GraphRunner(Protocol):
    record: GraphRecord

    def __call__(self, feed: dict[str, torch.Tensor], out_shape: tuple[int, ...]) -> torch.Tensor:
        """Run the graph; returns its single float32 output of shape ``out_shape``."""
        ...


def _clip_limit(record: GraphRecord, num_frames: int, cond: Conditioning, requested: int | None) -> int:
    fixed = next(t.dims[1] for t in record.inputs if t.name == "crossattn")
    if num_frames != fixed or cond.crossattn.shape[1] != fixed:
        raise BackendError(
            f"graph {record.name} was exported for {fixed}-frame clips, got {num_frames}; "
            "re-export with a profile whose frames match (--profile default:frames=N)"
        )
    most = record.dims["clips"][2]
    return min(most, requested) if requested else most


def _feed(record: GraphRecord, values: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    feed = {}
    for t in record.inputs:
        value = values.get(t.name)
        if value is None:
            raise BackendError(f"graph {record.name} needs input {t.name!r}")
        feed[t.name] = value
    return feed


@dataclass
class GraphGuider:
    """A guided (or plain) denoiser graph as a :class:`~engine.sampling.guiders.Guider`."""

    runner: GraphRunner
    num_frames: int = 14
    guidance: tuple[float, ...] | None = None
    max_clips_per_call: int | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        record = self.runner.record
        step = _clip_limit(record, self.num_frames, cond, self.max_clips_per_call)
        guidance = None if self.guidance is None else torch.tensor(self.guidance, dtype=torch.float32)
        t, outs = self.num_frames, []
        for start in range(0, cond.num_clips, step):
            stop = min(start + step, cond.num_clips)
            rows = slice(start * t, stop * t)
            part = cond.clips(start, stop, t)
            feed = _feed(
                record,
                {
                    "x": x[rows],
                    "sigma": sigma[rows],
                    "concat": part.concat,
                    "crossattn": part.crossattn,
                    "vector": part.vector,
                    "guidance": guidance,
                },
            )
            outs.append(self.runner(feed, tuple(x[rows].shape)))
        return torch.cat(outs).to(x.device, x.dtype)


@dataclass
class GraphNetwork:
    """A raw network graph as a :class:`~engine.sampling.denoiser.NetworkFn`."""

    runner: GraphRunner

    def __call__(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Conditioning, num_frames: int) -> torch.Tensor:
        record = self.runner.record
        step = _clip_limit(record, num_frames, cond, None)
        outs = []
        for start in range(0, cond.num_clips, step):
            stop = min(start + step, cond.num_clips)
            rows = slice(start * num_frames, stop * num_frames)
            part = cond.clips(start, stop, num_frames)
            feed = _feed(
                record,
                {
                    "x": x[rows],
                    "c_noise": c_noise[rows],
                    "concat": part.concat,
                    "crossattn": part.crossattn,
                    "vector": part.vector,
                },
            )
            outs.append(self.runner(feed, tuple(x[rows].shape)))
        return torch.cat(outs).to(x.device, x.dtype)


@dataclass
class GraphDecoder:
    """The ``vae_decoder`` graph: unscaled latents → images, in calls of whole decoder clips."""

    runner: GraphRunner
    factor: int = 8

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        record = self.runner.record
        clip = int(record.info.get("decode_frames", 1))
        if z.shape[0] % clip:
            raise BackendError(f"decoding needs a multiple of {clip} frames, got {z.shape[0]}")
        step = max(clip, record.dims["rows"][2] // clip * clip)
        outs = []
        for chunk in z.split(step):
            n, _, h, w = chunk.shape
            outs.append(self.runner({"z": chunk}, (n, 3, h * self.factor, w * self.factor)))
        return torch.cat(outs).to(z.device)
