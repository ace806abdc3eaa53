"""``keyface train``: the demo model's trainers (data, VAE, latents, decoder, keyframe, interpolation)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from engine.defaults import resolve_device
from engine.errors import InputError

EPILOG = """examples (the demo model's recipe, see docs/demo-model.md):
  keyface train data --out out/data --sessions 180 --heldout 12
  keyface train vae --data out/data/train.npz --out out/train --steps 600
  keyface train keyframe --out out/train --steps 1500
  keyface train interpolation --out out/train --steps 1500
  keyface train latents --data out/data/train.npz --weights models/demo --out out/finetune
      (latents for fine-tuning a shipped model: keyface distill --init models/demo --no-teacher)
  keyface train decoder --out out/finetune --steps 3000 --batch 16 --lr 1e-4
      (then keyface distill --out out/finetune … --ship DIR ships the fine-tuned decoder)

Every stage resumes from its checkpoint in --out when run again with more --steps."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the demo avatar model (synthetic data, VAE, keyframe, interpolation)",
        description="Train the KeyFace Live demo model on synthetic talking faces.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=["data", "vae", "latents", "decoder", "keyframe", "interpolation"],
                   help="what to train / make (latents: cache --data's latents with the VAE of --weights; "
                        "decoder: fine-tune the VAE decoder in --out on its cached latents)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, logs, caches)")
    p.add_argument("--data", help="training set .npz (vae, latents; keyframe/interpolation default: the VAE's)")
    p.add_argument("--weights", help="latents: the model folder whose VAE encodes --data (e.g. models/demo)")
    p.add_argument("--workers", type=int, default=1, help="data: processes generating sessions (default 1)")
    p.add_argument("--steps", type=int, default=1000, help="total optimiser steps (default 1000)")
    p.add_argument("--batch", type=int, default=8, help="clips per step (frames per step for the VAE: ×2)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--pixel-every", type=int, default=1, help="pixel loss every N steps (0: off)")
    p.add_argument("--sessions", type=int, default=180, help="data: training sessions")
    p.add_argument("--heldout", type=int, default=12, help="data: held-out sessions")
    p.add_argument("--source", choices=["sessions", "clips"], default="sessions",
                   help="data: 'sessions' = speech and pauses (the shipped demo model's data); 'clips' = the "
                        "clip generator's speech, laughs, sighs, hums and silences (default: sessions)")
    p.add_argument("--encode-sessions", type=int, default=0,
                   help="vae, latents: sessions whose latents are cached (0: all)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--ema", type=float, default=0.999,
                   help="keyframe/interpolation/decoder: decay of the weights' moving average that evaluation, "
                        "distillation and shipping use (0: none; default 0.999)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--device", default="auto", help="cpu, cuda … (default: auto)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from export.train import run as stages

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    device = str(resolve_device(args.device))
    if args.what == "data":
        from export.train.dataset import generate

        generate(args.sessions, "train", seed=args.seed, source=args.source, workers=args.workers).save(
            out / "train.npz")
        generate(args.heldout, "heldout", seed=args.seed, source=args.source, workers=args.workers).save(
            out / "heldout.npz")
        print(f"wrote {out / 'train.npz'} and {out / 'heldout.npz'}")
    elif args.what == "vae":
        if not args.data:
            raise SystemExit("keyface train vae: --data is required")
        stages.run_vae(
            Path(args.data), out, args.steps, 2 * args.batch, args.seed, device, args.lr, args.encode_sessions
        )
        print(f"wrote {out / 'vae.safetensors'} and {out / 'latents.pt'}")
    elif args.what == "decoder":
        stages.run_decoder(out, args.steps, args.batch, args.seed, device, args.lr, args.ema)
        print(f"wrote {out / 'vae.safetensors'} (fine-tuned decoder, same encoder)")
    elif args.what == "latents":
        if not args.data or not args.weights:
            raise InputError("latents needs --data (the sessions) and --weights (the model whose VAE encodes them)")
        stages.run_latents(Path(args.data), out, Path(args.weights), args.encode_sessions)
        print(f"wrote {out / 'latents.pt'} (and the VAE of {args.weights})")
    else:
        data = Path(args.data) if args.data else None
        stages.run_stage(args.what, out, args.steps, args.batch, args.seed, args.lr, args.pixel_every, device, data,
                         args.ema)
        print(f"wrote {out / (args.what + '.pt')}")
    return 0
