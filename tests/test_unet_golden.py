"""The VideoUNet and the interpolation wrapper reproduce the reference's tiny golden outputs."""

from __future__ import annotations

import pytest
import torch

from engine.models.conditioning import Conditioning
from engine.models.unet import VideoUNet

from .conftest import golden

ATOL = 1e-4  # fixture README: suggested float32 tolerance for UNet outputs


def run_unet(unet: VideoUNet, g: dict[str, torch.Tensor], indicator: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return unet(g["golden.x"], g["golden.timesteps"], g["golden.context"], g.get("golden.y"), 14, indicator)


@pytest.mark.parametrize("stage_name", ["keyframe_stage", "interpolation_stage"])
def test_unet_output_and_intermediates(stage_name, request):
    stage = request.getfixturevalue(stage_name)
    file = "keyframe_unet_tiny.safetensors" if stage_name == "keyframe_stage" else "interpolation_unet_tiny.safetensors"
    g = golden(file)
    unet = stage.network.diffusion_model
    seen: dict[str, torch.Tensor] = {}

    def record(name: str, module: torch.nn.Module, with_input: bool = False):
        def hook(_module, inputs, output) -> None:
            seen[f"{name}_out"] = output
            if with_input:
                seen[f"{name}_in"] = inputs[0]

        return module.register_forward_hook(hook)

    hooks = [
        record("time_embed", unet.time_embed),
        record("label_emb", unet.label_emb, with_input=True),
    ]
    out = run_unet(unet, g, g["golden.image_only_indicator"])
    torch.testing.assert_close(out, g["golden.out"], atol=ATOL, rtol=0)
    # The fixture's middle_block_out was recorded during its indicator = ones run.
    hooks.append(record("middle_block", unet.middle_block))
    ones = run_unet(unet, g, torch.ones_like(g["golden.image_only_indicator"]))
    torch.testing.assert_close(ones, g["golden.out_image_only_indicator_ones"], atol=ATOL, rtol=0)
    for h in hooks:
        h.remove()
    assert len(seen) == 4
    for name, value in seen.items():
        torch.testing.assert_close(value, g[f"golden.intermediate.{name}"], atol=ATOL, rtol=0)


def test_interpolation_wrapper(interpolation_stage):
    g = golden("interpolation_unet_tiny.safetensors")
    net = interpolation_stage.network
    built = net.build_input(g["golden.wrapper.x_noisy"], g["golden.wrapper.concat"], 14)
    torch.testing.assert_close(built, g["golden.wrapper.unet_input_9ch"], atol=0, rtol=0)
    cond = Conditioning(concat=g["golden.wrapper.concat"], crossattn=g["golden.context"])
    with torch.no_grad():
        out = net(g["golden.wrapper.x_noisy"], g["golden.timesteps"], cond, 14)
    torch.testing.assert_close(out, g["golden.wrapper.out"], atol=ATOL, rtol=0)


def test_fixture_learned_mask_is_used(interpolation_stage):
    """The learned mask fills the 12 middle frames of the conditioning channels."""
    net = interpolation_stage.network
    x = torch.zeros(14, 4, 16, 16)
    concat = torch.randn(1, 8, 16, 16)
    built = net.build_input(x, concat, 14)
    torch.testing.assert_close(built[5, 4:8], net.learned_mask)
    torch.testing.assert_close(built[0, 4:8], concat[0, :4])
    torch.testing.assert_close(built[13, 4:8], concat[0, 4:])
    assert built[0, 8].eq(1).all() and built[13, 8].eq(1).all() and built[1:13, 8].eq(0).all()
