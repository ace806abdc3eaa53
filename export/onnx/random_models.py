"""Random-weight bundles for export benchmarks, materialising only the networks a graph needs.

The released sizes are large (1.5 B parameters per UNet, 6 GB in fp32), so modules are built on
the meta device and only those the selected graphs use get real (random) memory.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.bundle import ModelBundle, random_bundle
from engine.checkpoints import parse_dtype
from engine.models.config import VAEConfig, interpolation_stage_full, keyframe_stage_full
from engine.models.stage import KeyFaceStage, build_network
from engine.models.vae import AutoencoderKL

NEEDS = {
    "keyframe": ("keyframe_guided", "keyframe_denoiser", "keyframe_network"),
    "interpolation": ("interpolation_guided", "interpolation_denoiser", "interpolation_network"),
    "bad": ("interpolation_guided", "bad_network"),
    "vae": ("vae_decoder", "vae_encoder"),
}


@torch.no_grad()
def materialize(module: nn.Module, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """Give a meta-device module real CPU memory in ``dtype`` and small random values."""
    torch.manual_seed(seed)
    module = module.to(dtype).to_empty(device="cpu")
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
    for name, param in module.named_parameters():
        if name.endswith(("mix_factor", "learned_mask")):
            param.normal_(0.0, 0.5)
    for buf in module.buffers():
        if not torch.isfinite(buf).all():
            buf.zero_()
    return module.eval().requires_grad_(False)


def random_bundle_for(size: str, graphs: list[str], dtype: str = "fp32", vae_dtype: str = "fp32") -> ModelBundle:
    """A random ``tiny`` or ``full`` bundle; at full size only modules used by ``graphs`` are real."""
    if size == "tiny":
        return random_bundle()
    if size != "full":
        raise ValueError(f"unknown size {size!r} (tiny or full)")
    kf_cfg, ip_cfg = keyframe_stage_full(), interpolation_stage_full()
    with torch.device("meta"):
        keyframe, interpolation = KeyFaceStage(kf_cfg), KeyFaceStage(ip_cfg)
        bad = build_network(ip_cfg)
        vae = AutoencoderKL(VAEConfig())
    wanted = set(graphs)
    unet_dtype, ae_dtype = parse_dtype(dtype), parse_dtype(vae_dtype)
    if wanted & set(NEEDS["keyframe"]):
        keyframe = materialize(keyframe, unet_dtype, 1)  # type: ignore[assignment]
    if wanted & set(NEEDS["interpolation"]):
        interpolation = materialize(interpolation, unet_dtype, 2)  # type: ignore[assignment]
    if wanted & set(NEEDS["bad"]):
        bad = materialize(bad, unet_dtype, 3)
    if wanted & set(NEEDS["vae"]):
        vae = materialize(vae, ae_dtype, 4)
    return ModelBundle(
        name="random-full", keyframe=keyframe, interpolation=interpolation, bad=bad,  # type: ignore[arg-type]
        vae=vae, image_size=512,
        audio={"keyframe": ["logmel"], "interpolation": ["logmel"], "logmel": {"n_mels": 1536}},
    )


def to_device(bundle: ModelBundle, device: torch.device | str) -> ModelBundle:
    """Move the materialised modules of a (partly meta) bundle; meta placeholders stay."""
    for module in (bundle.keyframe, bundle.interpolation, bundle.bad, bundle.vae):
        if module is not None and not any(p.is_meta for p in module.parameters()):
            module.to(device)
    return bundle
