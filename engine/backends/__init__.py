"""Inference backends behind one interface (:class:`Backend`): ``torch``, ``ort`` and ``trt``.

Choosing one is a single value — ``load_backend(name, bundle)`` or ``$KEYFACE_BACKEND`` — and the
sampler and scheduler code stays the same. ``ort`` and ``trt`` run ONNX exports, found (or made,
for ``ort``) in ``$KEYFACE_CACHE/onnx/<model>-<profile>/`` unless a folder is given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..bundle import ModelBundle
from .base import Backend, BackendError, NetworkName
from .profiles import Profile, parse_profile

BACKENDS = ("torch", "ort", "trt")
BACKEND_ENV = "KEYFACE_BACKEND"

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "NetworkName",
    "Profile",
    "default_backend_name",
    "ensure_export",
    "load_backend",
    "parse_profile",
]


def default_backend_name() -> str:
    """``$KEYFACE_BACKEND`` or ``torch``."""
    return os.environ.get(BACKEND_ENV) or "torch"


def ensure_export(
    bundle: ModelBundle,
    profile: Profile,
    folder: str | Path | None = None,
    create: bool = True,
    graphs: list[str] | None = None,
) -> Path:
    """The ONNX export folder of ``bundle`` for ``profile``; exported first when missing.

    ``graphs`` names graphs that must be present (default: any existing export will do; a new
    one gets the default groups).

    Without ``folder`` the cache location is keyed by the weights' hash and the profile, so an
    export is never reused for other weights. A given ``folder`` must hold an export of these
    weights (checked by hash).
    """
    from export.onnx.exporter import bundle_fingerprint, export_bundle

    from .manifest import MANIFEST, ExportManifest
    from .trt_cache import default_cache_dir

    if folder is None:
        folder = default_cache_dir() / "onnx" / f"{bundle_fingerprint(bundle)}-{profile.key}"
    folder = Path(folder)
    missing = graphs
    if (folder / MANIFEST).is_file():
        manifest = ExportManifest.load(folder)
        _check_hashes(manifest, bundle, folder)
        missing = [g for g in graphs or [] if g not in manifest.graphs]
        if not missing:
            return folder
    if not create:
        raise BackendError(f"{folder}: no ONNX export; run `keyface export onnx --out {folder}` first")
    print(f"exporting ONNX graphs to {folder} (once per model and profile)", file=sys.stderr)
    export_bundle(bundle, folder, profile, missing)
    return folder


def _check_hashes(manifest: Any, bundle: ModelBundle, folder: Path) -> None:
    from .manifest import module_hash

    modules = {
        "keyframe": bundle.keyframe.network,
        "interpolation": bundle.interpolation.network,
        "bad": bundle.bad,
        "vae_decoder": bundle.vae.decoder,
    }
    for name, expected in manifest.model.get("hashes", {}).items():
        if name in modules and module_hash(modules[name]) != expected:
            raise BackendError(f"{folder}: exported from different {name} weights; re-export it")


def load_backend(
    name: str | None,
    bundle: ModelBundle,
    profile: str | Profile | None = None,
    onnx_dir: str | Path | None = None,
    graphs: list[str] | None = None,
    **options: Any,
) -> Backend:
    """Make the named backend (None = :func:`default_backend_name`) for ``bundle``.

    Options: torch — ``compile``, ``cuda_graphs``; ort — ``providers`` (cpu, cuda, tensorrt),
    ``threads``, ``device``; trt — ``cache_dir``, ``device``. ``graphs``: graphs the export must
    hold (exported when missing).
    """
    name = name or default_backend_name()
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(bundle, **options)
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    if name == "trt":
        from .trt_cache import require_tensorrt

        require_tensorrt()  # fail before any export work
    resolved = parse_profile(profile)
    folder = ensure_export(bundle, resolved, onnx_dir, graphs=graphs)
    if name == "ort":
        from .ort_backend import OrtBackend

        return OrtBackend(folder, **options)
    from .trt_backend import TrtBackend

    return TrtBackend(folder, **options)
