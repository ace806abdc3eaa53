"""The per-session audio websocket: TTS audio and control messages in, playback events out.

Two audio styles share one socket:

* **byte stream** (Simli / LiveKit style): a JSON ``start`` names the format, then binary
  messages carry raw little-endian PCM (``pcm16`` by default, or ``f32``);
* **JSON events** (HeyGen / Tavus style): ``{"type": "audio", "audio": "<base64 PCM>"}`` with an
  optional ``sample_rate`` / ``channels`` / ``encoding`` (else the ``start`` format, else 16 kHz
  mono PCM16) and an optional ``"done": true`` that ends the utterance.

Errors a client can fix are answered with an ``error`` event and the connection stays open; only
size and rate floods (and authentication, unknown sessions, a second socket on one session)
close it, with a specific close code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import time
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from engine.audio.base import SAMPLE_RATE
from engine.audio.ingest import AudioFormat, AudioIngest
from engine.emotion import Emotion
from engine.errors import InputError, KeyFaceError

from . import protocol as P
from .auth import Auth, AuthError, token_from
from .config import ServerConfig
from .metrics import Metrics
from .session import ServerSession, SessionManager

log = logging.getLogger(__name__)

MAX_ERRORS = 100
MAX_RAMP_SECONDS = 10.0


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Fatal(Exception):
    def __init__(self, close_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.code = code


class _RateLimit:
    """Token bucket: ``rate`` messages per second, bursts up to one second's worth."""

    def __init__(self, rate: int) -> None:
        self.rate = float(rate)
        self.tokens = float(rate)
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def _number(msg: dict[str, Any], key: str, default: float | None = None) -> float | None:
    value = msg.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(P.BAD_MESSAGE, f"'{key}' must be a number, got {value!r}")
    return float(value)


def parse_emotion(msg: dict[str, Any]) -> tuple[Emotion, float]:
    """(emotion, ramp seconds) of an ``emotion`` message."""
    ramp = _number(msg, "ramp", 0.5)
    assert ramp is not None
    if not 0.0 <= ramp <= MAX_RAMP_SECONDS:
        raise ProtocolError(P.BAD_EMOTION, f"ramp must be within [0, {MAX_RAMP_SECONDS:g}] seconds, got {ramp}")
    name = msg.get("preset", msg.get("name", msg.get("emotion")))
    try:
        if name is not None:
            if not isinstance(name, str):
                raise ProtocolError(P.BAD_EMOTION, f"emotion preset must be a name, got {name!r}")
            return Emotion.preset(name), ramp
        valence, arousal = _number(msg, "valence"), _number(msg, "arousal")
        if valence is None or arousal is None:
            raise ProtocolError(P.BAD_EMOTION, "send 'valence' and 'arousal' in [-1, 1], or a 'preset' name")
        return Emotion(valence, arousal), ramp
    except InputError as exc:
        raise ProtocolError(P.BAD_EMOTION, str(exc)) from None


