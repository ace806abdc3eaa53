"""The export manifest (``manifest.json``): which graphs exist, their tensors, hashes and versions.

Written by ``keyface export onnx``; read by the ONNX Runtime and TensorRT backends and by
``keyface build-engines``. Model hashes identify the weights a graph was made from, so a stale
export or engine is never used for different weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import BackendError
from .profiles import Profile

MANIFEST = "manifest.json"
FORMAT = "keyface-onnx/1"
Dim = int | str


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[Dim, ...]
    """Sizes; strings name a dynamic dimension listed in :attr:`GraphRecord.dims`."""
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dims": list(self.dims), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorInfo:
        return cls(data["name"], tuple(data["dims"]), data.get("dtype", "float32"))

    def shape(self, values: dict[str, int]) -> tuple[int, ...]:
        """Concrete shape with the dynamic dimensions filled from ``values``."""
        return tuple(values[d] if isinstance(d, str) else d for d in self.dims)


@dataclass
class GraphRecord:
    name: str
    file: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    dims: dict[str, tuple[int, int, int]]
    """Dynamic dimension → (min, opt, max)."""
    dtype: str = "fp32"
    source_hash: str = ""
    """Hash of the weights and export settings the graph was made from."""
    external_data: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """Free-form facts: node counts, seconds, bytes, guidance defaults."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "dims": {k: list(v) for k, v in self.dims.items()},
            "dtype": self.dtype,
            "source_hash": self.source_hash,
            "external_data": self.external_data,
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> GraphRecord:
        return cls(
            name=name,
            file=data["file"],
            inputs=[TensorInfo.from_dict(t) for t in data["inputs"]],
            outputs=[TensorInfo.from_dict(t) for t in data["outputs"]],
            dims={k: tuple(v) for k, v in data["dims"].items()},  # type: ignore[misc]
            dtype=data.get("dtype", "fp32"),
            source_hash=data.get("source_hash", ""),
            external_data=data.get("external_data"),
            info=data.get("info", {}),
        )

    def shapes(self, which: str = "opt") -> dict[str, tuple[int, ...]]:
        """Input shapes at the ``min``, ``opt`` or ``max`` end of every dynamic range."""
        idx = {"min": 0, "opt": 1, "max": 2}[which]
        values = {k: v[idx] for k, v in self.dims.items()}
        return {t.name: t.shape(values) for t in self.inputs}


@dataclass
class ExportManifest:
    profile: Profile
    model: dict[str, Any]
    """Bundle name, latent/image size, sampling defaults, per-module weight hashes."""
    versions: dict[str, str]
    graphs: dict[str, GraphRecord] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    """Graphs that were not exported, with the reason."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "profile": self.profile.to_dict(),
            "profile_key": self.profile.key,
            "model": self.model,
            "versions": self.versions,
            "graphs": {k: g.to_dict() for k, g in self.graphs.items()},
            "skipped": self.skipped,
        }

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ExportManifest:
        path = Path(folder) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackendError(
                f"{path}: no ONNX export here; run `keyface export onnx --weights DIR --out {folder}`"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise BackendError(f"{path}: unreadable export manifest ({exc})") from None
        if data.get("format") != FORMAT:
            raise BackendError(f"{path}: unsupported export format {data.get('format')!r}")
        return cls(
            profile=Profile.from_dict(data["profile"]),
            model=data["model"],
            versions=data["versions"],
            graphs={k: GraphRecord.from_dict(k, v) for k, v in data["graphs"].items()},
            skipped=data.get("skipped", {}),
        )

    def graph(self, name: str) -> GraphRecord:
        if name not in self.graphs:
            why = self.skipped.get(name, "it was not requested at export time")
            raise BackendError(f"the export has no {name!r} graph ({why}); exported: {sorted(self.graphs)}")
        return self.graphs[name]


def module_hash(module: nn.Module | None) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes); '' for None."""
    if module is None:
        return ""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
        if value.is_meta or not value.numel():  # meta: placeholder modules, never exported
            continue
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def combined_hash(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()
