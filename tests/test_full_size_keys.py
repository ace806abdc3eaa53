"""Full-size (released) networks built on the meta device match the release key for key."""

from __future__ import annotations

import json

import pytest
import torch

from engine.models.config import interpolation_stage_full, keyframe_stage_full
from engine.models.stage import KeyFaceStage

from .conftest import KEYFACE


@pytest.mark.parametrize(
    "name,config", [("keyframe", keyframe_stage_full), ("interpolation", interpolation_stage_full)]
)
def test_full_size_keys_shapes_and_counts(name, config):
    ref = json.loads((KEYFACE / f"{name}_full_keys.json").read_text())
    with torch.device("meta"):
        stage = KeyFaceStage(config())
    ours = {k: list(v.shape) for k, v in stage.file_state_dict().items()}
    expected = dict(ref["groups"]["model"])
    expected.update({k: v for k, v in ref["groups"]["conditioner"].items() if ".linear." in k})
    assert sorted(ours) == sorted(expected)
    assert ours == expected
    unet_params = sum(p.numel() for p in stage.network.diffusion_model.parameters())
    assert unet_params == ref["param_counts"]["model.diffusion_model (VideoUNet)"]
    assert sum(p.numel() for p in stage.network.parameters()) == ref["param_counts"]["model"]
    assert sum(p.numel() for p in stage.audio_projection.parameters()) == 1_573_888