class AudioSocket:
    """One connected audio websocket of one session."""

    def __init__(self, ws: WebSocket, session: ServerSession, config: ServerConfig, metrics: Metrics) -> None:
        self.ws = ws
        self.session = session
        self.config = config
        self.metrics = metrics
        self.format: AudioFormat | None = None
        """Format of binary messages (set by ``start``)."""
        self.ingest: AudioIngest | None = None
        self.errors = 0
        self.rate = _RateLimit(config.max_messages_per_second)
        self.out = session.subscribe()

    # -- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._write(), name=f"keyface-ws-writer-{self.session.id}")
        self.send(
            P.event(
                "ready",
                session_id=self.session.id,
                sample_rate=SAMPLE_RATE,
                sample_rates=list(self.config.sample_rates),
                max_message_bytes=self.config.max_message_bytes,
                max_buffered_seconds=self.config.max_buffered_seconds,
                first_frame=None if self.session.feed is None else self.session.feed.first_frame,
            )
        )
        try:
            await self._read()
        except Fatal as exc:
            self.metrics.protocol_errors.labels(exc.code).inc()
            log.info("audio socket closed: %s", exc, extra={"session": self.session.id})
            self.send(P.error(exc.code, str(exc)))
            self.out.put_nowait(("close", exc.close_code, exc.code))  # type: ignore[arg-type]
        except (WebSocketDisconnect, RuntimeError):
            pass
        except Exception:  # a bug must not leak a traceback to the client or touch other sessions
            log.exception("audio socket failed", extra={"session": self.session.id})
            self.send(P.error(P.INTERNAL, "internal server error (see the server log)"))
            self.out.put_nowait(("close", P.CLOSE_INTERNAL, P.INTERNAL))  # type: ignore[arg-type]
        finally:
            self._finish_utterance()
            self.out.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 5.0)
            writer.cancel()
            self.session.unsubscribe(self.out)
            self.session.detach_socket()

    def send(self, message: dict[str, Any]) -> None:
        if message.get("type") == "error":
            self.metrics.protocol_errors.labels(message["code"]).inc()
        self.out.put_nowait(message)

    async def _write(self) -> None:
        """The only task that writes to the socket (events and replies, in order)."""
        try:
            while True:
                item = await self.out.get()
                if item is None:
                    if self.session.closed:
                        await _close(self.ws, P.CLOSE_SESSION_ENDED, P.SESSION_CLOSED)
                    else:
                        await _close(self.ws, P.CLOSE_NORMAL, "")
                    return
                if isinstance(item, tuple):
                    _, code, reason = item
                    await _close(self.ws, code, reason)
                    return
                await self.ws.send_text(json.dumps(item))
        except (WebSocketDisconnect, RuntimeError, OSError):
            return

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if self.session.closed:
                return
            if not self.rate.allow():
                raise Fatal(
                    P.CLOSE_POLICY,
                    P.RATE_LIMITED,
                    f"more than {self.config.max_messages_per_second} messages per second; slow down",
                )
            data: bytes | None = message.get("bytes")
            text: str | None = message.get("text")
            size = len(data) if data is not None else len((text or "").encode())
            if size > self.config.max_message_bytes:
                raise Fatal(
                    P.CLOSE_TOO_BIG,
                    P.MESSAGE_TOO_LARGE,
                    f"message of {size} bytes is larger than the limit of {self.config.max_message_bytes}",
                )
            try:
                if data is not None:
                    self._binary(data)
                else:
                    self._text(text or "")
            except ProtocolError as exc:
                self.errors += 1
                self.send(P.error(exc.code, str(exc)))
                if self.errors >= MAX_ERRORS:
                    raise Fatal(P.CLOSE_POLICY, P.TOO_MANY_ERRORS, f"{MAX_ERRORS} protocol errors; closing") from None
            except KeyFaceError as exc:
                if self.session.closed:
                    return
                raise Fatal(P.CLOSE_INTERNAL, P.INTERNAL, str(exc)) from None

    # -- messages -------------------------------------------------------------------------------

    def _binary(self, data: bytes) -> None:
        if self.format is None:
            raise ProtocolError(
                P.NO_FORMAT,
                "binary audio needs a format first: send "
                '{"type": "start", "sample_rate": 16000, "channels": 1, "encoding": "pcm16"}',
            )
        self._push(self.format, data)

    def _text(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProtocolError(P.BAD_JSON, "text messages must be JSON objects with a 'type'") from None
        if not isinstance(msg, dict):
            raise ProtocolError(P.BAD_MESSAGE, "a message must be a JSON object with a 'type'")
        if "type" not in msg and "event_type" in msg:  # Tavus envelope
            msg = {**msg, **(msg.get("properties") or {}), "type": msg["event_type"]}
        kind = msg.get("type")
        if not isinstance(kind, str):
            raise ProtocolError(P.BAD_MESSAGE, "a message must have a string 'type'")
        canonical = P.ALIASES.get(kind)
        if canonical is None:
            raise ProtocolError(
                P.UNKNOWN_TYPE,
                f"unknown message type {kind!r}; expected one of: "
                "start, audio, end_utterance, interrupt, emotion, ping",
            )
        getattr(self, "_on_" + canonical)(msg)

    def _format_of(self, msg: dict[str, Any], default: AudioFormat | None) -> AudioFormat:
        keys = ("sample_rate", "channels", "num_channels", "encoding")
        if default is not None and not any(k in msg for k in keys):
            return default
        base = default or AudioFormat()
        rate = msg.get("sample_rate", base.sample_rate)
        channels = msg.get("channels", msg.get("num_channels", base.channels))
        encoding = msg.get("encoding", base.encoding)
        try:
            fmt = AudioFormat(encoding=encoding, sample_rate=rate, channels=channels)
        except InputError as exc:
            raise ProtocolError(P.UNSUPPORTED_FORMAT, str(exc)) from None
        if fmt.sample_rate not in self.config.sample_rates:
            allowed = ", ".join(map(str, self.config.sample_rates))
            raise ProtocolError(
                P.UNSUPPORTED_FORMAT, f"sample rate {fmt.sample_rate} Hz is not accepted here; use one of {allowed}"
            )
        return fmt

    def _on_start(self, msg: dict[str, Any]) -> None:
        self.format = self._format_of(msg, None)
        self.send(
            P.event(
                "started",
                encoding=self.format.encoding,
                sample_rate=self.format.sample_rate,
                channels=self.format.channels,
            )
        )

    def _on_audio(self, msg: dict[str, Any]) -> None:
        payload = msg.get("audio", msg.get("data"))
        if not isinstance(payload, str):
            raise ProtocolError(P.BAD_MESSAGE, "an audio message needs 'audio': base64-encoded PCM")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(P.BAD_AUDIO, "'audio' is not valid base64") from None
        self._push(self._format_of(msg, self.format), data)
        if msg.get("done") is True:
            self._on_end_utterance(msg)

    def _push(self, fmt: AudioFormat, data: bytes) -> None:
        if self.ingest is None or self.ingest.format != fmt:
            self._flush()
            self.ingest = AudioIngest(fmt)
        try:
            samples = self.ingest.push_bytes(data)
        except InputError as exc:
            raise ProtocolError(P.BAD_AUDIO, str(exc)) from None
        self._to_session(samples)

    def _to_session(self, samples: np.ndarray) -> None:
        try:
            self.session.push_audio(samples)
        except InputError as exc:
            self.metrics.audio_refused.inc()
            raise ProtocolError(P.BUFFER_FULL, f"audio refused: {exc}") from None

    def _flush(self) -> None:
        if self.ingest is not None:
            tail = self.ingest.flush()
            if len(tail):
                with contextlib.suppress(InputError):
                    self.session.push_audio(tail)

    def _on_end_utterance(self, msg: dict[str, Any]) -> None:
        self._flush()
        self.session.end_utterance()

    def _on_interrupt(self, msg: dict[str, Any]) -> None:
        if self.ingest is not None:
            self.ingest.reset()
        answer = self.session.interrupt()
        if answer is not None:
            self.send(answer)

    def _on_emotion(self, msg: dict[str, Any]) -> None:
        emotion, ramp = parse_emotion(msg)
        self.session.set_emotion(emotion, ramp)
        self.send(P.event("emotion_set", valence=emotion.valence, arousal=emotion.arousal, ramp=ramp))

    def _on_ping(self, msg: dict[str, Any]) -> None:
        self.send(P.event("pong", time=msg.get("time")))

    def _finish_utterance(self) -> None:
        """A socket that goes away mid-utterance: play what arrived, then idle."""
        if self.session.closed:
            return
        with contextlib.suppress(KeyFaceError):
            self._flush()
            self.session.end_utterance()


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code, reason)


