"""``keyface bench audio``: cost per second of audio and added latency of each audio encoder.

Full-size encoders with random weights by default (timing does not depend on the values); with
``--weights`` the real ones are loaded and the streamed features are also compared with the
offline recipe on ``--wav`` (or a synthetic chirp), which is how the streaming context should be
calibrated.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from engine.audio.base import SAMPLE_RATE, AudioEncoder
from engine.audio.streaming import StreamingConfig, StreamingExtractor

ENCODERS = ("wavlm", "beats", "wav2vec2", "logmel")
CHUNK_MS = 20  # TTS-like push size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``keyface bench audio``."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 … (default: cpu)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length to encode (default: 10)")
    parser.add_argument(
        "--encoders", default=",".join(ENCODERS), help=f"comma-separated subset of {','.join(ENCODERS)}"
    )
    default = StreamingConfig()
    parser.add_argument("--block", type=int, default=default.block_frames, help="frames per block (×4)")
    parser.add_argument(
        "--left-context", type=int, default=default.left_context_frames, help="left context frames (×4)"
    )
    parser.add_argument("--lookahead", type=int, default=default.lookahead_frames, help="look-ahead frames (even)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--weights", metavar="DIR", help="real weights folder (default: random full-size)")
    parser.add_argument("--wav", help="audio file for the streaming-vs-offline comparison (with --weights)")
    parser.add_argument("--trust-weights", action="store_true", help="allow full unpickling of .pt files")


def _encoders(args: argparse.Namespace, names: list[str]) -> dict[str, Callable[[], AudioEncoder]]:
    """Factories, so that only one large model is alive at a time."""
    if args.weights:
        from engine.audio.features import KeyFaceAudioFeatures

        features = KeyFaceAudioFeatures.from_folder(args.weights, args.device, args.trust_weights)
        real = {"wavlm": features.wavlm, "beats": features.beats, "wav2vec2": features.wav2vec2}
        out: dict[str, Callable[[], AudioEncoder]] = {n: (lambda e=real[n]: e) for n in names if n in real}
    else:
        from engine.audio.beats import random_beats
        from engine.audio.wav2vec2 import random_wav2vec2
        from engine.audio.wavlm import random_wavlm

        makers = {"wavlm": random_wavlm, "beats": random_beats, "wav2vec2": random_wav2vec2}
        out = {n: (lambda m=makers[n]: m().to(args.device)) for n in names if n in makers}
    if "logmel" in names:
        from engine.audio.logmel import LogMelEncoder

        out["logmel"] = LogMelEncoder
    return out


def _signal(args: argparse.Namespace) -> torch.Tensor:
    if args.wav:
        from engine.audio.resample import load_audio

        return torch.as_tensor(load_audio(args.wav), dtype=torch.float32)
    n = int(args.seconds * SAMPLE_RATE)
    t = torch.arange(n) / SAMPLE_RATE
    gen = torch.Generator().manual_seed(0)
    envelope = 0.55 + 0.45 * torch.sin(2 * math.pi * 2.5 * t)
    chirp = torch.sin(2 * math.pi * (100 + 390 * t / max(args.seconds, 1e-3)) * t)
    return (0.5 * envelope * chirp + 0.05 * torch.randn(n, generator=gen)).float()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _stream(encoder: AudioEncoder, config: StreamingConfig) -> tuple[object, float]:
    """The encoder's own exact stream if it has one (log-mel), else the generic windowed one."""
    native = getattr(encoder, "stream", None)
    if callable(native) and hasattr(encoder, "lookahead_ms"):
        return native(), float(encoder.lookahead_ms)
    return StreamingExtractor(encoder, config), config.lookahead_ms


def _measure(encoder: AudioEncoder, wave: torch.Tensor, config: StreamingConfig, device: str) -> dict:
    seconds = wave.numel() / SAMPLE_RATE
    encoder.encode(wave[:SAMPLE_RATE])  # warm-up
    _sync(device)
    start = time.perf_counter()
    offline = encoder.encode(wave)
    _sync(device)
    offline_s = time.perf_counter() - start

    stream, lookahead_ms = _stream(encoder, config)
    chunk = SAMPLE_RATE * CHUNK_MS // 1000
    block_times, outs = [], []
    for i in range(0, wave.numel(), chunk):
        start = time.perf_counter()
        out = stream.push(wave[i : i + chunk])
        _sync(device)
        if out.shape[0]:
            block_times.append(time.perf_counter() - start)
        outs.append(out)
    start = time.perf_counter()
    outs.append(stream.flush())
    _sync(device)
    total = sum(block_times) + time.perf_counter() - start
    streamed = torch.cat(outs).to(offline.device)
    p95 = sorted(block_times)[int(0.95 * (len(block_times) - 1))] if block_times else 0.0
    diff = (streamed - offline).abs()
    cos = torch.nn.functional.cosine_similarity(streamed, offline, dim=-1)
    return {
        "offline": 1000 * offline_s / seconds,
        "stream": 1000 * total / seconds,
        "block_mean": 1000 * statistics.fmean(block_times) if block_times else 0.0,
        "block_p95": 1000 * p95,
        "max_diff": diff.max().item(),
        "mean_diff": diff.mean().item(),
        "cos": cos.mean().item(),
        "lookahead": lookahead_ms,
    }


def run(args: argparse.Namespace) -> int:
    """Time each encoder offline and streamed; print one table."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = StreamingConfig(args.block, args.left_context, args.lookahead)
    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ENCODERS))
    if unknown:
        raise SystemExit(f"unknown encoders: {', '.join(unknown)} (choose from {', '.join(ENCODERS)})")
    wave = _signal(args)
    kind = "real weights" if args.weights else "random full-size weights"
    print(
        f"audio encoders, {kind}, device {args.device}, {torch.get_num_threads()} CPU threads, "
        f"{wave.numel() / SAMPLE_RATE:.1f} s of audio pushed in {CHUNK_MS} ms chunks"
    )
    print(
        f"streaming: block {config.block_frames} frames, left context {config.left_context_ms:.0f} ms, "
        f"model look-ahead {config.model_lookahead_ms:.0f} ms, worst-case wait {config.lookahead_ms:.0f} ms"
    )
    header = f"{'encoder':<10}{'offline ms/s':>14}{'stream ms/s':>13}{'block p95 ms':>14}"
    header += f"{'look-ahead ms':>15}{'added latency ms':>18}{'real-time':>11}"
    if args.weights:
        header += f"{'max|Δ| vs offline':>19}{'cos':>8}"
    print(header)
    with torch.inference_mode():
        for name, make in _encoders(args, names).items():
            encoder = make()
            r = _measure(encoder, wave, config, args.device)
            realtime = "yes" if r["stream"] < 1000 else "NO"
            row = f"{name:<10}{r['offline']:>14.1f}{r['stream']:>13.1f}{r['block_p95']:>14.1f}"
            row += f"{r['lookahead']:>15.1f}{r['lookahead'] + r['block_p95']:>18.1f}{realtime:>11}"
            if args.weights:
                row += f"{r['max_diff']:>19.3g}{r['cos']:>8.4f}"
            print(row, flush=True)
            del encoder
    print("added latency = worst-case wait for look-ahead audio + p95 compute of one block")
    return 0
