"""Streaming extraction: random chunk sizes give the offline per-frame features, flush included."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch

from engine.audio.alignment import num_frames, pad_to_frames
from engine.audio.base import SAMPLE_RATE, SAMPLES_PER_FRAME, AudioEncoder
from engine.audio.beats import BEATsEncoder
from engine.audio.features import KeyFaceAudioFeatures
from engine.audio.streaming import StreamingConfig, StreamingExtractor, encode_windowed
from engine.audio.wav2vec2 import Wav2Vec2Encoder
from engine.audio.wavlm import WavLMEncoder
from tests.test_audio_encoders import AUDIO, wav2vec2_dir

SECONDS = 10.0
N = int(SECONDS * SAMPLE_RATE) + 123  # not a whole number of frames: exercises the tail padding
ATOL = 1e-5


class LocalEncoder:
    """A toy encoder with a 1-frame receptive field: vector j reads samples [320j − 320, 320j + 640)."""

    name = "local"
    dim = 8

    def __init__(self) -> None:
        self.weight = torch.randn(960, self.dim, generator=torch.Generator().manual_seed(3)) / 30

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.pad(pad_to_frames(wave), (320, 320))
        vectors = torch.tanh(x.unfold(0, 960, 320) @ self.weight)  # (2F, dim)
        return vectors.reshape(-1, 2, self.dim)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, AudioEncoder]:
    out: dict[str, AudioEncoder] = {
        "wavlm": WavLMEncoder.from_path(AUDIO / "wavlm_tiny.pt"),
        "beats": BEATsEncoder.from_path(AUDIO / "beats_tiny.pt"),
        "wav2vec2": Wav2Vec2Encoder.from_path(wav2vec2_dir(tmp_path_factory.mktemp("wav2vec2"))),
        "local": LocalEncoder(),
    }
    try:
        from engine.audio.logmel import LogMelEncoder
    except ImportError:
        pass
    else:
        out["logmel"] = LogMelEncoder()
    return out


@cache
def signal() -> torch.Tensor:
    t = torch.arange(N, dtype=torch.float64) / SAMPLE_RATE
    env = 0.55 + 0.45 * torch.sin(2 * math.pi * 2.5 * t)
    chirp = torch.sin(2 * math.pi * (100 + 195 * t) * t)
    noise = torch.from_numpy(np.random.default_rng(1).standard_normal(N))
    return (0.5 * env * chirp + 0.05 * noise).float()


def chunk_sizes(seed: int) -> list[int]:
    """Random chunk sizes from 1 ms (16 samples) to 500 ms (8000), with runs of 1 ms chunks."""
    rng = np.random.default_rng(seed)
    sizes, total = [], 0
    while total < N:
        n = 16 if rng.random() < 0.2 else int(rng.integers(16, 8001))
        sizes.append(min(n, N - total))
        total += sizes[-1]
    return sizes


def stream(extractor: StreamingExtractor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Push the signal in random chunks; check the bounded look-ahead; return (pushed, flushed)."""
    config, pushed, received = extractor.config, [], 0
    wave = signal()
    for size in chunk_sizes(seed):
        out = extractor.push(wave[received : received + size])
        received += size
        pushed.append(out)
        if config.lookahead_frames is None:
            assert out.shape[0] == 0
        else:  # everything whose look-ahead has arrived is out
            ready = received // SAMPLES_PER_FRAME - config.lookahead_frames
            expected = max(0, ready // config.block_frames * config.block_frames)
            assert extractor.frames_emitted == expected
    return torch.cat(pushed), extractor.flush()


@pytest.mark.parametrize("name", ["wavlm", "beats", "wav2vec2", "logmel", "local"])
def test_stream_equals_offline(encoders: dict[str, AudioEncoder], name: str) -> None:
    encoder = encoders.get(name)
    if encoder is None:
        pytest.skip(f"{name} encoder not available")
    config = StreamingConfig()
    pushed, flushed = stream(StreamingExtractor(encoder, config), seed=len(name))
    total = num_frames(N)
    assert pushed.shape[0] + flushed.shape[0] == total
    assert 0 < flushed.shape[0] <= config.block_frames + config.lookahead_frames
    streamed = torch.cat([pushed, flushed])
    offline = encode_windowed(encoder, signal(), config)
    assert offline.shape == (total, 2, encoder.dim)
    torch.testing.assert_close(streamed, offline, atol=ATOL, rtol=0)
    if name in ("logmel", "local"):  # receptive field inside the context: equal to the whole-clip encode
        torch.testing.assert_close(streamed, encoder.encode(signal()), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["wavlm", "beats", "wav2vec2"])
def test_exact_mode_equals_reference(encoders: dict[str, AudioEncoder], name: str) -> None:
    """Unbounded context (emit at flush) reproduces the single-pass offline recipe."""
    encoder = encoders[name]
    pushed, flushed = stream(StreamingExtractor(encoder, StreamingConfig.exact()), seed=7)
    assert pushed.shape[0] == 0
    torch.testing.assert_close(flushed, encoder.encode(signal()), atol=ATOL, rtol=0)


def test_windows_cover_the_utterance_exactly(encoders: dict[str, AudioEncoder]) -> None:
    """With context wider than the clip the windowed path is the reference, tail included."""
    wave = signal()[: 3 * SAMPLE_RATE + 77]
    config = StreamingConfig(block_frames=8, left_context_frames=100, lookahead_frames=100)
    for name in ("wavlm", "beats", "wav2vec2"):
        encoder = encoders[name]
        extractor = StreamingExtractor(encoder, config)
        out = torch.cat([extractor.push(wave[i : i + 999]) for i in range(0, wave.numel(), 999)])
        out = torch.cat([out, extractor.flush()])
        torch.testing.assert_close(out, encoder.encode(wave), atol=ATOL, rtol=0)


def test_next_utterance_after_flush(encoders: dict[str, AudioEncoder]) -> None:
    encoder = encoders["wavlm"]
    config = StreamingConfig(block_frames=4, left_context_frames=8, lookahead_frames=4)
    extractor = StreamingExtractor(encoder, config)
    first = signal()[:20_000]
    extractor.push(first)
    extractor.flush()
    second = signal()[30_000:45_000]
    out = torch.cat([extractor.push(second[:7000]), extractor.push(second[7000:]), extractor.flush()])
    torch.testing.assert_close(out, encode_windowed(encoder, second, config), atol=ATOL, rtol=0)
    assert extractor.flush().shape == (0, 2, encoder.dim)


def test_keyface_stream(encoders: dict[str, AudioEncoder]) -> None:
    e = encoders
    features = KeyFaceAudioFeatures(e["wavlm"], e["beats"], e["wav2vec2"])
    config = StreamingConfig(block_frames=8, left_context_frames=16, lookahead_frames=6)
    wave = signal()[: 4 * SAMPLE_RATE]
    live = features.stream(config)
    assert live.lookahead_ms == (8 - 1 + 6) * 40 and live.left_context_ms == 16 * 40
    parts = [live.push(wave[i : i + 3000]) for i in range(0, wave.numel(), 3000)] + [live.flush()]
    keyframe = torch.cat([p.keyframe for p in parts])
    interpolation = torch.cat([p.interpolation for p in parts])
    beats = encode_windowed(e["beats"], wave, config)
    expected_kf = torch.cat([encode_windowed(e["wavlm"], wave, config), beats], -1)
    expected_in = torch.cat([encode_windowed(e["wav2vec2"], wave, config), beats], -1)
    assert keyframe.shape == (100, 2, 128)
    torch.testing.assert_close(keyframe, expected_kf, atol=ATOL, rtol=0)
    torch.testing.assert_close(interpolation, expected_in, atol=ATOL, rtol=0)


def test_config() -> None:
    config = StreamingConfig()
    assert config.lookahead_ms == (config.block_frames - 1 + config.lookahead_frames) * 40
    assert config.model_lookahead_ms == config.lookahead_frames * 40
    assert config.left_context_ms == config.left_context_frames * 40
    assert StreamingConfig.exact().lookahead_ms == math.inf
    for bad in ({"block_frames": 3}, {"left_context_frames": 6}, {"lookahead_frames": 5}, {"block_frames": 0}):
        with pytest.raises(ValueError):
            StreamingConfig(**bad)