async def reject(ws: WebSocket, close_code: int, code: str, message: str) -> None:
    """Accept, say why in an ``error`` event, and close with ``close_code``."""
    await ws.accept()
    with contextlib.suppress(Exception):
        await ws.send_text(json.dumps(P.error(code, message)))
    await _close(ws, close_code, code)


async def serve_audio_socket(
    ws: WebSocket, session_id: str, manager: SessionManager, auth: Auth, metrics: Metrics
) -> None:
    token = token_from(ws.headers, ws.query_params)
    session = manager.get(session_id)
    try:
        if auth.enabled and token is None:
            raise AuthError("missing token: pass ?token=<session token> or an Authorization header")
        if session is None:
            metrics.protocol_errors.labels(P.UNKNOWN_SESSION).inc()
            await reject(ws, P.CLOSE_UNKNOWN_SESSION, P.UNKNOWN_SESSION, f"no session {session_id!r}")
            return
        auth.check_session(token, session.token)
    except AuthError as exc:
        metrics.protocol_errors.labels(P.UNAUTHORIZED).inc()
        await reject(ws, P.CLOSE_UNAUTHORIZED, P.UNAUTHORIZED, str(exc))
        return
    if not session.attach_socket():
        metrics.protocol_errors.labels(P.BUSY).inc()
        await reject(ws, P.CLOSE_BUSY, P.BUSY, "another audio socket is already connected to this session")
        return
    try:
        await ws.accept()
    except Exception:
        session.detach_socket()
        raise
    await AudioSocket(ws, session, manager.config, metrics).run()
