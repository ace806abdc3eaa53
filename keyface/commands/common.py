"""Options shared by several commands."""

from __future__ import annotations

import argparse
import os

import torch

from engine.bundle import ModelBundle, load_bundle
from engine.checkpoints import parse_dtype
from engine.defaults import default_weights, resolve_device
from engine.errors import InputError


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--weights",
        metavar="DIR",
        help="model folder: a KeyFace Live model or the official KeyFace release "
        "(default: $KEYFACE_WEIGHTS, else the bundled demo avatar)",
    )
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: auto)")
    group.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "fp16", "bf16", "autocast-fp16", "autocast-bf16"],
        help="weights/compute precision; autocast-* keeps fp32 weights and samples under "
        "torch.autocast like the reference (default: fp32 on CPU, autocast-fp16 on CUDA)",
    )
    group.add_argument(
        "--backend",
        choices=["torch", "ort", "trt"],
        default=os.environ.get("KEYFACE_BACKEND") or None,
        help="inference backend: PyTorch, ONNX Runtime or TensorRT (default: $KEYFACE_BACKEND, else torch); "
        "see docs/export.md",
    )
    group.add_argument(
        "--trust-weights",
        action="store_true",
        default=os.environ.get("KEYFACE_TRUST_WEIGHTS") == "1",
        help="allow full unpickling of .pt checkpoints that hold more than tensors "
        "(only for files you trust; env KEYFACE_TRUST_WEIGHTS=1)",
    )


def precision(args: argparse.Namespace, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(weights dtype, autocast dtype or None)."""
    choice = args.precision
    if choice == "auto":
        choice = "autocast-fp16" if device.type == "cuda" else "fp32"
    if choice.startswith("autocast-"):
        return torch.float32, parse_dtype(choice.removeprefix("autocast-"))
    return parse_dtype(choice), None


def load_model(args: argparse.Namespace) -> tuple[ModelBundle, torch.dtype | None]:
    device = resolve_device(args.device)
    dtype, autocast = precision(args, device)
    path = args.weights or default_weights()
    return load_bundle(path, dtype=dtype, device=device, trust_pickle=args.trust_weights), autocast


def check_step_counts(args: argparse.Namespace, names: tuple[str, ...], most: int | None = None) -> None:
    """Refuse step-count options (``args.<name>``, None = unset) below 1 or, with ``most``, above it."""
    for name in names:
        value = getattr(args, name)
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if most is None and value < 1:
            raise InputError(f"{flag} must be at least 1")
        if most is not None and not 1 <= value <= most:
            raise InputError(f"{flag} must be 1..{most} (got {value})")
