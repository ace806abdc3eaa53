"""``keyface bench``: speed measurements (results go to docs/benchmarks.md)."""

from __future__ import annotations

import argparse

from engine.bench.nfe import add_nfe_arguments, run_nfe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks: network evaluation, audio encoders, pipeline",
        description="Measure KeyFace Live's speed. Results are printed as a table.",
    )
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    nfe = targets.add_parser(
        "nfe",
        help="time one network evaluation (one UNet call on 14 frames)",
        description="Time one UNet network evaluation for a chosen size, dtype and device.",
    )
    add_nfe_arguments(nfe)
    nfe.set_defaults(func=run_nfe)
    try:
        from engine.audio import bench as audio_bench
    except ImportError:
        return
    audio = targets.add_parser(
        "audio",
        help="audio encoders: cost per second of audio and added latency",
        description="Time the audio encoders at full size (random weights).",
    )
    audio_bench.add_arguments(audio)
    audio.set_defaults(func=audio_bench.run)
