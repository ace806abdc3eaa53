"""Server-side sessions: one engine session, its frame pump, its peer and its event subscribers.

A :class:`ServerSession` runs two tasks for its whole life:

* the **pump** iterates the engine's 25 fps frames (the one clock of the session) and hands each
  to the current WebRTC peer's tracks (if any), counting frames and late frames;
* the **event relay** turns engine events into protocol events for the audio websocket.

Closing a session (DELETE, idle timeout, engine failure, server shutdown) cancels both tasks,
closes the peer connection and its tracks, joins the engine's worker thread and frees GPU cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import torch
from aiortc import RTCPeerConnection

from engine.audio.base import SAMPLE_RATE
from engine.emotion import Emotion
from engine.errors import KeyFaceError
from engine.live.runner import AvatarEngine, AvatarSession

from . import protocol
from .auth import new_session_id, new_token
from .config import ServerConfig
from .media import MediaFeed
from .metrics import Metrics

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.04
INTERRUPT_IDLE_WAIT = 1.0
"""Longest wait for fresh idle frames before answering an interrupt anyway (seconds)."""
INTERRUPT_ANSWER_DEADLINE = 2.0
"""An interrupt is answered by then even if the engine reported nothing."""


class SessionLimit(KeyFaceError):
    """No room for another session (HTTP 503)."""


class ServerSession:
    def __init__(self, manager: SessionManager, sid: str, avatar: AvatarSession, emotion: Emotion) -> None:
        self.manager = manager
        self.metrics = manager.metrics
        self.id = sid
        self.token = new_token()
        self.avatar = avatar
        self.emotion = emotion
        self.created = time.monotonic()
        self.detached_since: float | None = self.created
        """When the session last lost (or never had) both its peer and its audio socket."""
        self.closed = False
        self.close_reason: str | None = None
        self.peer: RTCPeerConnection | None = None
        self.feed: MediaFeed | None = None
        self.peer_state = "none"
        self._peer_counted = False
        self.socket_attached = False
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._tasks: list[asyncio.Task] = []
        # speech bookkeeping
        self.speech_start: int | None = None
        self._utterance_open = False
        self._utterance_audio: deque[float] = deque()
        self._last_speech_started = 0.0
        self._interrupt: tuple[float, int] | None = None
        """(received at, playback frame) of an interrupt awaiting its playback_finished."""
        self._idle = asyncio.Event()
        self._deadline: asyncio.TimerHandle | None = None
        # stream statistics
        self.frames = 0
        self.late_frames = 0
        self.fps = 0.0
        self._last_frame_at: float | None = None
        self._render_seen = (0, 0, 0.0, 0.0)
        self._late_seen = 0
        self._warned_at = -1e9

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._pump(), name=f"keyface-pump-{self.id}"),
            asyncio.create_task(self._relay_events(), name=f"keyface-events-{self.id}"),
        ]

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.info("session closed", extra={"session": self.id, "reason": reason})
        for queue in list(self._subscribers):
            queue.put_nowait(protocol.event("session_closed", reason=reason))
            queue.put_nowait(None)
        if self._deadline is not None:
            self._deadline.cancel()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.detach_peer()
        await asyncio.to_thread(self.avatar.close)
        self.metrics.sessions_closed.labels(reason).inc()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def attached(self) -> bool:
        return self.socket_attached or self.peer is not None

    def _update_detached(self) -> None:
        self.detached_since = None if self.attached else time.monotonic()

    # -- peer ---------------------------------------------------------------------------------

    def new_feed(self) -> MediaFeed:
        return MediaFeed(on_start=self._media_started)

    async def attach_peer(self, pc: RTCPeerConnection, feed: MediaFeed) -> None:
        """Use this peer from now on (a previous one is closed: one viewer per session)."""
        await self.detach_peer()
        self.peer, self.feed, self.peer_state = pc, feed, pc.connectionState
        self._update_detached()

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is not self.peer:
                return
            self.peer_state = pc.connectionState
            log.info("peer %s", pc.connectionState, extra={"session": self.id})
            if pc.connectionState == "connected" and not self._peer_counted:
                self._peer_counted = True
                self.metrics.peers_active.inc()
            if pc.connectionState in ("failed", "closed"):
                await self.detach_peer()

    async def detach_peer(self) -> None:
        pc, feed = self.peer, self.feed
        if pc is None:
            return
        if self._peer_counted:
            self._peer_counted = False
            self.metrics.peers_active.dec()
        self.peer, self.feed, self.peer_state = None, None, "none"
        if feed is not None:
            feed.stop()
        await pc.close()
        self._update_detached()

    def _media_started(self, frame: int) -> None:
        self.publish(protocol.event("media_started", frame=frame))

    # -- audio socket -----------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    def attach_socket(self) -> bool:
        if self.socket_attached:
            return False
        self.socket_attached = True
        self.metrics.sockets_active.inc()
        self._update_detached()
        return True

    def detach_socket(self) -> None:
        if self.socket_attached:
            self.socket_attached = False
            self.metrics.sockets_active.dec()
            self._update_detached()

    def publish(self, message: dict[str, Any]) -> None:
        for queue in self._subscribers:
            queue.put_nowait(message)

    # -- inputs -----------------------------------------------------------------------------

    def push_audio(self, samples) -> None:
        """16 kHz mono float32 speech (InputError when the buffer is full)."""
        if not len(samples):
            return
        self.avatar.push_audio(samples)
        if not self._utterance_open:
            self._utterance_open = True
            self._utterance_audio.append(time.perf_counter())
            if self.peer is None:
                self.publish(
                    protocol.warning("no_viewer", "audio accepted, but no WebRTC peer is watching this session")
                )
        self.metrics.audio_seconds.inc(len(samples) / SAMPLE_RATE)

    def end_utterance(self) -> None:
        self._utterance_open = False
        self.avatar.end_utterance()

    def interrupt(self) -> dict[str, Any] | None:
        """Stop speaking. Returns the immediate answer when nothing was playing, else None (the
        answer, ``playback_finished``, follows once the stream is back to idle)."""
        report = self.avatar.interrupt()
        self._utterance_open = False
        self._utterance_audio.clear()
        if not report.interrupted:
            return self._finished(report.position, interrupted=False)
        self._idle.clear()
        pending = self._interrupt = (time.perf_counter(), report.position)
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_later(INTERRUPT_ANSWER_DEADLINE, self._answer_late, pending)
        return None

    def _answer_late(self, pending: tuple[float, int]) -> None:
        """Answer an interrupt whose playback_finished the engine never reported (e.g. superseded)."""
        if self._interrupt is pending and not self.closed:
            self._interrupt = None
            self.publish(self._finished(pending[1], interrupted=True))

    def set_emotion(self, emotion: Emotion, ramp_seconds: float) -> None:
        self.avatar.set_emotion(emotion, ramp_seconds)
        self.emotion = emotion

    def _finished(self, frame: int, interrupted: bool) -> dict[str, Any]:
        played = 0.0 if self.speech_start is None else max(0, frame - self.speech_start) * FRAME_SECONDS
        self.speech_start = None
        return protocol.event(
            "playback_finished", playback_position=round(played, 3), interrupted=interrupted, frame=frame
        )

    # -- the clock ----------------------------------------------------------------------------

    async def _pump(self) -> None:
        frames = self.avatar.frames()
        try:
            async for frame in frames:
                now = time.perf_counter()
                if self._last_frame_at is not None:
                    rate = 1.0 / max(1e-3, now - self._last_frame_at)
                    self.fps = rate if self.fps == 0.0 else 0.9 * self.fps + 0.1 * rate
                self._last_frame_at = now
                self.frames += 1
                self.metrics.frames.inc()
                if frame.late:
                    self.late_frames += 1
                    self.metrics.late_frames.inc()
                elif not frame.speech and self._interrupt is not None:
                    self._idle.set()
                if self.feed is not None:
                    self.feed.push(frame)
                if self.frames % 25 == 0:
                    self._observe_render()
                    self._check_pace()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("frame pump failed", extra={"session": self.id})
        finally:
            await frames.aclose()
        if not self.closed:  # the engine session ended by itself (worker failure)
            self.manager.spawn(self.manager.close(self.id, "engine_error"))

    def _check_pace(self) -> None:
        """Warn (at most every 5 s) when more than a fifth of the last second's frames were late."""
        late, self._late_seen = self.late_frames - self._late_seen, self.late_frames
        now = time.monotonic()
        if late > 5 and now - self._warned_at > 5.0:
            self._warned_at = now
            self.publish(
                protocol.warning(
                    "falling_behind",
                    f"{late} of the last 25 frames were not ready in time (the previous image was repeated); "
                    "the server is overloaded",
                )
            )

    def _observe_render(self) -> None:
        stats = self.avatar.stats
        windows, segments = stats.keyframe_windows, stats.segments
        kf = stats.per_stage_seconds["keyframe"]
        seg = stats.per_stage_seconds["interpolation"] + stats.per_stage_seconds["decode"]
        w0, s0, kf0, seg0 = self._render_seen
        if windows > w0:
            for _ in range(windows - w0):
                self.metrics.render_seconds.labels("keyframe_window").observe((kf - kf0) / (windows - w0))
        if segments > s0:
            for _ in range(segments - s0):
                self.metrics.render_seconds.labels("segment").observe((seg - seg0) / (segments - s0))
        self._render_seen = (windows, segments, kf, seg)

    async def _relay_events(self) -> None:
        events = self.avatar.events()
        try:
            async for ev in events:
                if ev.kind == "speech_started":
                    self.speech_start = ev.frame
                    self._last_speech_started = time.perf_counter()
                    delay = None
                    if self._utterance_audio:
                        delay = self._last_speech_started - self._utterance_audio.popleft()
                        self.metrics.first_frame_delay.observe(delay)
                    self.publish(
                        protocol.event(
                            "speech_started",
                            frame=ev.frame,
                            time=round(ev.seconds, 3),
                            latency=None if delay is None else round(delay, 3),
                        )
                    )
                elif ev.kind == "playback_finished":
                    pending = self._interrupt
                    if ev.interrupted and pending is not None:
                        received, position = pending
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._idle.wait(), INTERRUPT_IDLE_WAIT)
                        if self._interrupt is not pending:  # answered by the deadline meanwhile
                            continue
                        self._interrupt = None
                        self.metrics.interrupt_latency.observe(time.perf_counter() - received)
                        self.publish(self._finished(position, interrupted=True))
                    else:
                        self.publish(self._finished(ev.frame, interrupted=ev.interrupted))
                    started = self._last_speech_started
                    while self._utterance_audio and self._utterance_audio[0] < started:
                        self._utterance_audio.popleft()
        finally:
            await events.aclose()

    # -- reporting ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "session_id": self.id,
            "age_seconds": round(time.monotonic() - self.created, 3),
            "peer": self.peer_state,
            "audio_socket": self.socket_attached,
            "speaking": self.speech_start is not None,
            "frames": self.frames,
            "late_frames": self.late_frames,
            "fps": round(self.fps, 2),
            "first_frame": None if self.feed is None else self.feed.first_frame,
            "emotion": {"valence": self.emotion.valence, "arousal": self.emotion.arousal},
        }


