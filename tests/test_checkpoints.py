"""Checkpoint reading: official DeepSpeed layout, precisions, and clear refusals of bad files."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import save_file

from engine.bundle import load_bundle, random_bundle, save_bundle
from engine.checkpoints import read_state_dict
from engine.errors import WeightsError
from engine.models.config import tiny_stage
from engine.models.stage import KeyFaceStage

from .conftest import golden


def official_style_state(stage: KeyFaceStage) -> dict[str, torch.Tensor]:
    state = {f"_forward_module.{k}": v for k, v in stage.file_state_dict().items()}
    state["_forward_module.loss_fn.lpips.net.0.weight"] = torch.zeros(3)  # ignored training extra
    state["_forward_module.first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)  # VAE, loaded elsewhere
    return state


def test_deepspeed_pt_layout_loads(tmp_path, keyframe_stage):
    path = tmp_path / "keyframe.pt"
    torch.save({"module": official_style_state(keyframe_stage), "ds_version": "0.14"}, path)
    stage = KeyFaceStage(tiny_stage("keyframe"))
    stage.load_file_state(read_state_dict(path), path)
    for (k, a), b in zip(keyframe_stage.state_dict().items(), stage.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_precision_on_load(tmp_path, keyframe_stage, dtype):
    path = tmp_path / "kf.safetensors"
    save_file({k: v.contiguous() for k, v in keyframe_stage.file_state_dict().items()}, str(path))
    stage = KeyFaceStage(tiny_stage("keyframe"))
    stage.load_file_state(read_state_dict(path), path, dtype)
    assert {p.dtype for p in stage.parameters()} == {dtype}


def corrupt(state: dict[str, torch.Tensor], how: str) -> dict[str, torch.Tensor]:
    state = dict(state)
    if how == "missing":
        del state["model.diffusion_model.input_blocks.1.1.proj_in.weight"]
    elif how == "shape":
        state["model.diffusion_model.out.2.weight"] = torch.zeros(4, 32, 1, 1)
    elif how == "extra":
        state["model.diffusion_model.surprise.weight"] = torch.zeros(2)
    return state


@pytest.mark.parametrize(
    "how,needle",
    [
        ("missing", "missing 1 tensor(s): network.diffusion_model.input_blocks.1.1.proj_in.weight"),
        ("shape", "wrong shape for 1: network.diffusion_model.out.2.weight (4, 32, 1, 1) != (4, 32, 3, 3)"),
        ("extra", "unexpected 1 tensor(s): network.diffusion_model.surprise.weight"),
    ],
)
def test_mismatched_checkpoint_is_refused_clearly(tmp_path, keyframe_stage, how, needle):
    path = tmp_path / "bad.safetensors"
    state = corrupt(keyframe_stage.file_state_dict(), how)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    stage = KeyFaceStage(tiny_stage("keyframe"))
    with pytest.raises(WeightsError) as err:
        stage.load_file_state(read_state_dict(path), path)
    assert str(path) in str(err.value) and needle in str(err.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_file_is_refused(tmp_path, keyframe_stage, suffix):
    path = tmp_path / f"kf{suffix}"
    state = {k: v.contiguous() for k, v in keyframe_stage.file_state_dict().items()}
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="unreadable or truncated"):
        read_state_dict(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(WeightsError, match="file not found"):
        read_state_dict(tmp_path / "nope.pt")
    with pytest.raises(WeightsError, match="weights folder not found"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(WeightsError, match="neither a KeyFace Live model"):
        load_bundle(tmp_path)


def test_pickled_objects_need_trust(tmp_path):
    path = tmp_path / "obj.pt"

    torch.save({"module": {"model.x": torch.zeros(1)}, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(WeightsError, match="--trust-weights"):
        read_state_dict(path)
    assert set(read_state_dict(path, trust_pickle=True)) == {"model.x"}


def test_native_bundle_round_trip(tmp_path):
    bundle = random_bundle(seed=3)
    save_bundle(bundle, tmp_path / "m")
    loaded = load_bundle(tmp_path / "m")
    for a, b in ((bundle.keyframe, loaded.keyframe), (bundle.vae, loaded.vae), (bundle.bad, loaded.bad)):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), k
    assert loaded.image_size == 128 and loaded.latent_size == 16


def test_fixture_bad_model_loads_with_its_own_mask(bad_network):
    g = golden("interpolation_bad_unet_tiny.safetensors")
    assert torch.equal(bad_network.learned_mask, g["model.learned_mask"].float())
