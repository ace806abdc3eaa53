"""``keyface bench``: speed measurements (results go to docs/benchmarks.md)."""

from __future__ import annotations

import argparse

from engine.audio import bench as audio_bench
from engine.bench.nfe import add_nfe_arguments, run_nfe
from engine.bench.pipeline import (
    add_pipeline_arguments,
    add_sessions_arguments,
    run_pipeline_bench,
    run_sessions_bench,
)

TARGETS = (
    ("nfe", "time one network evaluation (one UNet call on 14 frames)", add_nfe_arguments, run_nfe),
    ("audio", "audio encoders: cost per second of audio and added latency", audio_bench.add_arguments, audio_bench.run),
    (
        "pipeline",
        "live scheduler end to end: real-time factor, first-frame delay, late frames, memory",
        add_pipeline_arguments,
        run_pipeline_bench,
    ),
    (
        "sessions",
        "N concurrent live sessions on one engine, with and without batching",
        add_sessions_arguments,
        run_sessions_bench,
    ),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks: network evaluation, audio encoders, live pipeline, sessions",
        description="Measure KeyFace Live's speed. Results are printed as a table; "
        "docs/benchmarks.md records them with the commands that made them.",
    )
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, help_text, add_arguments, run in TARGETS:
        target = targets.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        add_arguments(target)
        target.set_defaults(func=run)
