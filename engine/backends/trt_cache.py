"""TensorRT build plans and the engine cache: everything up to the builder call, testable without
TensorRT.

An engine is cached under ``<cache>/trt/<gpu>/trt-<version>/<graph>-<key>.plan`` where the key
hashes the GPU (name and compute capability), the TensorRT version, the graph's source hash
(weights + export settings), the profile and the build options. Precision is part of the graph
(strong typing): fp16/bf16 profiles export fp16/bf16 weights; fp8 needs Q/DQ nodes in the graph.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from .base import BackendError
from .manifest import ExportManifest, GraphRecord

CACHE_ENV = "KEYFACE_CACHE"
TRT_INSTALL = "pip install tensorrt-cu12 (or tensorrt-cu13 to match your CUDA driver), on a machine with an NVIDIA GPU"
Shape = tuple[int, ...]


def default_cache_dir() -> Path:
    """``$KEYFACE_CACHE`` or ``~/.cache/keyface``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "keyface")


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or a :class:`BackendError` saying what to install."""
    try:
        import tensorrt
    except ImportError:
        raise BackendError(f"the trt backend needs TensorRT's Python package: {TRT_INSTALL}") from None
    return tensorrt


@dataclass(frozen=True)
class GpuInfo:
    name: str
    capability: tuple[int, int]

    @classmethod
    def current(cls, index: int = 0) -> GpuInfo:
        import torch

        if not torch.cuda.is_available():
            raise BackendError(
                "TensorRT needs an NVIDIA GPU and this machine has none "
                "(torch.cuda.is_available() is False); use --backend ort or torch"
            )
        return cls(torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)))  # type: ignore[arg-type]

    @property
    def slug(self) -> str:
        name = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return f"{name}-sm{self.capability[0]}{self.capability[1]}"


@dataclass(frozen=True)
class BuildPlan:
    """What one engine is built from: the graph file, shape ranges and options."""

    graph: str
    onnx_file: str
    shapes: dict[str, tuple[Shape, Shape, Shape]]
    """Dynamic inputs → (min, opt, max) shapes: one optimization profile."""
    precision: str
    source_hash: str
    profile_key: str
    fp8: bool = False
    workspace_gb: float = 8.0

    def key(self, gpu: GpuInfo, trt_version: str) -> str:
        data = asdict(self)
        data.pop("onnx_file")
        data.update(gpu=[gpu.name, list(gpu.capability)], tensorrt=trt_version)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]

    def engine_path(self, cache: Path, gpu: GpuInfo, trt_version: str) -> Path:
        return Path(cache) / "trt" / gpu.slug / f"trt-{trt_version}" / f"{self.graph}-{self.key(gpu, trt_version)}.plan"


def timing_cache_path(cache: Path, gpu: GpuInfo, trt_version: str) -> Path:
    """One timing cache per GPU and TensorRT version, shared by all builds."""
    return Path(cache) / "trt" / gpu.slug / f"trt-{trt_version}" / "timing.cache"


def has_qdq(onnx_path: Path) -> bool:
    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def plan_for(
    record: GraphRecord, folder: Path, profile_key: str, fp8: bool = False, workspace_gb: float = 8.0
) -> BuildPlan:
    """The build plan of one exported graph (raises if fp8 is asked of a graph without Q/DQ)."""
    lo, opt, hi = (record.shapes(w) for w in ("min", "opt", "max"))
    dynamic = {t.name for t in record.inputs if any(isinstance(d, str) for d in t.dims)}
    onnx_file = Path(folder) / record.file
    if fp8 and not has_qdq(onnx_file):
        raise BackendError(
            f"{record.name}: fp8 needs an explicitly quantized graph (QuantizeLinear/DequantizeLinear "
            "nodes, e.g. from NVIDIA ModelOpt's ONNX fp8 quantization); this export has none"
        )
    return BuildPlan(
        graph=record.name,
        onnx_file=str(onnx_file),
        shapes={n: (lo[n], opt[n], hi[n]) for n in sorted(dynamic)},
        precision=record.dtype,
        source_hash=record.source_hash,
        profile_key=profile_key,
        fp8=fp8,
        workspace_gb=workspace_gb,
    )


def plans(
    folder: Path, graphs: list[str] | None = None, fp8: bool = False, workspace_gb: float = 8.0
) -> list[BuildPlan]:
    """Build plans for the graphs of an export folder (all UNet, VAE and audio graphs by default)."""
    manifest = ExportManifest.load(folder)
    names = graphs or list(manifest.graphs)
    return [
        plan_for(
            manifest.graph(n),
            folder,
            manifest.profile.key,
            fp8 and ("guided" in n or "network" in n or "denoiser" in n),
            workspace_gb,
        )
        for n in names
    ]
