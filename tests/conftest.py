"""Shared helpers: golden fixtures and tiny models built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.models.config import tiny_stage
from engine.models.stage import KeyFaceStage, load_bad_network

FIXTURES = Path(__file__).parent / "fixtures"
KEYFACE = FIXTURES / "keyface"

torch.set_num_threads(2)


def golden(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(KEYFACE / name))


def tiny_stage_from_fixtures(kind: str, unet_file: str, sampler_file: str) -> KeyFaceStage:
    """A tiny stage loaded (strictly) from the fixture files (UNet + audio linear), in float32."""
    state = {k: v for k, v in golden(unet_file).items() if k.startswith("model.")}
    state.update({k: v for k, v in golden(sampler_file).items() if k.startswith("conditioner.")})
    stage = KeyFaceStage(tiny_stage(kind))  # type: ignore[arg-type]
    stage.load_file_state(state, unet_file, torch.float32)
    return stage.eval()


@pytest.fixture(scope="session")
def keyframe_stage() -> KeyFaceStage:
    return tiny_stage_from_fixtures("keyframe", "keyframe_unet_tiny.safetensors", "keyframe_sampler_tiny.safetensors")


@pytest.fixture(scope="session")
def interpolation_stage() -> KeyFaceStage:
    return tiny_stage_from_fixtures(
        "interpolation", "interpolation_unet_tiny.safetensors", "interpolation_sampler_tiny.safetensors"
    )


@pytest.fixture(scope="session")
def bad_network():
    file = "interpolation_bad_unet_tiny.safetensors"
    state = {k: v for k, v in golden(file).items() if k.startswith("model.")}
    return load_bad_network(tiny_stage("interpolation"), state, file, torch.float32).eval()
