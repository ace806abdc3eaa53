"""Time of one network evaluation (one UNet call on a 14-frame clip), on any backend.

``--unit network`` times the raw UNet (one NFE); ``--unit step`` times one guided sampling step
(keyframe: 3 NFEs in one batch, interpolation: good + bad), which is one graph call on the
exported backends. ``--backend ort|trt`` exports the random model once into the cache.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ..checkpoints import parse_dtype
from ..defaults import resolve_device
from ..errors import InputError
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
    p.add_argument("--threads", type=int, help="torch CPU threads (ONNX Runtime intra-op threads too)")
    p.add_argument(
        "--backend", default="torch", choices=["torch", "ort", "trt"], help="inference backend (default: torch)"
    )
    p.add_argument(
        "--unit",
        default="network",
        choices=["network", "step"],
        help="network: one raw UNet call; step: one guided sampling step (default: network)",
    )
    p.add_argument("--providers", default="cpu", help="ort: comma-separated providers (cpu, cuda, tensorrt)")
    p.add_argument("--onnx-dir", help="ort/trt: export folder (default: the cache's)")


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
    return _timed(lambda: stage(x, c_noise, cond, frames), device, repeat, warmup)


def _timed(fn, device: torch.device, repeat: int, warmup: int) -> list[float]:
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeat):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def time_backend(args: argparse.Namespace, stage: str, device: torch.device) -> list[float]:
    """Seconds per call of ``stage`` on ``args.backend`` (random weights; exported once for ort/trt)."""
    from export.onnx.random_models import random_bundle_for, to_device

    from ..backends import load_backend
    from ..backends.profiles import Profile

    graphs = {
        "network": {"keyframe": "keyframe_network", "interpolation": "interpolation_network"},
        "step": {"keyframe": "keyframe_guided", "interpolation": "interpolation_guided"},
    }
    graph = graphs[args.unit][stage]
    bundle = random_bundle_for(args.size, [graph], args.dtype if args.backend == "torch" else "fp32")
    config = bundle.keyframe.config if stage == "keyframe" else bundle.interpolation.config
    if args.latent and args.latent != config.latent_size:
        raise InputError("--latent is fixed by the model for --backend ort/trt and --unit step")
    options: dict = {}
    if args.backend == "ort":
        options = {"providers": tuple(args.providers.split(",")), "threads": args.threads}
    elif args.backend == "torch":
        to_device(bundle, device)
    profile = Profile(frames=args.frames, clips=(1, args.clips, args.clips), dtype=args.dtype)
    if args.backend == "trt":  # a benchmark builds its own engines (cached like build-engines does)
        from export.tensorrt_build import build_engines

        from ..backends import ensure_export
        from ..backends.trt_cache import default_cache_dir, require_tensorrt

        require_tensorrt()
        build_engines(ensure_export(bundle, profile, args.onnx_dir, graphs=[graph]), default_cache_dir(), [graph])
    backend = load_backend(args.backend, bundle, profile, args.onnx_dir, graphs=[graph], **options)
    x, c_noise, cond = nfe_inputs(config, args.clips, args.frames, config.latent_size, device, torch.float32)
    if args.unit == "network":
        net = backend.network(stage)  # type: ignore[arg-type]
        return _timed(lambda: net(x, c_noise, cond, args.frames), device, args.repeat, args.warmup)
    sigma = torch.full_like(c_noise, 4.0)
    if stage == "keyframe":
        guider = backend.keyframe_guider(bundle.sampling, args.frames)
    else:
        guider = backend.interpolation_guider(bundle.sampling, args.frames)
    return _timed(lambda: guider(x, sigma, cond), device, args.repeat, args.warmup)


def run_nfe(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = parse_dtype(args.dtype)
    stages = ["keyframe", "interpolation"] if args.stage == "both" else [args.stage]
    direct = args.backend == "torch" and args.unit == "network"
    print(
        f"device={device} dtype={args.dtype} frames={args.frames} clips={args.clips} threads={torch.get_num_threads()} "
        f"backend={args.backend} unit={args.unit}"
    )
    print(f"{'stage':<14}{'size':<6}{'latent':>7}{'median ms':>12}{'min ms':>10}  {'backend':<8}unit")
    for stage in stages:
        config = SIZES[args.size][stage]()
        latent = args.latent or config.latent_size
        if direct:
            times = time_nfe(config, device, dtype, args.frames, latent, args.clips, args.repeat, args.warmup)
        else:
            times = time_backend(args, stage, device)
        print(
            f"{stage:<14}{args.size:<6}{latent:>7}{statistics.median(times) * 1e3:>12.2f}{min(times) * 1e3:>10.2f}"
            f"  {args.backend:<8}{args.unit}"
        )
    return 0
