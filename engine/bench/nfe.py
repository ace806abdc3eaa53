"""Time of one network evaluation (one UNet call on a 14-frame clip)."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ..checkpoints import parse_dtype
from ..defaults import resolve_device
from ..models.conditioning import Conditioning
from ..models.config import StageConfig, interpolation_stage_full, keyframe_stage_full, tiny_stage
from ..models.stage import KeyFaceStage

SIZES = {
    "tiny": {"keyframe": lambda: tiny_stage("keyframe"), "interpolation": lambda: tiny_stage("interpolation")},
    "full": {"keyframe": keyframe_stage_full, "interpolation": interpolation_stage_full},
}


def add_nfe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="tiny", choices=sorted(SIZES), help="network size")
    p.add_argument("--stage", default="keyframe", choices=["keyframe", "interpolation", "both"])
    p.add_argument("--dtype", default="fp32", help="fp32, fp16 or bf16 (default fp32)")
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--latent", type=int, help="latent size (default: the config's, 64 full)")
    p.add_argument("--clips", type=int, default=1, help="clips per call (batch)")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch CPU threads")


def nfe_inputs(config: StageConfig, clips: int, frames: int, latent: int, device, dtype):
    u = config.unet
    x = torch.randn(clips * frames, 4, latent, latent, device=device, dtype=dtype)
    c_noise = torch.full((clips * frames,), 0.25, device=device, dtype=dtype)
    concat_ch = 4 if config.kind == "keyframe" else 8
    cond = Conditioning(
        concat=torch.randn(clips, concat_ch, latent, latent, device=device, dtype=dtype),
        crossattn=torch.randn(clips, frames, u.context_dim, device=device, dtype=dtype),
        vector=torch.randn(clips * frames, u.adm_in_channels, device=device, dtype=dtype)
        if u.adm_in_channels
        else None,
    )
    return x, c_noise, cond


def time_nfe(
    config: StageConfig,
    device: torch.device,
    dtype: torch.dtype,
    frames: int,
    latent: int,
    clips: int = 1,
    repeat: int = 10,
    warmup: int = 2,
) -> list[float]:
    """Seconds per call, ``repeat`` measurements, random weights."""
    torch.manual_seed(0)
    with torch.device(device):
        stage = KeyFaceStage(config)
    stage = stage.to(dtype).eval()
    x, c_noise, cond = nfe_inputs(config, clips, frames, latent, device, dtype)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeat):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            stage(x, c_noise, cond, frames)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def run_nfe(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = parse_dtype(args.dtype)
    stages = ["keyframe", "interpolation"] if args.stage == "both" else [args.stage]
    print(
        f"device={device} dtype={args.dtype} frames={args.frames} clips={args.clips} threads={torch.get_num_threads()}"
    )
    print(f"{'stage':<14}{'size':<6}{'latent':>7}{'median ms':>12}{'min ms':>10}")
    for stage in stages:
        config = SIZES[args.size][stage]()
        latent = args.latent or config.latent_size
        times = time_nfe(config, device, dtype, args.frames, latent, args.clips, args.repeat, args.warmup)
        print(f"{stage:<14}{args.size:<6}{latent:>7}{statistics.median(times) * 1e3:>12.2f}{min(times) * 1e3:>10.2f}")
    return 0
