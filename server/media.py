"""aiortc media tracks fed by one session clock.

The session's frame loop (25 fps, wall clock) hands every frame to a :class:`MediaFeed`, which
puts its image on the video track and its 640 audio samples (two 20 ms packets) on the audio
track, with timestamps derived from the same frame index. Both tracks start on the same frame (the
first one after either track is first pulled), so a receiver's RTP timelines line up frame for
frame: the lips and the sound cannot drift apart. Idle frames carry silence, so both tracks run
without gaps whether or not anyone is speaking.
"""

from __future__ import annotations

import asyncio
import fractions
from collections import deque
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engine.audio.base import SAMPLE_RATE, SAMPLES_PER_FRAME
from engine.live.session import VideoFrame

VIDEO_CLOCK = 90_000
VIDEO_TICKS_PER_FRAME = VIDEO_CLOCK // 25
AUDIO_PACKET = SAMPLES_PER_FRAME // 2
"""Samples per audio packet (20 ms at 16 kHz)."""
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class _QueueTrack(MediaStreamTrack):
    """A track returning queued frames; the first pull starts its feed."""

    def __init__(self, feed: MediaFeed, limit: int) -> None:
        super().__init__()
        self.feed = feed
        self._items: deque[av.VideoFrame | av.AudioFrame] = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self.dropped = 0
        self.sent = 0

    def put(self, item: av.VideoFrame | av.AudioFrame) -> None:
        if len(self._items) >= self._limit:  # the consumer stalls: keep the newest
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.feed.start()
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
            if self.readyState != "live":
                raise MediaStreamError
        self.sent += 1
        return self._items.popleft()

    def stop(self) -> None:
        super().stop()
        self._items.clear()
        self._ready.set()


class AvatarVideoTrack(_QueueTrack):
    kind = "video"

    def __init__(self, feed: MediaFeed) -> None:
        super().__init__(feed, limit=3)  # a slow encoder skips frames rather than lagging


class AvatarAudioTrack(_QueueTrack):
    kind = "audio"

    def __init__(self, feed: MediaFeed) -> None:
        super().__init__(feed, limit=100)  # 2 s; audio is never dropped in normal operation


def video_frame(frame: VideoFrame) -> av.VideoFrame:
    image = frame.image.numpy() if hasattr(frame.image, "numpy") else np.asarray(frame.image)
    out = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    out.pts = frame.index * VIDEO_TICKS_PER_FRAME
    out.time_base = VIDEO_TIME_BASE
    return out


def audio_frames(frame: VideoFrame) -> list[av.AudioFrame]:
    pcm = (np.clip(frame.audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    out = []
    for k in range(0, SAMPLES_PER_FRAME, AUDIO_PACKET):
        part = av.AudioFrame.from_ndarray(pcm[None, k : k + AUDIO_PACKET], format="s16", layout="mono")
        part.sample_rate = SAMPLE_RATE
        part.pts = frame.index * SAMPLES_PER_FRAME + k
        part.time_base = AUDIO_TIME_BASE
        out.append(part)
    return out


class MediaFeed:
    """One peer's pair of tracks, fed frame by frame from the session clock."""

    def __init__(self, on_start: Callable[[int], None] | None = None) -> None:
        self.video = AvatarVideoTrack(self)
        self.audio = AvatarAudioTrack(self)
        self.first_frame: int | None = None
        """Index of the first frame both tracks carry (None until a track is pulled)."""
        self._starting = False
        self._on_start = on_start

    @property
    def live(self) -> bool:
        return self.first_frame is not None

    def start(self) -> None:
        self._starting = True

    def push(self, frame: VideoFrame) -> None:
        if not self._starting or self.video.readyState != "live":
            return
        if self.first_frame is None:
            self.first_frame = frame.index
            if self._on_start is not None:
                self._on_start(frame.index)
        self.video.put(video_frame(frame))
        for part in audio_frames(frame):
            self.audio.put(part)

    def stop(self) -> None:
        self.video.stop()
        self.audio.stop()
