"""``keyface init-model``: write a randomly initialised model folder (for trying the pipeline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from engine.bundle import random_bundle, save_bundle


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init-model",
        help="write a random-weight model folder (tiny fixture size)",
        description="Write a randomly initialised KeyFace Live model folder. Its output is noise; "
        "it exists to exercise the full pipeline quickly (tests, benchmarks, development).",
    )
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--identity", help="image to store as the model's default identity")
    p.set_defaults(func=run)


def placeholder_face(path: Path, size: int = 256) -> Path:
    """A plain drawn face, so a random model has a default identity."""
    img = Image.new("RGB", (size, size), (70, 110, 150))
    draw = ImageDraw.Draw(img)
    s = size / 256
    draw.ellipse([64 * s, 40 * s, 192 * s, 210 * s], fill=(224, 180, 150))
    for x in (100, 156):
        draw.ellipse([(x - 10) * s, 105 * s, (x + 10) * s, 120 * s], fill=(40, 30, 30))
    draw.ellipse([108 * s, 160 * s, 148 * s, 176 * s], fill=(150, 60, 60))
    img.save(path)
    return path


def run(args: argparse.Namespace) -> int:
    bundle = random_bundle(seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    identity = Path(args.identity) if args.identity else placeholder_face(out / "identity.png")
    root = save_bundle(bundle, out, identity_image=identity)
    print(f"wrote a random tiny model to {root}")
    return 0
