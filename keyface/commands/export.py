"""``keyface export onnx`` and ``keyface build-engines``: ONNX graphs and TensorRT engines."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from engine.backends.profiles import BUILTIN, parse_profile

EXPORT_EPILOG = """examples:
  keyface export onnx --weights ~/keyface --out ~/keyface/onnx
  keyface export onnx --weights ~/keyface --out onnx-fp16 --profile cuda-fp16:clips=1/2/8
  keyface export onnx --random full --graphs keyframe_guided --out /tmp/kf \\
      --profile default:dynamic_spatial=true,trace_latent=8

Graph groups: unets (guided denoisers), networks (raw UNets), vae, audio; default: unets,vae,audio.
See docs/export.md for the graph contracts and profiles."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export models (ONNX)", description="Export KeyFace models.")
    targets = p.add_subparsers(dest="target", metavar="FORMAT", required=True)
    onnx = targets.add_parser(
        "onnx", help="ONNX graphs of the UNets (guidance folded in), VAE and audio encoders",
        description="Export a model folder's networks to ONNX (opset 17+), check and simplify them, "
        "and write manifest.json (hashes, shapes, versions).",
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_args(onnx)
    onnx.add_argument("--out", required=True, help="output folder")
    onnx.add_argument("--graphs", help="comma-separated graph names or groups (default: unets,vae,audio)")
    onnx.add_argument("--external-data", default="auto", choices=["auto", "always", "never"],
                      help="weights in a .onnx.data file: auto = when over 2 GB (default)")
    onnx.add_argument("--onnxsim", action="store_true", help="also run onnxsim when installed (< 2 GB)")
    onnx.add_argument("--random", choices=["tiny", "full"],
                      help="random weights of this size instead of --weights (benchmarks)")
    onnx.set_defaults(func=run_export)

    b = sub.add_parser(
        "build-engines", help="build and cache TensorRT engines for a model and profile",
        description="Export ONNX graphs if needed, then build one TensorRT engine per graph into the "
        "engine cache (keyed by GPU, TensorRT version, model hash and profile); the trt backend of "
        "render and serve picks them up.",
    )
    _model_args(b)
    b.add_argument("--onnx-dir", help="export folder (default: the cache's, exported when missing)")
    b.add_argument("--cache", help="engine cache folder (default: $KEYFACE_CACHE or ~/.cache/keyface)")
    b.add_argument("--graphs", help="comma-separated graph names (default: all exported)")
    b.add_argument("--fp8", action="store_true", help="fp8 UNet engines (graph must carry Q/DQ nodes)")
    b.add_argument("--workspace-gb", type=float, default=8.0, help="builder workspace (default 8 GiB)")
    b.add_argument("--random", choices=["tiny", "full"], help="random weights of this size (benchmarks)")
    b.set_defaults(func=run_build)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="DIR", help="model folder (default: $KEYFACE_WEIGHTS or the demo model)")
    p.add_argument("--profile", default="default",
                   help=f"NAME[:key=value,...]; built-in: {', '.join(BUILTIN)} (default: default)")
    p.add_argument("--trust-weights", action="store_true", default=os.environ.get("KEYFACE_TRUST_WEIGHTS") == "1",
                   help="allow full unpickling of .pt checkpoints (only for files you trust)")


def _graphs(text: str | None) -> list[str] | None:
    return [g.strip() for g in text.split(",") if g.strip()] if text else None


def _load(args: argparse.Namespace, graphs: list[str] | None):
    from engine.bundle import load_bundle
    from engine.defaults import default_weights

    profile = parse_profile(args.profile)
    if getattr(args, "random", None):
        from export.onnx.graphs import DEFAULT_GROUPS, GROUPS
        from export.onnx.random_models import random_bundle_for

        names = [m for g in graphs or list(DEFAULT_GROUPS) for m in GROUPS.get(g, (g,))]
        return random_bundle_for(args.random, names, profile.dtype, profile.vae_dtype), profile
    path = args.weights or default_weights()
    return load_bundle(path, dtype=torch.float32, device="cpu", trust_pickle=args.trust_weights), profile


def run_export(args: argparse.Namespace) -> int:
    from export.onnx.exporter import export_bundle

    graphs = _graphs(args.graphs)
    bundle, profile = _load(args, graphs)
    start = time.perf_counter()
    manifest = export_bundle(bundle, args.out, profile, graphs, args.external_data, args.onnxsim)
    for name, record in manifest.graphs.items():
        info = record.info
        extra = f" + {record.external_data}" if record.external_data else ""
        print(f"{name:<22} {info.get('bytes', 0) / 1e6:>10.1f} MB {info.get('nodes', 0):>7} nodes "
              f"{info.get('seconds', 0):>8.1f} s  {record.file}{extra}")
    for name, why in manifest.skipped.items():
        print(f"{name:<22} skipped: {why}")
    print(f"wrote {Path(args.out) / 'manifest.json'} in {time.perf_counter() - start:.1f} s")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from engine.backends import ensure_export
    from engine.backends.trt_cache import GpuInfo, default_cache_dir, require_tensorrt
    from export.tensorrt_build import build_engines

    require_tensorrt()
    GpuInfo.current()
    graphs = _graphs(args.graphs)
    bundle, profile = _load(args, graphs)
    folder = ensure_export(bundle, profile, args.onnx_dir, graphs=graphs)
    cache = Path(args.cache) if args.cache else default_cache_dir()
    paths = build_engines(folder, cache, graphs, args.fp8, args.workspace_gb)
    for path in paths:
        print(path)
    print(f"{len(paths)} engines ready in {cache}", file=sys.stderr)
    return 0
