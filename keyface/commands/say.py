"""``keyface say``: make a running server's avatar speak a text (server-side espeak-ng)."""

from __future__ import annotations

import argparse
import asyncio

from .stream import add_client_options, feed

EPILOG = """examples:
  keyface say "Hello, I am a live avatar."
  keyface say "Bonjour !" --voice fr --emotion happy
  keyface say "Hi" --server https://avatar.example.com --token TOKEN"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "say",
        help="make a running server's avatar speak a text",
        description="Synthesise TEXT on the server (espeak-ng) and stream it to a session's avatar.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("text", help="what to say")
    p.add_argument("--voice", default="en", help="espeak-ng voice (default: en)")
    p.add_argument("--speed", type=int, default=165, help="words per minute (default: 165)")
    add_client_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    async def synthesise(client, session):
        return await client.tts(session, args.text, voice=args.voice, speed=args.speed)

    return asyncio.run(feed(args, synthesise))
