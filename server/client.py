"""Python client for a running KeyFace Live server (what ``keyface say`` / ``keyface stream`` use).

    async with KeyFaceClient("http://127.0.0.1:8080", token=None) as client:
        session = await client.create_session(emotion="happy")
        async with client.audio(session) as audio:
            await audio.stream(samples, 16000)          # real-time pace, then end of utterance
            finished = await audio.wait_for("playback_finished")

:class:`MediaReceiver` is an aiortc peer that receives a session's video and audio (to record it,
check it or feed it elsewhere).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets

from engine.audio.base import SAMPLE_RATE
from engine.errors import KeyFaceError


class ClientError(KeyFaceError):
    """The server refused a request (``code`` is the server's error code)."""

    def __init__(self, message: str, code: str = "error", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class Session:
    session_id: str
    token: str | None
    offer_url: str
    audio_url: str
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    image_size: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], token: str | None = None) -> Session:
        return cls(
            session_id=data["session_id"],
            token=data.get("token", token),
            offer_url=data.get("offer_url", f"/v1/sessions/{data['session_id']}/offer"),
            audio_url=data.get("audio_url", f"/v1/sessions/{data['session_id']}/audio"),
            ice_servers=data.get("ice_servers", []),
            image_size=data.get("image_size"),
        )


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        err = response.json()["error"]
        raise ClientError(err["message"], err["code"], response.status_code)
    except (ValueError, KeyError, TypeError):
        raise ClientError(f"HTTP {response.status_code}: {response.text[:200]}", "http", response.status_code) from None


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] (or int16) → little-endian PCM16 bytes."""
    if samples.dtype == np.int16:
        return samples.astype("<i2").tobytes()
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class KeyFaceClient:
    """HTTP side of the API (sessions, signalling, TTS); :meth:`audio` opens the websocket."""

    def __init__(self, server: str = "http://127.0.0.1:8080", token: str | None = None, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.http = httpx.AsyncClient(base_url=self.server, timeout=timeout)

    async def __aenter__(self) -> KeyFaceClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    def _headers(self, token: str | None) -> dict[str, str]:
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _request(self, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
        try:
            response = await self.http.request(method, path, headers=self._headers(token), **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the server at {self.server}: {exc}", "unreachable") from None
        _raise_for(response)
        return response

    async def health(self) -> dict[str, Any]:
        return (await self._request("GET", "/health")).json()

    async def create_session(
        self,
        image: str | Path | bytes | None = None,
        emotion: str | dict[str, float] | None = None,
        seed: int | None = None,
    ) -> Session:
        body: dict[str, Any] = {}
        if image is not None:
            raw = image if isinstance(image, bytes) else Path(image).read_bytes()
            body["image"] = base64.b64encode(raw).decode()
        if emotion is not None:
            body["emotion"] = emotion
        if seed is not None:
            body["seed"] = seed
        data = (await self._request("POST", "/v1/sessions", json=body)).json()
        return Session.from_json(data)

    async def list_sessions(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "/v1/sessions")).json()["sessions"]

    async def close_session(self, session: Session) -> None:
        await self._request("DELETE", f"/v1/sessions/{session.session_id}", session.token)

    async def offer(self, session: Session, sdp: str) -> str:
        data = (
            await self._request("POST", session.offer_url, session.token, json={"sdp": sdp, "type": "offer"})
        ).json()
        return data["sdp"]

    async def tts(self, session: Session, text: str, voice: str = "en", speed: int = 165) -> np.ndarray:
        """Server-side speech synthesis: 16 kHz mono float32."""
        from server.tts import read_wav

        body = {"text": text, "voice": voice, "speed": speed}
        response = await self._request("POST", f"/v1/sessions/{session.session_id}/tts", session.token, json=body)
        return read_wav(response.content)

    def audio(self, session: Session) -> AudioStream:
        url = self.server.replace("http", "ws", 1) + session.audio_url
        return AudioStream(url, session.token or self.token)


class AudioStream:
    """The audio websocket of one session: send audio and controls, receive events."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self.ws: Any = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ready: dict[str, Any] | None = None
        self.close_code: int | None = None
        self._reader: asyncio.Task | None = None
        self._format: tuple[int, int] | None = None

    async def __aenter__(self) -> AudioStream:
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self.ws = await websockets.connect(self.url, additional_headers=headers, max_size=None)
        except (OSError, websockets.InvalidHandshake) as exc:
            raise ClientError(f"cannot open the audio websocket {self.url}: {exc}", "unreachable") from None
        self._reader = asyncio.create_task(self._read())
        first = await self.next_event()
        if first.get("type") != "ready":
            raise ClientError(first.get("message", "refused"), first.get("code", "error"))
        self.ready = first
        return first

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    with contextlib.suppress(ValueError):
                        self.events.put_nowait(json.loads(message))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.events.put_nowait({"type": "closed", "code": self.ws.close_code, "reason": self.ws.close_reason})

    async def next_event(self, timeout: float | None = 30.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def wait_for(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next event of type ``kind`` (an ``error`` or ``closed`` raises ClientError)."""
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next_event(max(0.001, deadline - time.monotonic()))
            if event["type"] == kind:
                return event
            if event["type"] in ("error", "closed") and kind not in ("error", "closed"):
                raise ClientError(
                    event.get("message") or f"socket closed ({event.get('code')})", event.get("code", "closed")
                )

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def start(self, sample_rate: int = SAMPLE_RATE, channels: int = 1, encoding: str = "pcm16") -> None:
        await self.send_json({"type": "start", "sample_rate": sample_rate, "channels": channels, "encoding": encoding})
        self._format = (sample_rate, channels)

    async def send_pcm(self, data: bytes | np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Raw PCM16 (bytes) or samples (float / int16, mono) as one binary message."""
        if self._format != (sample_rate, 1):
            await self.start(sample_rate)
        await self.ws.send(data if isinstance(data, bytes) else to_pcm16(np.asarray(data)))

    async def stream(
        self,
        samples: np.ndarray,
        sample_rate: int = SAMPLE_RATE,
        chunk_seconds: float = 0.04,
        lead_seconds: float = 0.3,
        realtime: bool = True,
        end: bool = True,
    ) -> None:
        """Send mono samples in chunks at real-time pace (``lead_seconds`` ahead), then end the utterance."""
        step = max(1, round(chunk_seconds * sample_rate))
        start = time.perf_counter()
        for pos in range(0, len(samples), step):
            if realtime:
                due = start + pos / sample_rate - lead_seconds
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_pcm(samples[pos : pos + step], sample_rate)
        if end:
            await self.end_utterance()

    async def end_utterance(self) -> None:
        await self.send_json({"type": "end_utterance"})

    async def interrupt(self) -> None:
        await self.send_json({"type": "interrupt"})

    async def set_emotion(
        self, preset: str | None = None, valence: float | None = None, arousal: float | None = None, ramp: float = 0.5
    ) -> None:
        msg: dict[str, Any] = {"type": "emotion", "ramp": ramp}
        if preset is not None:
            msg["preset"] = preset
        else:
            msg.update(valence=valence, arousal=arousal)
        await self.send_json(msg)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)


@dataclass
class Received:
    """One decoded frame: its RTP timestamp, when it arrived (perf_counter) and the frame."""

    pts: int
    at: float
    frame: Any


class MediaReceiver:
    """An aiortc peer receiving a session's video and audio; decoded frames are kept in lists."""

    def __init__(self, client: KeyFaceClient, session: Session, keep_video: bool = True) -> None:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

        servers = [RTCIceServer(**s) for s in session.ice_servers] or None
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.client = client
        self.session = session
        self.keep_video = keep_video
        self.video: list[Received] = []
        self.audio: list[Received] = []
        self._tasks: list[asyncio.Task] = []
        self.connected = asyncio.Event()

    async def connect(self, codec: str | None = None) -> None:
        from aiortc import RTCRtpReceiver, RTCSessionDescription

        video = self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        if codec:
            caps = RTCRtpReceiver.getCapabilities("video").codecs
            video.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() in (f"video/{codec}".lower(), "video/rtx")]
            )

        @self.pc.on("track")
        def on_track(track) -> None:
            self._tasks.append(asyncio.create_task(self._consume(track)))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await self.client.offer(self.session, self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def _consume(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        out = self.video if track.kind == "video" else self.audio
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            keep = frame if (track.kind == "audio" or self.keep_video) else None
            out.append(Received(frame.pts, time.perf_counter(), keep))

    def audio_samples(self, rate: int = SAMPLE_RATE) -> np.ndarray:
        """Received audio as mono float32 at ``rate``, placed by RTP timestamp (gaps are zeros)."""
        from engine.audio.resample import resample

        if not self.audio:
            return np.zeros(0, np.float32)
        first = self.audio[0].pts
        chunks = [(r.pts - first, _mono(r.frame)) for r in self.audio]
        total = max(pos + len(x) for pos, x in chunks)
        out = np.zeros(total, np.float32)
        for pos, x in chunks:
            out[pos : pos + len(x)] = x
        source_rate = self.audio[0].frame.sample_rate
        return resample(out, source_rate, rate) if source_rate != rate else out

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _mono(frame) -> np.ndarray:
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    pcm = data.reshape(channels, -1).T if frame.format.is_planar else data.reshape(-1, channels)
    scale = 32768.0 if pcm.dtype == np.int16 else 1.0
    return (pcm.astype(np.float32) / scale).mean(axis=1)


async def iter_events(stream: AudioStream) -> AsyncIterator[dict[str, Any]]:
    while True:
        event = await stream.next_event(None)
        yield event
        if event["type"] == "closed":
            return


async def pick_session(client: KeyFaceClient, session_id: str | None = None) -> tuple[Session, bool]:
    """The session to speak in: ``session_id``, else the newest open one, else a new one.

    Returns (session, whether it was created here).
    """
    if session_id:
        return Session.from_json({"session_id": session_id}, token=client.token), False
    try:
        sessions = await client.list_sessions()
    except ClientError as exc:
        if exc.status == 401:
            raise ClientError(
                "listing sessions needs the API token: pass --token, or --session ID with that session's token",
                "unauthorized",
                401,
            ) from None
        raise
    if sessions:
        newest = min(sessions, key=lambda s: s["age_seconds"])
        return Session.from_json(newest, token=client.token), False
    return await client.create_session(), True
