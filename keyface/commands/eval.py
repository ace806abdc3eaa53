"""``keyface eval``: lip-sync, emotion and identity metrics of a model on held-out synthetic clips."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

EPILOG = """examples:
  keyface eval --data out/data/heldout.npz --clips 4
  keyface eval --weights out/teacher --data out/data/heldout.npz --clips 4 --minutes 10
  keyface eval --data out/data/heldout.npz --first-clip 4 --clips 8 --no-emotion   # sessions 4-11"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="measure lip sync, emotion and identity of a model on held-out synthetic clips",
        description="Metrics of a model on held-out synthetic sessions (export/eval.py).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--weights", help="model folder (default: the demo model)")
    p.add_argument("--data", help="held-out set .npz (default: generate --clips sessions now)")
    p.add_argument("--clips", type=int, default=4, help="held-out sessions for lip sync (default 4)")
    p.add_argument("--first-clip", type=int, default=0,
                   help="first held-out session measured (default 0: sessions 0 … clips-1)")
    p.add_argument("--minutes", type=float, default=0.0, help="identity drift render length (0: skip)")
    p.add_argument("--no-emotion", action="store_true", help="skip the valence sweep")
    p.add_argument("--json", help="also write the report as JSON here")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from engine.bundle import load_bundle
    from engine.defaults import default_weights
    from export.eval import evaluate
    from export.train.dataset import SessionSet, generate

    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.weights or default_weights())
    data = SessionSet.load(args.data) if args.data else generate(args.first_clip + args.clips, "heldout")
    rep = evaluate(bundle, data, args.clips, args.minutes, not args.no_emotion, args.first_clip)
    s = bundle.sampling
    print(f"model {bundle.name}: keyframe {s.keyframe_steps} steps ({s.keyframe_guidance}), "
          f"interpolation {s.interpolation_steps} steps ({s.interpolation_guidance})")
    print(f"held-out sessions {rep.clips[0]}-{rep.clips[-1]}")
    print(f"{'metric':<34}{'value':>10}")
    print(f"{'lip sync r (opening vs jaw)':<34}{rep.lip_sync_r:>10.3f}")
    per_clip = rep.lip_sync_r_per_clip
    clips = " ".join(f"{r:.2f}" for r in per_clip)
    print(f"{'lip sync r per clip (mean)':<34}{np.mean(per_clip):>10.3f}  ({clips})")
    print(f"{'  on keyframes / between them':<34}{rep.lip_sync_r_keyframes:>10.3f} / {rep.lip_sync_r_between:.3f}")
    print(f"{'mouth offset per clip':<34}  " + " ".join(f"{v:+.2f}" for v in rep.mouth_offset_per_clip))
    print(f"{'mouth gain per clip':<34}  " + " ".join(f"{v:.2f}" for v in rep.mouth_gain_per_clip))
    print(f"{'identity PSNR, non-mouth (dB)':<34}{rep.identity_psnr:>10.2f}")
    if rep.emotion:
        print(f"{'corner lift at valence -1..+1':<34}  " + " ".join(f"{v:+.2f}" for v in rep.emotion["corner_lift"]))
        print(f"{'brow height at valence -1..+1':<34}  " + " ".join(f"{v:+.2f}" for v in rep.emotion["brow_height"]))
        print(f"{'emotion monotonic':<34}{rep.emotion_monotonic!s:>10}")
    if rep.drift:
        d = rep.drift
        label = f"PSNR minute 1 / minute {d['minutes']:g}"
        print(f"{label:<34}{d['psnr_first']:>6.2f} / {d['psnr_last']:.2f}")
        print(f"{'drift ratio (last / first)':<34}{d['ratio']:>10.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(rep), indent=2) + "\n", encoding="utf-8")
    return 0
