"""The live scheduler on a virtual clock: frame/audio bookkeeping, idle, interrupt, slowness, batching."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch

from engine.audio.base import SAMPLES_PER_FRAME
from engine.emotion import Emotion
from engine.live.batching import BatchedNetwork
from engine.live.clock import feed_audio, fixed, run_virtual
from engine.live.engine import LiveEngine
from engine.live.session import AudioBufferFull, LiveConfig, LiveSession

from .live_helpers import micro_bundle, speechlike

FACE = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The micro model's tensors are tiny: intra-op threads only add scheduling latency."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine() -> LiveEngine:
    return LiveEngine(micro_bundle(seed=1, guided=True))


def new_session(engine: LiveEngine, **config) -> LiveSession:
    config.setdefault("adaptive_margin", False)
    return LiveSession(engine, FACE, config=LiveConfig(**config))


def assert_contiguous(frames) -> None:
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + len(frames)))
    assert all(f.audio.shape == (SAMPLES_PER_FRAME,) for f in frames)


@pytest.mark.parametrize("chunking", ["fixed20ms", "random", "tiny"])
def test_frames_gap_free_with_exact_audio(engine, chunking):
    rng = np.random.default_rng(hash(chunking) % 1000)
    chunk = {"fixed20ms": 0.02, "random": lambda: float(rng.uniform(0.001, 0.5)), "tiny": 0.001}[chunking]
    session = new_session(engine)
    speech = speechlike(1.53, seed=2)
    seconds = 4.0
    run = run_virtual(session, round(seconds * 25), feed_audio(session, speech, start=0.3, chunk_seconds=chunk))
    frames = run.frames
    assert len(frames) == round(seconds * 25)
    assert frames[0].index == 0
    assert_contiguous(frames)
    out = np.concatenate([f.audio for f in frames])
    speech_frames = [f.index for f in frames if f.speech]
    start = speech_frames[0]
    assert speech_frames == list(range(start, start + -(-len(speech) // SAMPLES_PER_FRAME)))
    placed = out[start * SAMPLES_PER_FRAME : start * SAMPLES_PER_FRAME + len(speech)]
    np.testing.assert_array_equal(placed, speech)  # every sample in its frame: zero A/V offset
    assert not out[: start * SAMPLES_PER_FRAME].any()  # idle before
    assert not out[start * SAMPLES_PER_FRAME + len(speech) :].any()  # silence after
    assert session.stats.late_frames == 0


def test_five_seconds_of_silence_is_a_living_idle_face(engine):
    session = new_session(engine)
    frames = run_virtual(session, 125).frames
    assert len(frames) == 125 and not any(f.speech for f in frames)
    assert_contiguous(frames)
    assert all(not f.late for f in frames)
    diffs = [float((a.image.float() - b.image.float()).abs().mean()) for a, b in itertools.pairwise(frames)]
    assert sum(d > 0 for d in diffs) > 100  # it moves: not a frozen picture


def frame_deltas(frames) -> np.ndarray:
    """Motion measure: mean absolute RGB difference between consecutive frames (0–255)."""
    return np.array([float((b.image.float() - a.image.float()).abs().mean()) for a, b in itertools.pairwise(frames)])


def test_transitions_are_no_larger_than_normal_motion(engine):
    session = new_session(engine)
    speech = speechlike(2.0, seed=3)
    frames = run_virtual(session, 150, feed_audio(session, speech, start=0.8)).frames
    deltas = frame_deltas(frames)
    flags = [f.speech for f in frames]
    transitions = [i for i in range(1, len(flags)) if flags[i] != flags[i - 1]]
    assert len(transitions) == 2  # idle → speech → idle
    normal = np.delete(deltas, [t - 1 for t in transitions])
    for t in transitions:
        assert deltas[t - 1] <= normal.max()


def test_interrupt_returns_to_idle_within_300ms(engine):
    session = new_session(engine)
    speech = speechlike(4.0, seed=4)
    reports = []
    events = feed_audio(session, speech, start=0.2, speed=4.0)
    from engine.live.clock import Event

    events.append(Event(2.0, lambda: reports.append((session.interrupt(), session.epoch))))
    frames = run_virtual(session, 125, events).frames
    ((report, epoch),) = reports
    assert report.interrupted and report.position in (49, 50)
    assert report.samples == report.position * SAMPLES_PER_FRAME
    after = [f for f in frames if f.index >= report.position]
    assert not any(f.speech for f in after) and not any(f.audio.any() for f in after)
    fresh = [f for f in after if f.generation >= epoch and not f.late]
    assert fresh[0].index - report.position <= 7  # 7 frames = 280 ms of stream time
    assert all(f.generation >= epoch for f in after if f.index >= fresh[0].index)
    assert_contiguous(frames)


def test_slow_engine_never_drifts_and_counts_late_frames(engine):
    session = new_session(engine)
    speech = speechlike(1.5, seed=5)
    run = run_virtual(session, 100, feed_audio(session, speech, start=0.1), cost=fixed(0.45))
    assert session.stats.late_frames > 10
    assert_contiguous(run.frames)
    out = np.concatenate([f.audio for f in run.frames])
    start = next(f.index for f in run.frames if f.speech)
    np.testing.assert_array_equal(out[start * SAMPLES_PER_FRAME :][: len(speech)], speech)
    assert session.stats.degraded_segments > 0  # fewer steps while behind


def test_hold_policy_holds_the_clock_and_keeps_sync(engine):
    session = new_session(engine, late_policy="hold")
    run = run_virtual(session, 60, cost=fixed(0.45))
    assert session.stats.held_frames > 10 and session.stats.late_frames == 0
    assert_contiguous(run.frames)
    assert run.end_time > 60 / 25  # the clock was held, not the audio shifted


def test_emotion_change_takes_effect_at_next_window_smoothly(engine):
    session = new_session(engine)
    run_virtual(session, 30)
    session.set_emotion(Emotion.preset("happy"), ramp_frames=26)
    start = session._next_keyframe_frame()
    assert session.emotion_at(start) == Emotion(0.0, 0.0)
    mid = session.emotion_at(start + 13)
    assert 0.4 < mid.valence < 0.45
    assert session.emotion_at(start + 26) == Emotion.preset("happy")


def test_audio_far_ahead_of_playback_is_refused(engine):
    session = new_session(engine, max_buffered_seconds=2.0)
    session.push_audio(speechlike(1.5))
    with pytest.raises(AudioBufferFull, match="limit 2 s"):
        session.push_audio(speechlike(1.0))


def test_two_hour_session_keeps_sync_and_flat_memory():
    engine = LiveEngine(micro_bundle(seed=2, guided=False))
    session = new_session(engine)
    total = 2 * 3600 * 25
    speech = speechlike(1.0, seed=6)
    events = []
    for k in range(0, 2 * 3600, 60):  # one second of speech every minute
        events += feed_audio(session, speech, start=k + 5.0, chunk_seconds=0.5)
    sizes = {}
    checks = {total // 4, total - 1}
    state = {"samples": 0, "speech_frames": 0}

    def on_frame(frame, now):
        assert frame.index * SAMPLES_PER_FRAME == state["samples"]  # audio position == video position
        state["samples"] += len(frame.audio)
        state["speech_frames"] += frame.speech
        if frame.index in checks:
            t = session.timeline
            sizes[frame.index] = (
                len(session.ready),
                len(session.keyframes),
                len(t.audio),
                len(t.kf_rows),
                len(t.utterances),
                len(session.carry),
            )

    run = run_virtual(session, total, events, on_frame=on_frame)
    last = run.frames[-1]
    assert last.index == total - 1 and len(run.frames) == total
    assert state["samples"] / 16_000 == pytest.approx(total / 25)  # zero A/V offset after 2 h
    assert state["speech_frames"] == 120 * 25
    early, late = sizes[total // 4], sizes[total - 1]
    assert all(b <= max(a, 1) * 2 for a, b in zip(early, late, strict=False))  # bounded state: flat memory
    assert max(late) < 200


def test_batching_concurrent_sessions_makes_fewer_calls():
    bundle = micro_bundle(seed=3, guided=True)

    def run_sessions(batched: bool, n: int = 4) -> int:
        counters = {}
        networks = {}
        for name, net in (
            ("keyframe", bundle.keyframe.network),
            ("interpolation", bundle.interpolation.network),
            ("bad", bundle.bad),
        ):
            counter = CountingNetwork(net)
            counters[name] = counter
            networks[name] = BatchedNetwork(counter, window_seconds=0.5) if batched else counter
        for net in networks.values():
            if isinstance(net, BatchedNetwork):
                net.participants = n
        engine = LiveEngine(bundle, networks)
        sessions = [new_session(engine, seed=i) for i in range(n)]
        threads = [threading.Thread(target=run_virtual, args=(s, 40)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(s.stats.frames == 40 for s in sessions)
        return sum(c.calls for c in counters.values())

    separate = run_sessions(batched=False)
    together = run_sessions(batched=True)
    assert together < separate
    assert together <= separate / 2


class CountingNetwork:
    def __init__(self, network) -> None:
        self.network = network
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, *args):
        with self.lock:
            self.calls += 1
        return self.network(*args)


def test_identity_cache_keeps_the_most_recent_faces() -> None:
    engine = LiveEngine(micro_bundle(seed=1, guided=False), identity_cache_size=3)
    faces = [torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(100 + k)) for k in range(5)]
    first = engine.identity_latent(faces[0])
    for face in faces[1:3]:
        engine.identity_latent(face)
    assert engine.identity_latent(faces[0]) is first  # a hit: faces[0] becomes the most recent
    for face in faces[3:]:
        engine.identity_latent(face)
    assert len(engine._identity_cache) == 3
    assert engine.identity_latent(faces[0]) is first  # kept: it was used after faces[1], faces[2]
    again = engine.identity_latent(faces[1])  # evicted, encoded anew with the same result
    assert torch.equal(again, engine.identity_latent(faces[1])) and len(engine._identity_cache) == 3
