"""Prometheus metrics of one server (own registry, so several servers can live in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions_active = Gauge("keyface_sessions_active", "Open avatar sessions", registry=r)
        self.sessions_opened = Counter("keyface_sessions_opened", "Sessions opened", registry=r)
        self.sessions_closed = Counter("keyface_sessions_closed", "Sessions closed", ["reason"], registry=r)
        self.peers_active = Gauge("keyface_peers_connected", "Connected WebRTC peers", registry=r)
        self.sockets_active = Gauge("keyface_audio_sockets", "Connected audio websockets", registry=r)
        self.frames = Counter("keyface_frames", "Video frames presented", registry=r)
        self.late_frames = Counter(
            "keyface_late_frames", "Frames not ready in time (previous image repeated)", registry=r
        )
        self.fps = Gauge("keyface_stream_fps", "Mean presented frame rate over open sessions", registry=r)
        self.first_frame_delay = Histogram(
            "keyface_first_frame_delay_seconds",
            "First audio of an utterance received → its first speech frame sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.render_seconds = Histogram(
            "keyface_render_seconds",
            "Compute time of a unit of rendering",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.interrupt_latency = Histogram(
            "keyface_interrupt_latency_seconds",
            "Interrupt received → playback_finished sent with the stream back to idle",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audio_seconds = Counter("keyface_audio_received_seconds", "Speech audio accepted (s)", registry=r)
        self.audio_refused = Counter("keyface_audio_refused", "Audio chunks refused (back-pressure)", registry=r)
        self.protocol_errors = Counter("keyface_protocol_errors", "Errors reported to clients", ["code"], registry=r)

    def bind_fps(self, source: Callable[[], float]) -> None:
        self.fps.set_function(source)

    def render(self) -> bytes:
        return generate_latest(self.registry)
