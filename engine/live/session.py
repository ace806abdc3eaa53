"""The live session: keyframes one window ahead, interpolation just in time, audio as the clock.

A :class:`LiveSession` is synchronous and clock-free: a driver calls :meth:`LiveSession.work`
to do one unit of computation (a keyframe window or one interpolated, decoded segment) and
:meth:`LiveSession.take_frame` when frame ``n``'s presentation time has come. Frame ``n`` always
carries exactly the samples ``[640·n, 640·(n+1))`` of the timeline, so audio and video cannot
drift: when a frame is not ready in time the previous image stands in (``late``), or the clock is
held, and the late frame is counted.

Schedule: keyframes lie every ``spacing`` (13) frames on the session timeline. Keyframe windows
hold up to ``max_window`` new keyframes plus the reference slot, as many as have final audio, so
the first window after speech starts is short (low delay) and later ones are full. Segment ``j``
(frames ``13j … 13j+13``) is interpolated when playback comes within ``lead_frames`` of it.
Speech is placed on the timeline when enough of it has arrived to compute its first segment, at
the first frame not yet interpolated; idle frames before it keep the face alive on silence.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..audio.base import SAMPLES_PER_FRAME
from ..emotion import Emotion
from ..models.conditioning import Conditioning, anchor_concat, emotion_embedding, identity_concat
from ..sampling.euler import sample_euler
from ..sampling.guiders import AudioRefGuider, AutoGuider, Guider, PlainGuider
from ..sampling.schedule import ays_sigmas
from .engine import LiveEngine
from .idle import IdleLoop
from .timeline import AudioTimeline, FeatureStreams


@dataclass(frozen=True)
class LiveConfig:
    spacing: int = 13
    """Video frames between keyframes (KeyFace: 13)."""
    max_window: int = 4
    """New keyframes per keyframe window (KeyFace offline: 13)."""
    lead_frames: int = 8
    """Interpolate a segment when playback is this close to its first frame."""
    keyframe_lead_frames: int = 39
    """Generate idle keyframes at most this far ahead of playback."""
    speech_margin_frames: int = 4
    """Speech starts at least this many frames after the playback position."""
    adaptive_margin: bool = True
    """Widen the margin to the measured compute time of a keyframe window plus a segment."""
    late_policy: Literal["repeat", "hold"] = "repeat"
    """Not ready in time: show the previous image with the frame's audio, or hold the clock."""
    degrade_steps: int | None = 1
    """Interpolation steps while behind schedule (None = never degrade)."""
    keyframe_steps: int | None = None
    interpolation_steps: int | None = None
    seed: int = 0
    idle_loop_keyframes: int = 8
    """Idle is computed once over this many keyframes and then replayed (0 = always compute)."""
    max_buffered_seconds: float = 60.0
    """Speech audio accepted ahead of playback before push_audio refuses more."""


@dataclass
class VideoFrame:
    index: int
    image: torch.Tensor
    """uint8 (H, W, 3)."""
    audio: np.ndarray
    """float32 (640,) 16 kHz samples of this frame."""
    speech: bool
    late: bool = False
    generation: int = 0
    """The session epoch its segment was computed in (interrupts and speech bump it)."""


@dataclass
class InterruptReport:
    position: int
    """Frame index at which speech stopped (playback position)."""
    samples: int
    interrupted: bool
    """Whether speech was still playing or pending."""


@dataclass
class SessionStats:
    frames: int = 0
    late_frames: int = 0
    held_frames: int = 0
    keyframe_windows: int = 0
    segments: int = 0
    degraded_segments: int = 0
    cached_segments: int = 0
    """Idle segments replayed from the idle loop (no network calls)."""
    first_speech_frame: int | None = None
    keyframe_seconds: float = 0.0
    """Recent wall time of a keyframe window (moving average)."""
    segment_seconds: float = 0.0
    """Recent wall time of one segment, interpolation and decode (moving average)."""
    per_stage_seconds: dict[str, float] = field(
        default_factory=lambda: {"keyframe": 0.0, "interpolation": 0.0, "decode": 0.0}
    )


