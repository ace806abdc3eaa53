"""Where the default model lives and how the device is chosen."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import WeightsError

DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "demo"
WEIGHTS_ENV = "KEYFACE_WEIGHTS"


def default_weights() -> Path:
    """``$KEYFACE_WEIGHTS`` if set, else the demo avatar model shipped in the repository."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    if (DEMO_MODEL_DIR / "keyface.json").is_file():
        return DEMO_MODEL_DIR
    raise WeightsError(
        "no model is installed: the demo avatar model is not in this checkout yet. Pass "
        "--weights DIR (a KeyFace Live model folder, or the official KeyFace release fetched with "
        "`keyface fetch`), or make a random test model with `keyface init-model --out DIR`"
    )


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WeightsError("--device cuda was asked for but no CUDA GPU is available")
    return device
