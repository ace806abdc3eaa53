"""The engine interface the server uses: real-time avatar sessions on one loaded model.

:class:`AvatarEngine` owns the model, batches network calls across its sessions and hands out
:class:`AvatarSession` objects. Each session computes in its own worker thread and presents frames
on a wall clock at 25 fps through :meth:`AvatarSession.frames`; inputs (audio, end of utterance,
interrupt, emotion) are thread-safe and may come from any coroutine. Nothing here knows about HTTP,
WebRTC or websockets.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..bundle import ModelBundle, load_bundle
from ..emotion import Emotion
from ..errors import InputError, KeyFaceError
from ..media import load_image
from .batching import BatchedNetwork
from .clock import FRAME_SECONDS
from .engine import LiveEngine
from .session import AudioBufferFull, InterruptReport, LiveConfig, LiveSession, SessionStats, VideoFrame


@dataclass
class SessionEvent:
    kind: str
    """``speech_started`` or ``playback_finished``."""
    frame: int
    interrupted: bool = False

    @property
    def seconds(self) -> float:
        return self.frame * FRAME_SECONDS


class AvatarEngine:
    """A loaded model serving real-time sessions (network calls batched across sessions)."""

    def __init__(
        self,
        bundle: ModelBundle,
        config: LiveConfig | None = None,
        max_sessions: int = 8,
        batch_window_seconds: float = 0.004,
    ) -> None:
        self.bundle = bundle
        self.config = config or LiveConfig()
        self.max_sessions = max_sessions
        base = LiveEngine(bundle)
        self.batched = {name: BatchedNetwork(net, batch_window_seconds) for name, net in base.networks.items()}
        self.engine = LiveEngine(bundle, dict(self.batched))
        self.sessions: dict[int, AvatarSession] = {}
        self._ids = 0
        self._lock = threading.Lock()

    @classmethod
    def load(cls, weights: str | Path, device: str = "cpu", **kwargs) -> AvatarEngine:
        return cls(load_bundle(weights, device=device), **kwargs)

    @property
    def image_size(self) -> int:
        return self.bundle.image_size

    def default_identity(self) -> torch.Tensor:
        if self.bundle.identity_image is None:
            raise InputError("this model has no default identity image; send one")
        return load_image(self.bundle.identity_image)

    def open_session(
        self, identity: torch.Tensor | None = None, emotion: Emotion | None = None, seed: int | None = None
    ) -> AvatarSession:
        """Start a session (its worker thread starts computing idle frames at once)."""
        with self._lock:
            if len(self.sessions) >= self.max_sessions:
                raise KeyFaceError(f"too many sessions: the limit is {self.max_sessions}")
            self._ids += 1
            sid = self._ids
        image = self.default_identity() if identity is None else identity
        config = self.config if seed is None else LiveConfig(**{**self.config.__dict__, "seed": seed})
        live = LiveSession(self.engine, image, emotion, config)
        session = AvatarSession(self, sid, live)
        with self._lock:
            self.sessions[sid] = session
            self._update_participants()
        return session

    def _closed(self, session: AvatarSession) -> None:
        with self._lock:
            self.sessions.pop(session.id, None)
            self._update_participants()

    def _update_participants(self) -> None:
        for net in self.batched.values():
            net.participants = max(1, len(self.sessions))

    def close(self) -> None:
        for session in list(self.sessions.values()):
            session.close()


class AvatarSession:
    """One live avatar: push audio in, iterate real-time frames out."""

    def __init__(self, engine: AvatarEngine, sid: int, live: LiveSession) -> None:
        self.engine = engine
        self.id = sid
        self.live = live
        self.closed = False
        self._wake = threading.Event()
        self._events: asyncio.Queue[SessionEvent] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._speaking = False
        self._interrupted_at: int | None = None
        self.first_frame_delay: float | None = None
        self._first_audio_at: float | None = None
        self._worker = threading.Thread(target=self._work, name=f"avatar-session-{sid}", daemon=True)
        self._worker.start()

    # -- inputs (thread-safe) ---------------------------------------------------------------

    def push_audio(self, samples: np.ndarray) -> None:
        """16 kHz mono float32 speech; raises :class:`InputError` when too much is queued."""
        self._check_open()
        if self._first_audio_at is None:
            self._first_audio_at = time.perf_counter()
        try:
            self.live.push_audio(samples)
        except AudioBufferFull as exc:
            raise InputError(str(exc)) from None
        self._wake.set()

    def end_utterance(self) -> None:
        self._check_open()
        self.live.end_utterance()
        self._wake.set()

    def interrupt(self) -> InterruptReport:
        self._check_open()
        report = self.live.interrupt()
        self._interrupted_at = report.position if report.interrupted else None
        self._wake.set()
        return report

    def set_emotion(self, emotion: Emotion, ramp_seconds: float = 0.5) -> None:
        self._check_open()
        self.live.set_emotion(emotion, max(1, round(ramp_seconds * 25)))

    # -- outputs -----------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[VideoFrame]:
        """Frames at 25 fps on the wall clock, for as long as the session is open."""
        self._loop = asyncio.get_running_loop()
        start = self._loop.time()
        shown = 0
        held = 0
        while not self.closed:
            deadline = start + (shown + held) * FRAME_SECONDS
            delay = deadline - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = self.live.take_frame()
            if frame is None:
                held += 1
                continue
            shown += 1
            self._track(frame)
            yield frame

    async def events(self) -> AsyncIterator[SessionEvent]:
        """``speech_started`` / ``playback_finished`` as playback reaches them."""
        if self._events is None:
            self._events = asyncio.Queue()
        while not self.closed:
            yield await self._events.get()

    def _track(self, frame: VideoFrame) -> None:
        if frame.speech and not self._speaking:
            self._speaking = True
            if self.first_frame_delay is None and self._first_audio_at is not None:
                self.first_frame_delay = time.perf_counter() - self._first_audio_at
            self._emit(SessionEvent("speech_started", frame.index))
        elif not frame.speech and self._speaking:
            self._speaking = False
            interrupted = self._interrupted_at is not None
            self._interrupted_at = None
            self._emit(SessionEvent("playback_finished", frame.index, interrupted))
        elif not frame.speech and self._interrupted_at is not None:
            # Interrupted before any speech frame was shown.
            self._interrupted_at = None
            self._emit(SessionEvent("playback_finished", frame.index, True))

    def _emit(self, event: SessionEvent) -> None:
        if self._events is None:
            self._events = asyncio.Queue()
        self._events.put_nowait(event)

    @property
    def playback_frame(self) -> int:
        return self.live.playback

    @property
    def stats(self) -> SessionStats:
        """Frame counters and stage compute times (read-only, for monitoring)."""
        return self.live.stats

    # -- lifecycle -----------------------------------------------------------------------------

    def _work(self) -> None:
        torch.set_grad_enabled(False)
        while not self.closed:
            try:
                did = self.live.work()
            except Exception:  # a broken session must not take others down
                self.closed = True
                self.engine._closed(self)  # nor keep its place in the session limit
                raise
            if not did:
                self._wake.wait(0.005)
                self._wake.clear()

    def _check_open(self) -> None:
        if self.closed:
            raise KeyFaceError(f"session {self.id} is closed")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        self._worker.join(timeout=5)
        self.engine._closed(self)
