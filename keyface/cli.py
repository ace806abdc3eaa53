"""``keyface``: one command line for rendering, serving, benchmarking and model tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine.errors import KeyFaceError

from . import __version__
from .commands import bench, data, distill, eval, export, fetch, init_model, render, say, serve, stream, train

COMMANDS = (serve, say, stream, render, bench, fetch, init_model, export, data, train, distill, eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyface",
        description="KeyFace Live: real-time talking avatars driven by speech audio.",
    )
    parser.add_argument("--version", action="version", version=f"keyface-live {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyFaceError as exc:
        print(f"keyface {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
