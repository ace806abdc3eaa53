"""Voice activity: sentence boundaries on synthesized speech, laughs via the energy gate, no false
alarms on silence and noise. Speech comes from espeak-ng (scripts/install-system-deps.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.audio.resample import load_audio
from engine.audio.vad import (
    SpeechEnd,
    SpeechStart,
    VadConfig,
    VadEvent,
    VoiceActivityDetector,
    load_speech_model,
)

SR = 16000
TOLERANCE = SR // 10  # 100 ms
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas.",
]
GAPS_S = [0.6, 0.75, 1.0, 0.7, 0.6]  # before, between and after the sentences


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Each sentence at 16 kHz, trimmed to its audible extent (|x| > 1e-3)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        message = "espeak-ng is not installed; run scripts/install-system-deps.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("speech")
    clips = []
    for i, text in enumerate(SENTENCES):
        path = Path(out) / f"s{i}.wav"
        subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True, timeout=60)
        x = load_audio(path)  # 22.05 kHz WAV -> 16 kHz via PyAV + soxr
        loud = np.flatnonzero(np.abs(x) > 1e-3)
        clips.append(x[loud[0] : loud[-1] + 1])
    return clips


def _concat(clips: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    parts, bounds, pos = [], [], 0
    for gap, clip in zip(GAPS_S[: len(clips) + 1], [*clips, None], strict=True):
        parts.append(np.zeros(int(gap * SR), np.float32))
        pos += int(gap * SR)
        if clip is not None:
            parts.append(clip)
            bounds.append((pos, pos + len(clip)))
            pos += len(clip)
    return np.concatenate(parts), bounds


def _feed(vad: VoiceActivityDetector, x: np.ndarray, rng: np.random.Generator) -> list[VadEvent]:
    events: list[VadEvent] = []
    i = 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        events += vad.push(x[i : i + n])
        i += n
    return events + vad.flush()


def _segments(events: list[VadEvent]) -> list[tuple[int, int]]:
    """Pair alternating start/end events; checks ordering and decision latency."""
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd] * (len(events) // 2)
    for e in events:
        assert e.detected_at >= e.sample
    return [(s.sample, e.sample) for s, e in zip(events[::2], events[1::2], strict=True)]


def _noise(n: int, dbfs: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


@pytest.mark.parametrize("noise_dbfs", [None, -60.0, -50.0])
def test_sentence_boundaries_within_100ms(sentences: list[np.ndarray], noise_dbfs: float | None) -> None:
    x, truth = _concat(sentences)
    if noise_dbfs is not None:
        x = x + _noise(len(x), noise_dbfs)
    segments = _segments(_feed(VoiceActivityDetector(), x, np.random.default_rng(1)))
    assert len(segments) == len(truth), segments
    errors_ms = [
        (got - want) / SR * 1000
        for seg, ref in zip(segments, truth, strict=True)
        for got, want in zip(seg, ref, strict=True)
    ]
    print("boundary errors (ms):", [round(e, 1) for e in errors_ms])
    assert max(map(abs, errors_ms)) <= TOLERANCE / SR * 1000, errors_ms


def test_chunking_does_not_change_events(sentences: list[np.ndarray]) -> None:
    x, _ = _concat(sentences[:2])
    whole = VoiceActivityDetector()
    reference = whole.push(x) + whole.flush()
    assert reference == _feed(VoiceActivityDetector(), x, np.random.default_rng(5))


def _laugh(seed: int = 3, bursts: int = 5, level_dbfs: float = -20.0) -> np.ndarray:
    """'Ha-ha-ha': breathy, noisy bursts with a weak falling glottal buzz; silero scores it < 0.1."""
    rng = np.random.default_rng(seed)
    on, off = int(0.12 * SR), int(0.10 * SR)
    parts = []
    for k in range(bursts):
        t = np.arange(on) / SR
        buzz = np.sign(np.sin(2 * np.pi * (260 - 8 * k) * t))
        breath = np.diff(rng.standard_normal(on + 1))
        burst = (0.3 * buzz + 0.7 * breath) * np.sqrt(np.sin(np.pi * np.arange(on) / on))
        parts += [burst / np.sqrt(np.mean(burst**2)) * 10 ** (level_dbfs / 20), np.zeros(off)]
    return np.concatenate(parts[:-1]).astype(np.float32)


def test_laugh_counts_as_activity_through_energy_gate() -> None:
    laugh = _laugh()
    lead = SR // 2
    x = np.concatenate([np.zeros(lead, np.float32), laugh, np.zeros(SR, np.float32)]) + _noise(
        lead + len(laugh) + SR, -65.0
    )
    segments = _segments(_feed(VoiceActivityDetector(), x, np.random.default_rng(2)))
    assert len(segments) == 1, segments
    start, end = segments[0]
    assert abs(start - lead) <= TOLERANCE and abs(end - (lead + len(laugh))) <= TOLERANCE
    # Silero alone does not call it speech: the energy gate is what keeps the avatar "active".
    no_gate = VoiceActivityDetector(VadConfig(energy_gate=False))
    assert no_gate.push(x) + no_gate.flush() == []


@pytest.mark.parametrize(
    "signal",
    [
        np.zeros(5 * SR, np.float32),
        _noise(5 * SR, -60.0),
        _noise(5 * SR, -35.0),  # steady background noise well above the absolute gate
        np.concatenate([_noise(2 * SR, -60.0), np.full(160, 0.5, np.float32), _noise(2 * SR, -60.0, 1)]),
    ],
    ids=["digital-silence", "low-noise", "steady-noise", "click"],
)
def test_no_events_without_activity(signal: np.ndarray) -> None:
    vad = VoiceActivityDetector()
    assert _feed(vad, signal, np.random.default_rng(0)) == []
    assert not vad.is_speech


def test_hangover_bridges_short_pauses() -> None:
    burst = _laugh(bursts=1, level_dbfs=-15.0)
    pause = np.zeros(int(0.2 * SR), np.float32)
    x = np.concatenate([np.zeros(SR // 2, np.float32), burst, pause, burst, np.zeros(SR, np.float32)])
    long = VoiceActivityDetector(VadConfig(hangover_ms=300))
    short = VoiceActivityDetector(VadConfig(hangover_ms=100))
    assert len(_segments(long.push(x) + long.flush())) == 1
    assert len(_segments(short.push(x) + short.flush())) == 2


def test_end_event_waits_for_hangover_and_flush_closes(sentences: list[np.ndarray]) -> None:
    clip = sentences[3]
    x = np.concatenate([np.zeros(SR // 2, np.float32), clip])
    vad = VoiceActivityDetector(VadConfig(hangover_ms=400))
    events = vad.push(x)
    assert [type(e) for e in events] == [SpeechStart] and vad.is_speech
    assert events[0].detected_at - events[0].sample <= 200 * SR // 1000  # min-speech latency
    assert vad.push(np.zeros(int(0.3 * SR), np.float32)) == []  # still inside the hang-over
    end = vad.push(np.zeros(int(0.2 * SR), np.float32))
    assert [type(e) for e in end] == [SpeechEnd]
    assert abs(end[0].sample - len(x)) <= TOLERANCE
    assert end[0].detected_at - end[0].sample >= 400 * SR // 1000
    # Speech running into the end of the stream is closed by flush.
    vad2 = VoiceActivityDetector()
    events = vad2.push(x) + vad2.flush()
    assert abs(_segments(events)[0][1] - len(x)) <= TOLERANCE
    assert vad2.position == len(x)


def test_model_loads_offline_and_keeps_torch_threads() -> None:
    threads = torch.get_num_threads()
    for backend in ("onnx", "jit"):
        vad = VoiceActivityDetector(backend=backend)  # type: ignore[arg-type]
        assert vad.push(torch.zeros(1024)) == []
    assert torch.get_num_threads() == threads


def test_onnx_and_jit_models_agree(sentences: list[np.ndarray]) -> None:
    x = sentences[0][: 24 * 512]
    onnx, jit = load_speech_model("onnx"), load_speech_model("jit")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the TorchScript model is slow with a multi-threaded pool on a busy CPU
    try:
        pairs = [(onnx(w), jit(w)) for w in x.reshape(-1, 512)]
    finally:
        torch.set_num_threads(threads)
    assert max(a for a, _ in pairs) > 0.5  # it is speech
    assert max(abs(a - b) for a, b in pairs) < 1e-3


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        VadConfig(threshold=1.5)
    with pytest.raises(ValueError):
        VadConfig(hangover_ms=-1)
    assert VadConfig(threshold=0.6).off_threshold == pytest.approx(0.45)
