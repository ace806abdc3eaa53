"""VAE tests: tiny golden fixture, released key/shape layout, diffusers key mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from engine.models.config import VAEConfig, tiny_vae
from engine.models.vae import (
    AutoencoderKL,
    Encoder,
    VideoDecoder,
    first_stage_state_dict,
    vae_state_dict_from_diffusers,
)

FIXTURES = Path(__file__).parent / "fixtures" / "keyface"
ATOL = 1e-4


@pytest.fixture(scope="module")
def golden() -> dict[str, Tensor]:
    return load_file(FIXTURES / "vae_tiny.safetensors")


@pytest.fixture(scope="module")
def tiny(golden: dict[str, Tensor]) -> AutoencoderKL:
    model = AutoencoderKL(tiny_vae()).eval()
    sd = {k: v.float() for k, v in first_stage_state_dict(golden).items()}
    model.load_state_dict(sd, strict=True)
    return model


def _max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@torch.no_grad()
def test_encoder_golden(tiny: AutoencoderKL, golden: dict[str, Tensor]) -> None:
    image = golden["golden.image"]
    assert _max_diff(tiny.encode_moments(image), golden["golden.encoder_moments"]) < ATOL
    assert _max_diff(tiny.encode_mode(image), golden["golden.latent_mode"]) < ATOL


@torch.no_grad()
@pytest.mark.parametrize(
    ("frames_per_call", "key"), [(14, "golden.decoded_T14"), (1, "golden.decoded_per_frame_T1")]
)
def test_decoder_golden(
    tiny: AutoencoderKL, golden: dict[str, Tensor], frames_per_call: int, key: str
) -> None:
    out = tiny.decode(golden["golden.z_unscaled"], frames_per_call=frames_per_call)
    assert _max_diff(out, golden[key]) < ATOL


@torch.no_grad()
def test_decode_chunking_is_per_clip(tiny: AutoencoderKL, golden: dict[str, Tensor]) -> None:
    z = golden["golden.z_unscaled"]
    out = tiny.decode(z, frames_per_call=5)  # clips of 5, 5, 4 frames
    expected = torch.cat([tiny.decoder(c, c.shape[0]) for c in (z[:5], z[5:10], z[10:])])
    assert torch.equal(out, expected)
    # one decoder call with several clips batched equals decoding them separately
    two = tiny.decoder(z, timesteps=7)
    assert _max_diff(two, torch.cat([tiny.decoder(z[:7]), tiny.decoder(z[7:])])) < 1e-5


def test_scale_helpers(tiny: AutoencoderKL) -> None:
    z = torch.randn(2, 4, 3, 3)
    assert torch.allclose(tiny.unscale_latent(tiny.scale_latent(z)), z)
    assert tiny.scale_latent(torch.ones(1)).item() == pytest.approx(0.18215)


def _keys_of(group: dict[str, list[int]], prefix: str) -> dict[str, list[int]]:
    return {k[len(prefix) :]: v for k, v in group.items()}


def test_full_size_layout_matches_released_keys() -> None:
    info = json.loads((FIXTURES / "keyframe_full_keys.json").read_text())
    with torch.device("meta"):
        decoder = VideoDecoder(VAEConfig())
        encoder = Encoder(VAEConfig())
    for module, group, prefix, count in (
        (decoder, info["groups"]["first_stage_model.decoder"], "first_stage_model.decoder.", 63_579_183),
        (encoder, info["reference_only_first_stage_model.encoder"], "first_stage_model.encoder.", 34_163_592),
    ):
        expected = _keys_of(group, prefix)
        ours = {k: list(v.shape) for k, v in module.state_dict().items()}
        assert ours == expected
        assert sum(p.numel() for p in module.parameters()) == count
    assert info["param_counts"]["first_stage_model.decoder"] == 63_579_183


def test_plain_decoder_has_spatial_keys_only() -> None:
    cfg = VAEConfig(ch=32, ch_mult=(1, 2), temporal_decoder=False)
    plain = set(VideoDecoder(cfg).state_dict())
    temporal = set(VideoDecoder(VAEConfig(ch=32, ch_mult=(1, 2))).state_dict())
    assert plain < temporal
    assert all("time_stack" in k or "mix_factor" in k or "time_mix_conv" in k for k in temporal - plain)
    torch.manual_seed(0)
    model = AutoencoderKL(cfg).eval()
    with torch.no_grad():
        z = torch.randn(3, 4, 4, 4)
        x = model.decode(z, frames_per_call=3)
        assert x.shape == (3, 3, 8, 8)
        assert torch.allclose(x, model.decode(z, frames_per_call=1), rtol=1e-5, atol=1e-5)


# --- diffusers mapping: independent inverse (sgm -> diffusers), then map back --------------------------


def _resnet_to_diffusers(rest: str, temporal: bool) -> str:
    spatial = {
        "norm1": "norm1",
        "conv1": "conv1",
        "norm2": "norm2",
        "conv2": "conv2",
        "nin_shortcut": "conv_shortcut",
    }
    time = {
        "in_layers.0": "norm1",
        "in_layers.2": "conv1",
        "out_layers.0": "norm2",
        "out_layers.3": "conv2",
    }
    if rest == "mix_factor":
        return "time_mixer.mix_factor"
    if rest.startswith("time_stack."):
        layer, param = rest[len("time_stack.") :].rsplit(".", 1)
        return f"temporal_res_block.{time[layer]}.{param}"
    layer, param = rest.split(".")
    name = f"{spatial[layer]}.{param}"
    return f"spatial_res_block.{name}" if temporal else name


def _to_diffusers(sd: dict[str, Tensor], n_levels: int, temporal: bool) -> dict[str, Tensor]:
    attn = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
    top = {"conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out": "conv_out"}
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        part, rest = key.split(".", 1)
        parts = rest.split(".")
        if rest.startswith("conv_out.time_mix_conv."):
            new = f"time_conv_out.{parts[-1]}"
        elif parts[0] in top and len(parts) == 2:
            new = f"{top[parts[0]]}.{parts[1]}"
        elif parts[0] == "mid" and parts[1] == "attn_1":
            new = f"mid_block.attentions.0.{attn[parts[2]]}.{parts[3]}"
            if parts[2] != "norm" and parts[3] == "weight":
                value = value[:, :, 0, 0]
        elif parts[0] == "mid":
            idx = {"block_1": 0, "block_2": 1}[parts[1]]
            new = f"mid_block.resnets.{idx}.{_resnet_to_diffusers('.'.join(parts[2:]), temporal)}"
        elif parts[0] == "down" and parts[2] == "downsample":
            new = f"down_blocks.{parts[1]}.downsamplers.0.conv.{parts[-1]}"
        elif parts[0] == "down":
            resnet = _resnet_to_diffusers(".".join(parts[4:]), False)
            new = f"down_blocks.{parts[1]}.resnets.{parts[3]}.{resnet}"
        elif parts[0] == "up" and parts[2] == "upsample":
            new = f"up_blocks.{n_levels - 1 - int(parts[1])}.upsamplers.0.conv.{parts[-1]}"
        elif parts[0] == "up":
            i = n_levels - 1 - int(parts[1])
            new = f"up_blocks.{i}.resnets.{parts[3]}.{_resnet_to_diffusers('.'.join(parts[4:]), temporal)}"
        else:
            raise AssertionError(key)
        out[f"{part}.{new}"] = value
    return out


def _randomise(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.ndim <= 1 else 0.1))


@pytest.mark.parametrize("temporal", [True, False])
@torch.no_grad()
def test_diffusers_mapping_round_trip(temporal: bool) -> None:
    cfg = VAEConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, temporal_decoder=temporal)
    ours = AutoencoderKL(cfg).eval()
    _randomise(ours, 0)
    sd = ours.state_dict()
    diff = _to_diffusers(sd, len(cfg.ch_mult), temporal)
    assert set(diff) != set(sd)

    # a non-identity quant_conv: diffusers' conv_out = W2^-1 (ours - b2)
    gen = torch.Generator().manual_seed(1)
    c = 2 * cfg.z_channels
    w2 = torch.eye(c) + 0.3 * torch.randn(c, c, generator=gen)
    b2 = 0.1 * torch.randn(c, generator=gen)
    w2_inv = torch.linalg.inv(w2.double())
    diff["encoder.conv_out.weight"] = torch.einsum(
        "oj,jikl->oikl", w2_inv, sd["encoder.conv_out.weight"].double()
    )
    diff["encoder.conv_out.bias"] = w2_inv @ (sd["encoder.conv_out.bias"].double() - b2.double())
    diff["encoder.conv_out.weight"] = diff["encoder.conv_out.weight"].float()
    diff["encoder.conv_out.bias"] = diff["encoder.conv_out.bias"].float()
    diff["quant_conv.weight"] = w2[:, :, None, None]
    diff["quant_conv.bias"] = b2

    back = AutoencoderKL(cfg).eval()
    back.load_state_dict(vae_state_dict_from_diffusers(diff), strict=True)
    image = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    assert _max_diff(back.encode_moments(image), ours.encode_moments(image)) < 1e-5
    z = torch.randn(6, 4, 8, 8, generator=gen)
    assert torch.equal(back.decode(z, frames_per_call=3), ours.decode(z, frames_per_call=3))

    enc_only = vae_state_dict_from_diffusers(diff, decoder=False)
    assert all(k.startswith("encoder.") for k in enc_only)
    diff["post_quant_conv.weight"] = torch.eye(4)[:, :, None, None] * 2
    diff["post_quant_conv.bias"] = torch.zeros(4)
    with pytest.raises(ValueError, match="post_quant_conv"):
        vae_state_dict_from_diffusers(diff)
    with pytest.raises(KeyError):
        vae_state_dict_from_diffusers({"encoder.bogus.weight": torch.zeros(1)})
