"""Driving a session with a clock: a virtual one (tests, benchmarks) or wall time (the server)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..audio.base import SAMPLE_RATE
from .session import LiveSession, VideoFrame

FRAME_SECONDS = 1 / 25

WorkCost = Callable[[float], float]
"""Maps the wall seconds a unit of work took to the virtual seconds it is charged."""


def measured(factor: float = 1.0) -> WorkCost:
    """Charge real compute time × ``factor`` (factor > 1 simulates a slower machine)."""
    return lambda wall: wall * factor


def fixed(seconds: float) -> WorkCost:
    """Charge every unit of work the same (deterministic tests)."""
    return lambda wall: seconds


@dataclass(order=True)
class Event:
    at: float
    """Stream time in seconds."""
    action: Callable[[], object] = field(compare=False)


def feed_audio(
    session: LiveSession,
    wave: np.ndarray,
    start: float = 0.0,
    speed: float = 1.0,
    chunk_seconds: float | Callable[[], float] = 0.02,
    end_utterance: bool = True,
) -> list[Event]:
    """Events pushing ``wave`` (16 kHz) from ``start`` at ``speed`` × real time, in chunks."""
    events, pos, t = [], 0, start
    while pos < len(wave):
        size = chunk_seconds() if callable(chunk_seconds) else chunk_seconds
        n = max(1, round(size * SAMPLE_RATE))
        chunk = wave[pos : pos + n]
        pos += n
        t += len(chunk) / SAMPLE_RATE / speed
        events.append(Event(t, lambda c=chunk: session.push_audio(c)))
    if end_utterance:
        events.append(Event(t, session.end_utterance))
    return events


@dataclass
class VirtualRun:
    frames: list[VideoFrame]
    end_time: float
    """Virtual seconds the run took (frames × 40 ms plus any held time)."""


def run_virtual(
    session: LiveSession,
    num_frames: int,
    events: list[Event] | None = None,
    cost: WorkCost | None = None,
    on_frame: Callable[[VideoFrame, float], None] | None = None,
    charge_events: bool = False,
    stop: Callable[[], bool] | None = None,
) -> VirtualRun:
    """Play ``num_frames`` frames on a virtual clock.

    Frame ``n`` is due at ``n × 40 ms`` (later by any time the clock was held). Before each
    deadline the session works while it has work, each unit charged ``cost(wall seconds)``
    (default: free, an infinitely fast engine);
    events fire when the clock passes their time (their own compute, e.g. audio features, is
    charged too when ``charge_events``). ``stop`` ends the run early once it returns True.
    """
    cost = cost or fixed(0.0)
    pending = sorted(events or [])
    now, deadline, frames = 0.0, 0.0, []

    def fire_until(t: float) -> None:
        nonlocal now
        while pending and pending[0].at <= t:
            start = time.perf_counter()
            pending.pop(0).action()  # e.g. audio arriving: its feature extraction is charged too
            if charge_events:
                now += cost(time.perf_counter() - start)

    while len(frames) < num_frames:
        fire_until(now)
        while now < deadline:
            start = time.perf_counter()
            if not session.work():
                now = min(deadline, pending[0].at) if pending and pending[0].at < deadline else deadline
                fire_until(now)
                continue
            now += cost(time.perf_counter() - start)
            fire_until(now)
        frame = session.take_frame()
        if frame is None:  # held clock: the deadline moves on, nothing is presented
            deadline += FRAME_SECONDS
            continue
        frames.append(frame)
        if on_frame is not None:
            on_frame(frame, now)
        deadline += FRAME_SECONDS
        if stop is not None and stop():
            break
    return VirtualRun(frames, now)
