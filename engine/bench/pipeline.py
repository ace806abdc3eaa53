"""``keyface bench pipeline`` and ``keyface bench sessions``: the live scheduler end to end.

Runs live sessions on a virtual clock that charges every unit of work (keyframe windows,
interpolation + decode, audio features as audio arrives) its measured wall time, so the numbers
are what a real-time run on this machine would see, without waiting for the wall clock.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..audio.base import SAMPLE_RATE
from ..bundle import ModelBundle, load_bundle, random_bundle
from ..defaults import default_weights, resolve_device
from ..live.batching import BatchedNetwork
from ..live.clock import feed_audio, measured, run_virtual
from ..live.engine import LiveEngine
from ..live.session import LiveConfig, LiveSession


@dataclass
class PipelineResult:
    feed_speed: float
    stream_seconds: float
    compute_seconds: float
    first_frame_delay: float | None
    late_frames: int
    frames: int
    per_stage: dict[str, float]
    peak_rss_mb: float

    @property
    def rtf(self) -> float:
        """Compute seconds per second of stream (≤ 1 keeps up with real time)."""
        return self.compute_seconds / self.stream_seconds


def speech_signal(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like audio: a gliding voiced tone with syllable-rate modulation and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 130 + 40 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t + rng.uniform(0, 6)), 0, None)
    return (0.3 * voiced * syllables + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def load_model(args: argparse.Namespace) -> ModelBundle:
    device = resolve_device(args.device)
    if args.size == "tiny":
        return random_bundle(seed=0).to(device)
    return load_bundle(args.weights or default_weights(), device=device)


def run_pipeline(
    bundle: ModelBundle, speech_seconds: float, idle_seconds: float, speed: float, config: LiveConfig
) -> PipelineResult:
    engine = LiveEngine(bundle)
    face = torch.rand(3, bundle.image_size, bundle.image_size, generator=torch.Generator().manual_seed(0))
    session = LiveSession(engine, face, config=config)
    wave = speech_signal(speech_seconds)
    speech_frames = -(-len(wave) // 640)
    seen = {"speech": 0}

    def count(frame, now) -> None:
        seen["speech"] += frame.speech

    # Play until every speech frame has been shown, then the trailing idle (or a generous cap).
    def done() -> bool:
        return seen["speech"] >= speech_frames and session.playback >= (session.timeline.speech_end + idle_seconds * 25)

    total = round((idle_seconds + speech_seconds + idle_seconds) * 25) * 20
    compute = {"s": 0.0}
    cost = measured()

    def charged(wall: float) -> float:
        compute["s"] += wall
        return cost(wall)

    arrival = idle_seconds
    events = feed_audio(session, wave, start=arrival, speed=speed)
    run = run_virtual(session, total, events, cost=charged, charge_events=True, on_frame=count, stop=done)
    first = session.stats.first_speech_frame
    delay = None if first is None else first / 25 - arrival
    return PipelineResult(
        feed_speed=speed,
        stream_seconds=len(run.frames) / 25,
        compute_seconds=compute["s"],
        first_frame_delay=delay,
        late_frames=session.stats.late_frames,
        frames=len(run.frames),
        per_stage=dict(session.stats.per_stage_seconds),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="DIR", help="model folder (default: the demo avatar)")
    p.add_argument(
        "--size",
        choices=["model", "tiny"],
        default="model",
        help="'tiny' = a random fixture-size model instead of --weights",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--speech", type=float, default=8.0, help="seconds of speech (default 8)")
    p.add_argument("--idle", type=float, default=2.0, help="seconds of idle before and after (default 2)")
    p.add_argument("--feed", default="1,4", help="audio feed speeds × real time (default 1,4)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--steps", type=int, help="override both stages' sampling steps")


def _config(args: argparse.Namespace) -> LiveConfig:
    return LiveConfig(keyframe_steps=args.steps, interpolation_steps=args.steps)


def run_pipeline_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_model(args)
    print(
        f"model={bundle.name} image={bundle.image_size} device={bundle.keyframe.audio_projection.linear.weight.device} "
        f"threads={torch.get_num_threads()} speech={args.speech}s idle={args.idle}s"
    )
    print(
        f"{'feed':>5} {'RTF':>6} {'first-frame ms':>15} {'late':>5} {'frames':>7} "
        f"{'keyframe s':>11} {'interp s':>9} {'decode s':>9} {'peak RSS MB':>12}"
    )
    for speed in (float(x) for x in args.feed.split(",")):
        r = run_pipeline(bundle, args.speech, args.idle, speed, _config(args))
        delay = "n/a" if r.first_frame_delay is None else f"{r.first_frame_delay * 1e3:.0f}"
        print(
            f"{speed:>4.0f}x {r.rtf:>6.2f} {delay:>15} {r.late_frames:>5} {r.frames:>7} "
            f"{r.per_stage['keyframe']:>11.2f} {r.per_stage['interpolation']:>9.2f} "
            f"{r.per_stage['decode']:>9.2f} {r.peak_rss_mb:>12.0f}"
        )
    return 0


def add_sessions_arguments(p: argparse.ArgumentParser) -> None:
    add_pipeline_arguments(p)
    p.add_argument("-n", "--sessions", type=int, default=4, help="concurrent sessions (default 4)")
    p.set_defaults(feed="1")


def run_sessions_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_model(args)
    n = args.sessions
    print(f"model={bundle.name} sessions={n} threads={torch.get_num_threads()} speech={args.speech}s")
    print(f"{'mode':<10}{'network calls':>14}{'wall s':>9}{'stream s':>10}{'RTF/session':>13}{'late':>6}")
    for batched in (False, True):
        base = LiveEngine(bundle)
        counters = {name: _Counter(net) for name, net in base.networks.items()}
        nets = {name: BatchedNetwork(c, 0.01) if batched else c for name, c in counters.items()}
        for net in nets.values():
            if isinstance(net, BatchedNetwork):
                net.participants = n
        engine = LiveEngine(bundle, nets)
        face = torch.rand(3, bundle.image_size, bundle.image_size)
        sessions = [LiveSession(engine, face, config=_config(args)) for _ in range(n)]
        total = round((args.speech + 2 * args.idle) * 25)
        wave = speech_signal(args.speech)
        start = time.perf_counter()
        threads = [
            threading.Thread(target=run_virtual, args=(s, total, feed_audio(s, wave, start=args.idle)))
            for s in sessions
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        calls = sum(c.calls for c in counters.values())
        late = statistics.mean(s.stats.late_frames for s in sessions)
        print(
            f"{'batched' if batched else 'separate':<10}{calls:>14}{wall:>9.1f}{total / 25:>10.1f}"
            f"{wall / (total / 25) / n:>13.3f}{late:>6.0f}"
        )
    return 0


class _Counter:
    def __init__(self, network) -> None:
        self.network = network
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, *args):
        with self._lock:
            self.calls += 1
        return self.network(*args)
