"""The audio websocket protocol: message names, error codes and close codes.

Client → server: binary frames (raw PCM in the format of the last ``start``) and JSON text
messages with a ``type``; several de-facto names are accepted for each (see :data:`ALIASES`).
Server → client: JSON events (``ready``, ``speech_started``, ``playback_finished``, ``warning``,
``error`` …). See docs/server.md for the full reference with examples.
"""

from __future__ import annotations

from typing import Any

ALIASES: dict[str, str] = {
    "start": "start",
    "audio_start": "start",
    "audio": "audio",
    "agent.speak": "audio",  # HeyGen
    "conversation.echo": "audio",  # Tavus
    "input_audio_buffer.append": "audio",  # OpenAI-style
    "end_utterance": "end_utterance",
    "end_of_speech": "end_utterance",
    "agent.speak_end": "end_utterance",
    "flush": "end_utterance",
    "input_audio_buffer.commit": "end_utterance",
    "interrupt": "interrupt",
    "clear_buffer": "interrupt",  # LiveKit
    "agent.interrupt": "interrupt",
    "conversation.interrupt": "interrupt",
    "emotion": "emotion",
    "set_emotion": "emotion",
    "ping": "ping",
}
"""Accepted ``type`` names → the canonical message."""

# Error codes (the ``code`` of an ``error`` event or HTTP error body).
BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
UNKNOWN_TYPE = "unknown_type"
NO_FORMAT = "no_format"
UNSUPPORTED_FORMAT = "unsupported_format"
BAD_AUDIO = "bad_audio"
BUFFER_FULL = "buffer_full"
BAD_EMOTION = "bad_emotion"
MESSAGE_TOO_LARGE = "message_too_large"
RATE_LIMITED = "rate_limited"
TOO_MANY_ERRORS = "too_many_errors"
UNAUTHORIZED = "unauthorized"
UNKNOWN_SESSION = "unknown_session"
BUSY = "busy"
SESSION_CLOSED = "session_closed"
INTERNAL = "internal"

# Websocket close codes.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_UNAUTHORIZED = 4401
CLOSE_UNKNOWN_SESSION = 4404
CLOSE_BUSY = 4409
CLOSE_SESSION_ENDED = 4410


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


def error(code: str, message: str, **fields: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **fields}


def warning(code: str, message: str) -> dict[str, Any]:
    return {"type": "warning", "code": code, "message": message}
