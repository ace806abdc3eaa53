"""``keyface stream``: feed an audio file to a running server's avatar at real-time pace."""

from __future__ import annotations

import argparse
import asyncio
import os

import numpy as np

from engine.audio.base import SAMPLE_RATE

EPILOG = """examples:
  keyface stream speech.wav                       # the newest session on http://127.0.0.1:8080
  keyface stream speech.mp3 --server https://avatar.example.com --token TOKEN
  keyface stream speech.wav --session 3f2a… --token SESSION_TOKEN

Without --session the newest open session is used (the one a browser opened), or a new one."""


def add_client_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument(
        "--server",
        default=os.environ.get("KEYFACE_SERVER", "http://127.0.0.1:8080"),
        help="server URL (default: $KEYFACE_SERVER or http://127.0.0.1:8080)",
    )
    g.add_argument(
        "--token",
        default=os.environ.get("KEYFACE_TOKEN") or os.environ.get("KEYFACE_API_TOKEN"),
        help="API token or session token (default: $KEYFACE_TOKEN)",
    )
    g.add_argument("--session", metavar="ID", help="session to speak in (default: the newest, else a new one)")
    g.add_argument("--emotion", metavar="NAME|V,A", help="set this emotion first")
    g.add_argument("--no-wait", action="store_true", help="return once sent, not when playback has finished")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stream",
        help="stream an audio file to a running server",
        description="Stream an audio file (any format and rate) to a running KeyFace Live server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("audio", help="audio file (WAV, MP3, FLAC, …)")
    add_client_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.audio.resample import load_audio

    samples = load_audio(args.audio)
    return asyncio.run(feed(args, lambda client, session: _ready(samples)))


async def _ready(samples: np.ndarray) -> np.ndarray:
    return samples


async def feed(args: argparse.Namespace, audio_for) -> int:
    """Find or open the session, get its audio from ``audio_for(client, session)``, stream it."""
    from server.client import KeyFaceClient, pick_session

    async with KeyFaceClient(args.server, token=args.token) as client:
        session, created = await pick_session(client, args.session)
        if created:
            print(f"opened session {session.session_id} (nobody is watching it: open {args.server}/ to see one)")
        samples = await audio_for(client, session)
        async with client.audio(session) as audio:
            if args.emotion:
                await audio.send_json({"type": "emotion", **_emotion(args.emotion)})
            await audio.stream(samples, SAMPLE_RATE)
            seconds = len(samples) / SAMPLE_RATE
            if args.no_wait:
                print(f"sent {seconds:.1f} s of audio to session {session.session_id}")
                return 0
            started = await audio.wait_for("speech_started", timeout=30 + seconds)
            finished = await audio.wait_for("playback_finished", timeout=30 + seconds)
        latency = started.get("latency")
        after = f" (first frame {latency:.2f} s after the first audio)" if latency is not None else ""
        print(f"played {finished['playback_position']:.2f} s in session {session.session_id}{after}")
        if created:
            await client.close_session(session)
    return 0


def _emotion(spec: str) -> dict[str, float | str]:
    from engine.emotion import parse_emotion

    emotion = parse_emotion(spec)  # validates
    return {"valence": emotion.valence, "arousal": emotion.arousal}
