"""``keyface data``: synthetic talking-face training data (docs/synthetic-data.md)."""

from __future__ import annotations

import argparse

from engine.errors import InputError, KeyFaceError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="synthetic talking-face datasets for training the demo avatar",
        description="Generate procedurally drawn talking faces with espeak-ng speech, laughs, sighs "
        "and ground-truth face parameters (docs/synthetic-data.md).",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    gen = actions.add_parser(
        "generate",
        help="write a dataset folder (npz shards + index.json)",
        description="Generate clips into DIR. The same --seed and --split always give the same data; "
        "the held-out split uses unseen identities, sentences, words and voices.",
    )
    gen.add_argument("--out", required=True, metavar="DIR", help="output folder")
    gen.add_argument("--clips", type=int, default=100, metavar="N", help="number of clips (default: 100)")
    gen.add_argument("--size", type=int, default=64, help="frame size in pixels (default: 64)")
    gen.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    gen.add_argument("--split", choices=["train", "heldout"], default="train", help="default: train")
    gen.add_argument("--workers", type=int, default=0, help="processes (default: 0, generate in-process)")
    gen.add_argument("--shard-size", type=int, default=64, metavar="K", help="clips per shard (default: 64)")
    gen.add_argument("--identities", type=int, default=None, metavar="M",
                     help="reuse M identities round-robin (default: a new identity per clip)")
    gen.add_argument("--min-seconds", type=float, default=3.0, help="shortest clip (default: 3)")
    gen.add_argument("--max-seconds", type=float, default=8.0, help="longest clip (default: 8)")
    gen.add_argument("--motion", type=float, default=1.0,
                     help="head-motion scale, 0 for a still head (default: 1)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from export.data.clip import ClipConfig
    from export.data.dataset import generate_dataset
    from export.data.speech import EspeakError, espeak_missing_reason

    if args.clips < 1 or not 8 <= args.size <= 1024 or args.shard_size < 1:
        raise InputError("need --clips >= 1, 8 <= --size <= 1024 and --shard-size >= 1")
    if not 0 < args.min_seconds <= args.max_seconds:
        raise InputError("need 0 < --min-seconds <= --max-seconds")
    reason = espeak_missing_reason()
    if reason:
        raise KeyFaceError(reason)
    config = ClipConfig(size=args.size, min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                        motion=args.motion)
    try:
        index = generate_dataset(args.out, args.clips, args.size, args.seed, args.split, workers=args.workers,
                                 shard_size=args.shard_size, config=config, n_identities=args.identities,
                                 progress=not args.quiet)
    except EspeakError as exc:
        raise KeyFaceError(str(exc)) from exc
    print(f"wrote {args.clips} {args.split} clips to {index.parent} (index: {index})")
    return 0