class SessionManager:
    """All sessions of one server on one engine; enforces limits and timeouts."""

    def __init__(self, engine: AvatarEngine, config: ServerConfig, metrics: Metrics) -> None:
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self.sessions: dict[str, ServerSession] = {}
        self._opening = 0
        self._reaper: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        metrics.bind_fps(self.mean_fps)

    async def create(self, identity: torch.Tensor | None, emotion: Emotion, seed: int | None) -> ServerSession:
        if len(self.sessions) + self._opening >= self.config.max_sessions:
            raise SessionLimit(f"too many sessions: the limit is {self.config.max_sessions}; close one first")
        self._opening += 1
        try:
            avatar = await asyncio.to_thread(self.engine.open_session, identity, emotion, seed)
        except KeyFaceError as exc:
            if "too many sessions" in str(exc):
                raise SessionLimit(str(exc)) from None
            raise
        finally:
            self._opening -= 1
        sid = new_session_id()
        session = ServerSession(self, sid, avatar, emotion)
        self.sessions[sid] = session
        session.start()
        self.metrics.sessions_opened.inc()
        self.metrics.sessions_active.set(len(self.sessions))
        log.info("session opened", extra={"session": sid})
        return session

    def spawn(self, coro) -> None:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def get(self, sid: str) -> ServerSession | None:
        return self.sessions.get(sid)

    async def close(self, sid: str, reason: str) -> bool:
        session = self.sessions.pop(sid, None)
        if session is None:
            return False
        self.metrics.sessions_active.set(len(self.sessions))
        await session.close(reason)
        return True

    async def close_all(self, reason: str = "shutdown") -> None:
        await asyncio.gather(*(self.close(sid, reason) for sid in list(self.sessions)))

    def mean_fps(self) -> float:
        rates = [s.fps for s in self.sessions.values()]
        return sum(rates) / len(rates) if rates else 0.0

    # -- timeouts -------------------------------------------------------------------------------

    def start_reaper(self, interval: float = 0.5) -> None:
        self.loop = asyncio.get_running_loop()
        self._reaper = asyncio.create_task(self._reap(interval), name="keyface-reaper")

    async def stop_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None

    async def _reap(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            expired = [(sid, reason) for sid, s in self.sessions.items() if (reason := self._expired(s))]
            for sid, reason in expired:
                await self.close(sid, reason)

    def _expired(self, session: ServerSession) -> str | None:
        now = time.monotonic()
        if session.detached_since is not None and now - session.detached_since > self.config.idle_timeout:
            return "idle_timeout"
        if self.config.max_session_seconds and now - session.created > self.config.max_session_seconds:
            return "max_duration"
        return None
