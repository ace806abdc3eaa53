"""Client audio ingest: every rate x encoding x layout, streaming == one-shot, and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine.audio.ingest import SUPPORTED_RATES, AudioFormat, AudioIngest
from engine.audio.resample import load_audio, resample
from engine.errors import InputError, KeyFaceError

TOL = 1e-6


def _signal(rate: int, channels: int, seconds: float = 0.3) -> np.ndarray:
    """(n, channels) float test tone: 440 Hz left, 1 kHz right, at -6 dBFS."""
    t = np.arange(int(rate * seconds)) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.5 * np.sin(2 * np.pi * 1000 * t + 0.3)
    return np.stack([left, right], axis=1)[:, :channels]


def _encode(x: np.ndarray, encoding: str) -> tuple[bytes, np.ndarray]:
    """Interleaved wire bytes and the float samples they decode to exactly."""
    if encoding == "pcm16":
        q = np.round(x * 32767).astype("<i2")
        return q.tobytes(), q.astype(np.float32) / 32768
    f = x.astype("<f4")
    return f.tobytes(), f.astype(np.float32)


def _expected(decoded: np.ndarray, rate: int) -> np.ndarray:
    mono = decoded.mean(axis=1, dtype=np.float32) if decoded.shape[1] > 1 else decoded[:, 0]
    return resample(mono, rate, 16000)


def _chunks(data: bytes, unit: int, rng: np.random.Generator, max_units: int = 700) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = int(rng.integers(0, max_units)) * unit
        out.append(data[i : i + n])
        i += n
    return out


def _run(ingest: AudioIngest, chunks: list) -> np.ndarray:
    return np.concatenate([*(ingest.push(c) for c in chunks), ingest.flush()])


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("encoding", ["pcm16", "f32"])
@pytest.mark.parametrize("rate", SUPPORTED_RATES)
def test_every_rate_format_layout(rate: int, encoding: str, channels: int) -> None:
    x = _signal(rate, channels)
    data, decoded = _encode(x, encoding)
    fmt = AudioFormat(encoding, rate, channels)
    rng = np.random.default_rng(rate + channels)
    out = _run(AudioIngest(fmt), _chunks(data, fmt.frame_bytes, rng))
    expected = _expected(decoded, rate)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == len(expected) == round(len(x) * 16000 / rate)
    np.testing.assert_allclose(out, expected, rtol=0, atol=TOL)
    # The content survived: the tone is where it should be on the 16 kHz timeline.
    t = np.arange(len(out)) / 16000
    ref = 0.5 * np.sin(2 * np.pi * 440 * t)
    if channels == 2:
        ref = (ref + 0.5 * np.sin(2 * np.pi * 1000 * t + 0.3)) / 2
    mid = slice(len(out) // 5, -len(out) // 5)
    assert np.max(np.abs(out[mid] - ref[mid])) < 2e-3


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
@pytest.mark.parametrize("encoding", ["pcm16", "f32"])
def test_byte_stream_mode_carries_partial_samples(rate: int, encoding: str) -> None:
    x = _signal(rate, 2, seconds=0.1)
    data, decoded = _encode(x, encoding)
    rng = np.random.default_rng(7)
    ingest = AudioIngest(AudioFormat(encoding, rate, 2), byte_stream=True)
    chunks = _chunks(data, 1, rng, max_units=13)  # arbitrary byte counts, odd ones included
    assert any(len(c) % 2 for c in chunks)
    out = _run(ingest, chunks)
    np.testing.assert_allclose(out, _expected(decoded, rate), rtol=0, atol=TOL)
    assert ingest.dropped_bytes == 0


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_numpy_arrays(dtype: type, channels: int) -> None:
    x = _signal(24000, channels)
    arr = np.round(x * 32767).astype(np.int16) if dtype is np.int16 else x.astype(dtype)
    if channels == 1:
        arr = arr[:, 0]
    ingest = AudioIngest(AudioFormat("f32", 24000, channels))
    out = _run(ingest, [arr[:1000], arr[1000:1001], arr[1001:]])
    decoded = (arr.astype(np.float32) / 32768 if dtype is np.int16 else arr.astype(np.float32)).reshape(
        len(arr), channels
    )
    np.testing.assert_allclose(out, _expected(decoded, 24000), rtol=0, atol=TOL)


def test_16k_passthrough_is_exact_and_immediate() -> None:
    data, decoded = _encode(_signal(16000, 1), "f32")
    ingest = AudioIngest(AudioFormat("f32", 16000, 1))
    first = ingest.push(data[:4000])
    assert len(first) == 1000  # nothing held back at the native rate
    out = np.concatenate([first, ingest.push(data[4000:]), ingest.flush()])
    np.testing.assert_array_equal(out, decoded[:, 0])


def test_flush_restarts_utterance_and_keeps_timeline() -> None:
    data, _ = _encode(_signal(48000, 1), "pcm16")
    ingest = AudioIngest(AudioFormat("pcm16", 48000, 1))
    first = _run(ingest, [data])
    second = _run(ingest, [data])
    np.testing.assert_array_equal(first, second)
    assert ingest.samples_out == 2 * len(first)
    ingest.reset()
    assert ingest.samples_out == 0


def test_format_aliases_and_sizes() -> None:
    fmt = AudioFormat("S16LE", 44100, 2)
    assert (fmt.encoding, fmt.bytes_per_sample, fmt.frame_bytes) == ("pcm16", 2, 4)
    assert AudioFormat("float32", 8000.0, 1).sample_rate == 8000
    assert AudioFormat("f32le").frame_bytes == 4
    assert fmt.describe() == "pcm16 stereo 44100 Hz"


# --------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("encoding", ["mp3", "pcm24", "", "opus", None, 16])
def test_unknown_encoding(encoding: object) -> None:
    with pytest.raises(InputError, match="encoding"):
        AudioFormat(encoding, 16000, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, -1, 7, 10**7, 44100.5, 11025, float("nan"), float("inf"), "16000", True])
def test_absurd_or_unsupported_rate(rate: object) -> None:
    with pytest.raises(InputError, match="sample rate"):
        AudioFormat("pcm16", rate, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("channels", [0, -1, 3, 6, 1.5, "2", None])
def test_wrong_channel_count(channels: object) -> None:
    with pytest.raises(InputError, match="channel"):
        AudioFormat("pcm16", 16000, channels)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(100, 3), (100, 1), (100,), (2, 100, 1)])
def test_array_with_wrong_channel_layout(shape: tuple[int, ...]) -> None:
    ingest = AudioIngest(AudioFormat("f32", 16000, 2))
    with pytest.raises(InputError, match="shape"):
        ingest.push(np.zeros(shape, np.float32))


@pytest.mark.parametrize(
    ("fmt", "nbytes"),
    [(("pcm16", 16000, 1), 3), (("pcm16", 44100, 2), 6), (("f32", 48000, 1), 2), (("f32", 8000, 2), 12)],
)
def test_partial_sample_frame_in_message_mode(fmt: tuple, nbytes: int) -> None:
    with pytest.raises(InputError, match="not a whole number of sample frames"):
        AudioIngest(AudioFormat(*fmt)).push(bytes(nbytes))


def test_errors_are_keyface_errors() -> None:
    assert issubclass(InputError, KeyFaceError)


def _bad_chunks(frame_bytes: int) -> list[tuple[object, str]]:
    nan = np.array([0.1, np.nan, 0.2, 0.3], "<f4").tobytes()
    inf = np.array([0.1, 0.2, -np.inf, 0.3], "<f4").tobytes()
    return [
        (nan, "NaN"),
        (inf, "infinite"),
        (np.full(4, 20000.0, "<f4").tobytes(), "16-bit PCM sent as f32"),
        (bytes(frame_bytes + 1), "whole number"),
        ("not audio", "must be bytes"),
        ([0.0, 0.1], "must be bytes"),
        (np.zeros((4, 3), np.float32), "shape"),
        (np.zeros(4, np.int32), "dtype"),
        (np.array([0.0, np.nan, 0.0, 0.0], np.float32), "NaN"),
    ]


@pytest.mark.parametrize("case", range(9))
@pytest.mark.parametrize("rate", [16000, 44100])
def test_rejected_chunk_leaves_stream_untouched(case: int, rate: int) -> None:
    fmt = AudioFormat("f32", rate, 1)
    bad, message = _bad_chunks(fmt.frame_bytes)[case]
    data, _ = _encode(_signal(rate, 1), "f32")
    chunks = _chunks(data, 4, np.random.default_rng(case), max_units=2000)
    reference = _run(AudioIngest(fmt), chunks)
    ingest = AudioIngest(fmt)
    outs = [ingest.push(c) for c in chunks[:2]]
    with pytest.raises(InputError, match=message):
        ingest.push(bad)  # type: ignore[arg-type]
    outs += [ingest.push(c) for c in chunks[2:]] + [ingest.flush()]
    np.testing.assert_array_equal(np.concatenate(outs), reference)


def test_rejected_chunk_keeps_byte_stream_remainder() -> None:
    fmt = AudioFormat("f32", 22050, 1)
    data, _ = _encode(_signal(22050, 1, 0.05), "f32")
    reference = _run(AudioIngest(fmt), [data])
    ingest = AudioIngest(fmt, byte_stream=True)
    out = [ingest.push(data[:401])]
    assert ingest.pending_bytes == 1
    # Completes the pending sample but carries a NaN further on: rejected as a whole.
    with pytest.raises(InputError, match="NaN"):
        ingest.push(data[401:404] + np.array([np.nan], "<f4").tobytes())
    assert ingest.pending_bytes == 1
    with pytest.raises(InputError, match="partial sample"):
        ingest.push(np.zeros(4, np.float32))
    out += [ingest.push(data[401:]), ingest.flush()]
    np.testing.assert_array_equal(np.concatenate(out), reference)


def test_flush_drops_incomplete_trailing_sample() -> None:
    ingest = AudioIngest(AudioFormat("pcm16", 16000, 2), byte_stream=True)
    assert len(ingest.push(bytes(10))) == 2
    assert len(ingest.flush()) == 0
    assert ingest.dropped_bytes == 2 and ingest.pending_bytes == 0


# ---------------------------------------------------------------------------- offline files


def _write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(x * 32767).astype("<i2").tobytes())


def test_load_audio_wav_stereo_44k(tmp_path: Path) -> None:
    x = _signal(44100, 2, seconds=0.5)
    _write_wav(tmp_path / "a.wav", x, 44100)
    y = load_audio(tmp_path / "a.wav")
    decoded = np.round(x * 32767).astype(np.int16).astype(np.float32) / 32768
    assert y.dtype == np.float32 and len(y) == 8000
    np.testing.assert_allclose(y, _expected(decoded, 44100), rtol=0, atol=1e-5)


def test_load_audio_mp3(tmp_path: Path) -> None:
    import av

    x = _signal(24000, 1, seconds=0.5)[:, 0].astype(np.float32)
    with av.open(str(tmp_path / "a.mp3"), "w") as container:
        stream = container.add_stream("mp3", rate=24000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[None], format="fltp", layout="mono")
        frame.sample_rate = 24000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    y = load_audio(tmp_path / "a.mp3")
    assert abs(len(y) - 8000) < 1600  # codec priming/padding
    assert math.isclose(float(np.sqrt(np.mean(y[2000:6000] ** 2))), 0.5 / math.sqrt(2), rel_tol=0.1)


@pytest.mark.parametrize("kind", ["missing", "directory", "garbage", "empty", "no_audio"])
def test_load_audio_bad_files(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.wav"
    if kind == "directory":
        path = tmp_path
    elif kind == "garbage":
        path.write_bytes(b"RIFF\x00\x00garbage" * 50)
    elif kind == "empty":
        _write_wav(path, np.zeros((0, 1)), 16000)
    elif kind == "no_audio":
        path = tmp_path / "x.png"
        from PIL import Image

        Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(InputError, match=str(path.name)):
        load_audio(path)


@pytest.mark.parametrize("rate", [0, -5, 10**9, 1.5])
def test_resample_rejects_bad_rates(rate: object) -> None:
    with pytest.raises(InputError, match="sample rate"):
        resample(np.zeros(10, np.float32), rate, 16000)  # type: ignore[arg-type]


def test_resample_rejects_nan() -> None:
    with pytest.raises(InputError, match="NaN"):
        resample(np.array([0.0, np.nan], np.float32), 8000, 16000)
