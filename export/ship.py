"""Write a trained demo model as a native bundle (fp16 safetensors + keyface.json + identity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from engine.bundle import ModelBundle, save_bundle


def save_identity_image(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def ship(bundle: ModelBundle, out: Path, identity_image: Path | None, half: bool = True) -> Path:
    """Save ``bundle`` to ``out`` (weights in fp16 when ``half``; load_bundle casts back)."""
    if half:
        for module in (bundle.keyframe, bundle.interpolation, bundle.vae):
            module.half()
    try:
        return save_bundle(bundle, out, identity_image)
    finally:
        if half:
            for module in (bundle.keyframe, bundle.interpolation, bundle.vae):
                module.float()


def bundle_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
