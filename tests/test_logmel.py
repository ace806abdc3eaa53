"""Log-mel encoder: AudioEncoder contract, bit-exact streaming, look-ahead and causality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.audio.base import AudioEncoder
from engine.audio.logmel import LogMelEncoder, mel_filterbank


def _wave(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.1


def _stream(enc: LogMelEncoder, wave: torch.Tensor, rng: np.random.Generator, max_chunk: int) -> torch.Tensor:
    stream, outs, i = enc.stream(), [], 0
    while i < len(wave):
        n = int(rng.integers(0, max_chunk))  # empty pushes included
        outs.append(stream.push(wave[i : i + n]))
        i += n
    outs.append(stream.flush())
    return torch.cat(outs)


def test_is_an_audio_encoder() -> None:
    enc = LogMelEncoder()
    assert isinstance(enc, AudioEncoder)
    assert (enc.name, enc.dim) == ("logmel", 80)


@pytest.mark.parametrize("n", [0, 1, 639, 640, 641, 1279, 1280, 16000, 16321])
@pytest.mark.parametrize("n_mels", [80, 40])
def test_shapes(n: int, n_mels: int) -> None:
    out = LogMelEncoder(n_mels).encode(_wave(n))
    assert out.shape == (-(-n // 640), 2, n_mels)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("win_length", [400, 512])
@pytest.mark.parametrize("n", [1, 640, 700, 5 * 640 + 39, 5 * 640 + 40, 16000, 24123])
def test_streaming_equals_offline_exactly(n: int, win_length: int) -> None:
    enc = LogMelEncoder(win_length=win_length)
    wave = _wave(n, seed=n)
    offline = enc.encode(wave)
    rng = np.random.default_rng(n + win_length)
    for max_chunk in (50, 700, 5000):
        assert torch.equal(_stream(enc, wave, rng, max_chunk), offline)


def test_stream_restarts_after_flush() -> None:
    enc = LogMelEncoder()
    stream = enc.stream()
    a, b = _wave(5000, 1), _wave(3333, 2)
    first = torch.cat([stream.push(a), stream.flush()])
    second = torch.cat([stream.push(b.numpy()), stream.flush()])
    assert torch.equal(first, enc.encode(a)) and torch.equal(second, enc.encode(b))


@pytest.mark.parametrize(("win_length", "ms"), [(400, 2.5), (512, 6.0), (320, 0.0)])
def test_lookahead(win_length: int, ms: float) -> None:
    enc = LogMelEncoder(win_length=win_length)
    assert enc.lookahead_ms == ms and enc.lookahead_samples == ms * 16
    stream = enc.stream()
    ahead = enc.lookahead_samples
    # A frame is emitted exactly when its 640 samples plus the look-ahead have arrived.
    if ahead:
        assert stream.push(torch.zeros(640 + ahead - 1)).shape[0] == 0
        assert stream.push(torch.zeros(1)).shape[0] == 1
    else:
        assert stream.push(torch.zeros(640)).shape[0] == 1
    assert stream.push(torch.zeros(639)).shape[0] == 0
    assert stream.push(torch.zeros(1)).shape[0] == 1


def test_frame_depends_only_on_its_samples_plus_lookahead() -> None:
    enc = LogMelEncoder()
    wave = _wave(6400)
    changed = wave.clone()
    changed[3 * 640 + enc.lookahead_samples :] += 0.5
    a, b = enc.encode(wave), enc.encode(changed)
    assert torch.equal(a[:3], b[:3]) and not torch.equal(a[3], b[3])
    changed = wave.clone()
    changed[: 3 * 640 - enc.lookahead_samples] += 0.5  # left context is bounded the same way
    assert torch.equal(enc.encode(changed)[3:], a[3:])


def test_tone_lands_in_the_right_band() -> None:
    enc = LogMelEncoder(f_min=0.0, f_max=8000.0)
    t = torch.arange(16000) / 16000
    feats = enc.encode(0.5 * torch.sin(2 * torch.pi * 1000 * t))
    fb = mel_filterbank(80, 512, 16000, 0.0, 8000.0)
    centre_hz = (fb * torch.linspace(0, 8000, 257)[:, None]).sum(0) / fb.sum(0)
    peak = int(feats[5:-5].mean((0, 1)).argmax())
    assert abs(float(centre_hz[peak]) - 1000) < 60
    silent = enc.encode(torch.zeros(1280))
    assert torch.all(silent == -1.5)  # log10(1e-10) floor, scaled: (-10 + 4) / 4


def test_filterbank_and_bad_parameters() -> None:
    fb = mel_filterbank(80, 512)
    assert fb.shape == (257, 80) and (fb >= 0).all() and ((fb > 0).sum(0) >= 1).all()
    for kwargs in ({"win_length": 300}, {"win_length": 401}, {"win_length": 1024}, {"f_max": 9000.0}):
        with pytest.raises(ValueError):
            LogMelEncoder(**kwargs)
    with pytest.raises(ValueError):
        LogMelEncoder().encode(torch.zeros(2, 640))


@pytest.mark.parametrize("context", [1, 2])
@pytest.mark.parametrize("n", [1, 640, 2 * 640 + 1, 16000, 24123])
def test_context_streaming_equals_offline_exactly(n: int, context: int) -> None:
    enc = LogMelEncoder(40, context=context)
    wave = _wave(n, seed=n)
    offline = enc.encode(wave)
    assert offline.shape == (-(-n // 640), 2, 40 * (2 * context + 1))
    rng = np.random.default_rng(n + context)
    for max_chunk in (50, 700, 5000):
        assert torch.equal(_stream(enc, wave, rng, max_chunk), offline)


def test_context_stacks_neighbours_with_silence_outside() -> None:
    plain, ctx = LogMelEncoder(40), LogMelEncoder(40, context=2)
    wave = _wave(10 * 640, seed=3)
    base, out = plain.encode(wave), ctx.encode(wave)
    assert ctx.dim == 200
    for f in range(10):
        for j, g in enumerate(range(f - 2, f + 3)):
            block = out[f, :, 40 * j : 40 * (j + 1)]
            assert torch.equal(block, base[g] if 0 <= g < 10 else torch.full_like(block, -1.5))


def test_context_adds_its_frames_to_the_lookahead() -> None:
    enc = LogMelEncoder(40, context=2)
    assert enc.lookahead_samples == 40 + 2 * 640 and enc.lookahead_ms == 82.5
    stream = enc.stream()
    assert stream.push(torch.zeros(640 + enc.lookahead_samples - 1)).shape[0] == 0
    assert stream.push(torch.zeros(1)).shape[0] == 1
    with pytest.raises(ValueError, match="context"):
        LogMelEncoder(40, context=-1)
