"""``keyface serve``: the streaming server (WebRTC out, websocket audio in)."""

from __future__ import annotations

import argparse

from engine.defaults import default_weights
from engine.errors import KeyFaceError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="start the streaming avatar server",
        description="Start the real-time streaming server on the demo avatar (or --weights).",
    )
    p.add_argument("--weights", metavar="DIR", help="model folder (default: the demo avatar)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.weights is None:
        default_weights()  # says clearly when no model is installed
    raise KeyFaceError("the streaming server is not part of this build yet (see the README)")
