"""ONNX Runtime backend: runs an export folder (``keyface export onnx``) on CPU, CUDA or TensorRT EPs.

Inputs and outputs are bound straight to torch tensors (``io_binding`` with ``data_ptr``), so no
host copies happen on the CPU and none on CUDA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import BackendError
from .graph_backend import GraphBackend
from .manifest import ExportManifest, GraphRecord

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
INSTALL_HINT = {
    "cuda": "pip install onnxruntime-gpu (and a CUDA GPU with its driver)",
    "tensorrt": "pip install onnxruntime-gpu tensorrt-cu12 (TensorRT execution provider)",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(
            "the ort backend needs onnxruntime: pip install onnxruntime (onnxruntime-gpu for CUDA)"
        ) from None
    return onnxruntime


def provider_list(names: tuple[str, ...], cache_dir: Path | None = None) -> list[Any]:
    """ORT provider entries for ``names`` (cpu, cuda, tensorrt); raises if one is missing here."""
    available = set(_ort().get_available_providers())
    out: list[Any] = []
    for name in names:
        if name not in PROVIDERS:
            raise BackendError(f"unknown ONNX Runtime provider {name!r}; choose from {', '.join(PROVIDERS)}")
        provider = PROVIDERS[name]
        if provider not in available:
            raise BackendError(
                f"ONNX Runtime here has no {provider} (available: {', '.join(sorted(available))}): "
                f"{INSTALL_HINT.get(name, 'reinstall onnxruntime')}"
            )
        if name == "tensorrt" and cache_dir is not None:
            out.append(
                (
                    provider,
                    {
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache_dir),
                        "trt_timing_cache_enable": True,
                    },
                )
            )
        else:
            out.append(provider)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


class OrtRunner:
    """One ONNX Runtime session run on torch tensors through IO binding."""

    def __init__(self, session: Any, record: GraphRecord, device: torch.device) -> None:
        self.session = session
        self.record = record
        self.device = device
        self.output = record.outputs[0].name

    def _bind_args(self) -> tuple[str, int]:
        return ("cuda", self.device.index or 0) if self.device.type == "cuda" else ("cpu", 0)

    def __call__(self, feed: dict[str, torch.Tensor], out_shape: tuple[int, ...]) -> torch.Tensor:
        kind, index = self._bind_args()
        binding = self.session.io_binding()
        alive = []
        for name, value in feed.items():
            tensor = value.detach().to(self.device, torch.float32).contiguous()
            alive.append(tensor)
            binding.bind_input(name, kind, index, np.float32, list(tensor.shape), tensor.data_ptr())
        out = torch.empty(out_shape, dtype=torch.float32, device=self.device)
        binding.bind_output(self.output, kind, index, np.float32, list(out.shape), out.data_ptr())
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        return out


class OrtBackend(GraphBackend):
    """Runs the graphs of one export folder with ONNX Runtime."""

    name = "ort"

    def __init__(
        self,
        folder: str | Path,
        providers: tuple[str, ...] = ("cpu",),
        device: torch.device | str | None = None,
        threads: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.manifest = ExportManifest.load(self.folder)
        self.ort = _ort()
        self.providers = provider_list(providers, self.folder / "ort-trt-cache")
        wants_cuda = any(p in ("cuda", "tensorrt") for p in providers)
        self.device = torch.device(device or ("cuda" if wants_cuda else "cpu"))
        self.threads = threads
        self._runners: dict[str, OrtRunner] = {}

    def describe(self) -> str:
        names = [p if isinstance(p, str) else p[0] for p in self.providers]
        return f"ort ({', '.join(names)}; profile {self.manifest.profile.key})"

    def runner(self, name: str) -> OrtRunner:
        if name not in self._runners:
            record = self.manifest.graph(name)
            options = self.ort.SessionOptions()
            options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            if self.threads:
                options.intra_op_num_threads = self.threads
            try:
                session = self.ort.InferenceSession(str(self.folder / record.file), options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise BackendError(f"ONNX Runtime could not load {record.file}: {exc}") from exc
            self._runners[name] = OrtRunner(session, record, self.device)
        return self._runners[name]

    def encode_moments(self, image: torch.Tensor) -> torch.Tensor:
        """``vae_encoder`` graph: images in [-1, 1] → ``[mean ; logvar]`` moments."""
        runner = self.runner("vae_encoder")
        channels, latent = runner.record.outputs[0].dims[1], runner.record.outputs[0].dims[2]
        outs = [
            runner({"image": part}, (part.shape[0], channels, latent, latent))  # type: ignore[arg-type]
            for part in image.split(runner.record.dims["rows"][2])
        ]
        return torch.cat(outs)