def _ema(old: float, new: float, weight: float = 0.3) -> float:
    return new if old == 0.0 else (1 - weight) * old + weight * new


def _locked(method):
    """Run a session method under the session lock."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


@dataclass
class _Job:
    compute: Callable[[], torch.Tensor]
    commit: Callable[[torch.Tensor], None]


class AudioBufferFull(Exception):
    """push_audio refused: too much speech is queued ahead of playback."""


class LiveSession:
    def __init__(
        self,
        engine: LiveEngine,
        identity: torch.Tensor,
        emotion: Emotion | None = None,
        config: LiveConfig | None = None,
    ) -> None:
        """``identity``: (3, H, W) RGB in [0, 1] (encoded once, cached by the engine)."""
        self.engine = engine
        self.config = config or LiveConfig()
        self.identity = engine.identity_latent(identity)
        self.timeline = AudioTimeline(silence_rows=engine.silence_rows())
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.keyframes: dict[int, torch.Tensor] = {}
        self.idle = IdleLoop(self.config.idle_loop_keyframes)
        self.next_segment = 0
        self.ready: dict[int, VideoFrame] = {}
        self.carry: dict[int, torch.Tensor] = {}
        """Segment j → its last frame (float RGB), averaged into segment j+1's first."""
        self.playback = 0
        """Next frame the clock will take."""
        self.last_image: torch.Tensor | None = None
        self.pending: list[np.ndarray] = []
        """Speech received but not yet placed on the timeline."""
        self.pending_closed = False
        start = emotion or Emotion()
        self._emotion_from = (start, start, 0, 1)
        """(from, to, first frame of the ramp, ramp length)."""
        self.stats = SessionStats()
        self.behind = False
        self.largest_chunk = 0
        """Largest audio chunk received (samples): the sender's burstiness."""
        self.lock = threading.RLock()
        self.epoch = 0
        """Bumped whenever planned work becomes stale (interrupt, speech placement)."""

    # -- inputs ---------------------------------------------------------------------------------

    @_locked
    def push_audio(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 speech (an utterance starts with the first chunk)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not len(samples):
            return
        self.largest_chunk = max(self.largest_chunk, len(samples))
        ahead = self.buffered_seconds() + len(samples) / (SAMPLES_PER_FRAME * 25)
        if ahead > self.config.max_buffered_seconds:
            raise AudioBufferFull(
                f"{ahead:.1f} s of audio would be queued ahead of playback "
                f"(limit {self.config.max_buffered_seconds:.0f} s); send audio closer to real time"
            )
        if self.timeline.current is not None:
            self.timeline.append(samples)
        else:
            if self.pending_closed:  # a new utterance after one that is still waiting
                self._place_pending(force=True)
                self.timeline.close()
            self.pending.append(samples)
            self.pending_closed = False
            self._place_pending()

    @_locked
    def end_utterance(self) -> None:
        """The current utterance is complete (pads its last frame, flushes its features)."""
        if self.timeline.current is not None:
            self.timeline.close()
        elif self.pending:
            self.pending_closed = True
            self._place_pending(force=True)
            self.timeline.close()

    @_locked
    def set_emotion(self, emotion: Emotion, ramp_frames: int = 13) -> None:
        """New emotion from the next keyframe window on, ramped over ``ramp_frames``."""
        start = self._next_keyframe_frame()
        self._emotion_from = (self.emotion_at(start), emotion, start, max(1, ramp_frames))
        self.idle.reset(valid_from=-(-(start + ramp_frames) // self.config.spacing))

    @_locked
    def interrupt(self) -> InterruptReport:
        """Stop speaking now: drop queued audio and pending work, return to idle."""
        cut = self.playback
        speaking = bool(self.pending) or self.timeline.speech_end > cut or self.timeline.current is not None
        self.pending.clear()
        self.pending_closed = False
        self.epoch += 1
        self.timeline.cut(cut)
        segment = cut // self.config.spacing
        self._invalidate_from(segment)
        return InterruptReport(position=cut, samples=cut * SAMPLES_PER_FRAME, interrupted=speaking)

    # -- queries ----------------------------------------------------------------------------------

    def buffered_seconds(self) -> float:
        queued = sum(len(p) for p in self.pending) / (SAMPLES_PER_FRAME * 25)
        ahead = max(0, self.timeline.speech_end - self.playback) / 25
        return queued + ahead

    def emotion_at(self, frame: int) -> Emotion:
        old, new, start, ramp = self._emotion_from
        w = min(1.0, max(0.0, (frame - start) / ramp))
        return Emotion(old.valence + w * (new.valence - old.valence), old.arousal + w * (new.arousal - old.arousal))

    @property
    def speaking(self) -> bool:
        return bool(self.pending) or self.timeline.is_speech(self.playback)

    # -- the clock --------------------------------------------------------------------------------

    def frame_ready(self, index: int) -> bool:
        return index in self.ready

    @_locked
    def take_frame(self) -> VideoFrame | None:
        """The frame for the current clock tick (advances playback), or None when holding."""
        n = self.playback
        frame = self.ready.pop(n, None)
        if frame is None:
            if self.config.late_policy == "hold" or self.last_image is None:
                self.stats.held_frames += 1
                return None
            frame = VideoFrame(n, self.last_image, self.timeline.samples(n), self.timeline.is_speech(n), late=True)
            self.stats.late_frames += 1
        else:
            frame.audio = self.timeline.samples(n)
            frame.speech = self.timeline.is_speech(n)
        if frame.speech and self.stats.first_speech_frame is None:
            self.stats.first_speech_frame = n
        self.last_image = frame.image
        self.playback = n + 1
        self.stats.frames += 1
        self._forget()
        return frame

    # -- work ---------------------------------------------------------------------------------

    def work(self) -> bool:
        """Do one unit of computation if any is due; returns whether something was done.

        Thread-safe against the input methods and :meth:`take_frame`: the job is planned and its
        result committed under the session lock; the computation runs outside it, and a result
        made stale by an interrupt or newly placed speech meanwhile is discarded.
        """
        with self.lock:
            job = self._plan()
            epoch = self.epoch
        if job is None:
            return False
        result = job.compute()
        with self.lock:
            if epoch == self.epoch:
                job.commit(result)
        return True

    def _plan(self) -> _Job | None:
        self._place_pending()
        self._fill_idle_keyframes()
        j = self.next_segment
        due = j * self.config.spacing <= self.playback + self.config.lead_frames
        if due and self._segment_computable(j):
            cached = self.idle.segment(j) if self._segment_idle(j) else None
            if cached is not None:
                return _Job(lambda: cached.float() / 255.0, lambda rgb: self._commit_segment(j, rgb, False, True))
            return self._interpolation_job(j)
        return self._keyframe_job()

    def _keyframe_idle(self, k: int) -> bool:
        frame = k * self.config.spacing
        return self.timeline.is_final(frame) and not self.timeline.is_speech(frame)

    def _segment_idle(self, j: int) -> bool:
        s = self.config.spacing
        return all(self._keyframe_idle(k) for k in (j, j + 1)) and not any(
            self.timeline.is_speech(n) for n in range(j * s, (j + 1) * s + 1)
        )

    def _horizon(self) -> int:
        return self.playback + self.config.keyframe_lead_frames + self.config.lead_frames

    def _fill_idle_keyframes(self) -> None:
        """Take idle keyframes from the idle loop where it has them (no computation)."""
        s = self.config.spacing
        k = self.next_segment
        while k * s <= self._horizon() or k <= self.next_segment + 1:
            if k not in self.keyframes:
                latent = self.idle.keyframe(k) if self._keyframe_idle(k) else None
                if latent is None:
                    return
                self.keyframes[k] = latent
            k += 1

    def _segment_computable(self, j: int) -> bool:
        s = self.config.spacing
        if j not in self.keyframes or j + 1 not in self.keyframes:
            return False
        return self.timeline.final_until(j * s) > (j + 1) * s

    def _next_keyframe_frame(self) -> int:
        k = self.next_segment
        while k in self.keyframes:
            k += 1
        return k * self.config.spacing

    def _keyframe_job(self) -> _Job | None:
        s = self.config.spacing
        first = self._next_keyframe_frame() // s
        final_until = self.timeline.final_until(first * s)
        horizon = self._horizon()
        ks = []
        for k in range(first, first + self.config.max_window):
            if k * s >= final_until or (k * s > horizon and k > self.next_segment + 1):
                break
            if k in self.keyframes or (self._keyframe_idle(k) and self.idle.keyframe(k) is not None):
                break  # known already: the window ends here
            ks.append(k)
        if not ks:
            return None
        return self._sample_keyframes(ks)

    # -- speech placement ---------------------------------------------------------------------

    def _place_pending(self, force: bool = False) -> None:
        if not self.pending or self.timeline.current is not None:
            return
        queued = sum(len(p) for p in self.pending)
        need = (self.config.spacing + 1) * SAMPLES_PER_FRAME
        if queued < need and not force and not self.pending_closed:
            return
        s = self.config.spacing
        start = max(self.playback + self.speech_margin(), self.timeline.speech_end)
        # Frames from the segment holding `start` on are recomputed with the speech (its first
        # keyframe, before `start`, stays).
        self._invalidate_from((start - 1) // s)
        self.timeline.start_utterance(start, FeatureStreams(self.engine.make_feature_streams, self.engine.recipe))
        chunks, self.pending = self.pending, []
        for chunk in chunks:
            self.timeline.append(chunk)
        if self.pending_closed:
            self.pending_closed = False

    def speech_margin(self) -> int:
        """Frames between playback and the start of newly placed speech: enough to compute a
        keyframe window and a segment at the recent pace, and at least the configured margin."""
        # Audio arriving in bursts of up to one chunk must not starve the next segment.
        jitter = math.ceil(self.largest_chunk / SAMPLES_PER_FRAME)
        if not self.config.adaptive_margin:
            return self.config.speech_margin_frames + jitter
        compute = (self.stats.keyframe_seconds + self.stats.segment_seconds) * 25 * 1.5
        return max(self.config.speech_margin_frames, math.ceil(compute)) + jitter

    def _invalidate_keyframes_from(self, k: int) -> None:
        self.epoch += 1
        for key in [key for key in self.keyframes if key >= k]:
            del self.keyframes[key]

    def _invalidate_from(self, segment: int) -> None:
        """Forget interpolated frames from ``segment`` on and keyframes after it."""
        s = self.config.spacing
        self._invalidate_keyframes_from(segment + 1)
        for n in [n for n in self.ready if n >= max(segment * s, self.playback)]:
            del self.ready[n]
        self.next_segment = min(self.next_segment, segment)

    # -- computation ----------------------------------------------------------------------------

    def _sigmas(self, stage: str, degraded: bool = False) -> torch.Tensor:
        d = self.engine.bundle.sampling
        if stage == "keyframe":
            return ays_sigmas(self.config.keyframe_steps or d.keyframe_steps)
        if degraded and self.config.degrade_steps:
            return ays_sigmas(self.config.degrade_steps)
        return ays_sigmas(self.config.interpolation_steps or d.interpolation_steps)

    def _noise(self, rows: int) -> torch.Tensor:
        size = self.engine.bundle.latent_size
        noise = torch.randn(rows, 4, size, size, generator=self.generator)
        return noise.to(self.engine.device, self.engine.dtype)

    def _sample_keyframes(self, ks: list[int]) -> _Job:
        s = self.config.spacing
        frames = [k * s for k in ks]
        kf_rows, _ = self.timeline.rows(frames)
        # Slot 0 is the reference slot (identity frame; output discarded): silence, window emotion.
        kf_rows = torch.cat([self.timeline.silence_rows[0], kf_rows])
        frames = [frames[0], *frames]
        emotions = [self.emotion_at(f) for f in frames]
        valence = torch.tensor([e.valence for e in emotions])
        arousal = torch.tensor([e.arousal for e in emotions])
        stage = self.engine.bundle.keyframe
        device = self.engine.device
        cond = Conditioning(
            concat=identity_concat(self.identity),
            crossattn=stage.project_audio(kf_rows[None].to(device)),
            vector=emotion_embedding(valence, arousal, stage.config.emotion_dim).to(device),
        )
        guider, noise, sigmas = self._keyframe_guider(len(frames)), self._noise(len(frames)), self._sigmas("keyframe")

        def compute() -> torch.Tensor:
            with self.engine.timer(self.stats, "keyframe") as timing:
                out = sample_euler(guider, noise, cond, sigmas).float()
            self.stats.keyframe_seconds = _ema(self.stats.keyframe_seconds, timing.seconds)
            return out

        def commit(latents: torch.Tensor) -> None:
            for k, latent in zip(ks, latents[1:], strict=True):
                self.keyframes[k] = latent
                if self._keyframe_idle(k):
                    self.idle.store_keyframe(k, latent)
            self.stats.keyframe_windows += 1

        return _Job(compute, commit)

    def _keyframe_guider(self, frames: int) -> Guider:
        d = self.engine.bundle.sampling
        net = self.engine.networks["keyframe"]
        if d.keyframe_guidance == "none":
            return PlainGuider(net, frames)
        return AudioRefGuider(net, d.audio_scale, d.ref_scale, frames)

    def _interpolation_guider(self) -> Guider:
        d = self.engine.bundle.sampling
        window = self.config.spacing + 1
        good, bad = self.engine.networks["interpolation"], self.engine.networks.get("bad")
        if d.interpolation_guidance == "none" or bad is None:
            return PlainGuider(good, window)
        return AutoGuider(good, bad, d.autoguidance_scale, window)

    def _interpolation_job(self, j: int) -> _Job:
        s = self.config.spacing
        frames = list(range(j * s, (j + 1) * s + 1))
        _, ip_rows = self.timeline.rows(frames)
        stage = self.engine.bundle.interpolation
        device = self.engine.device
        anchors = torch.stack([self.keyframes[j], self.keyframes[j + 1]]).to(device)
        cond = Conditioning(
            concat=anchor_concat(anchors[:1], anchors[1:]),
            crossattn=stage.project_audio(ip_rows[None].to(device)),
        )
        degraded = self.playback > j * s + 1
        self.behind = degraded
        guider, noise = self._interpolation_guider(), self._noise(len(frames))
        sigmas = self._sigmas("interpolation", degraded)

        def compute() -> torch.Tensor:
            with self.engine.timer(self.stats, "interpolation") as t1:
                latents = sample_euler(guider, noise, cond, sigmas)
            with self.engine.timer(self.stats, "decode") as t2:
                rgb = self.engine.decode(latents)
            self.stats.segment_seconds = _ema(self.stats.segment_seconds, t1.seconds + t2.seconds)
            return rgb

        return _Job(compute, lambda rgb: self._commit_segment(j, rgb, degraded))

    def _commit_segment(self, j: int, rgb: torch.Tensor, degraded: bool, cached: bool = False) -> None:
        s = self.config.spacing
        if not cached and not degraded and self._segment_idle(j):
            self.idle.store_segment(j, rgb)
        rgb = rgb.clone()
        if j - 1 in self.carry:
            rgb[0] = (rgb[0] + self.carry[j - 1]) / 2.0
        self.carry[j] = rgb[-1]
        for offset, image in enumerate(rgb[:-1]):
            n = j * s + offset
            if n >= self.playback:
                speech = self.timeline.is_speech(n)
                image8 = (image * 255.0).to(torch.uint8)
                self.ready[n] = VideoFrame(n, image8, self.timeline.samples(n), speech, generation=self.epoch)
        self.next_segment = j + 1
        self.stats.segments += 1
        self.stats.cached_segments += int(cached)
        self.stats.degraded_segments += int(degraded and self.config.degrade_steps is not None)

    def _forget(self) -> None:
        """Keep memory flat: drop what playback has passed."""
        s = self.config.spacing
        done = self.playback // s
        for k in [k for k in self.keyframes if k < done - 1]:
            del self.keyframes[k]
        for j in [j for j in self.carry if j < done - 2]:
            del self.carry[j]
        if self.playback % 250 == 0:
            self.timeline.forget_before(self.playback - 2 * s)
