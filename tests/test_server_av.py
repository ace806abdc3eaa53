"""End to end over real sockets: a WAV streamed in over the websocket at real-time pace comes back
over WebRTC (a real aiortc peer) as video and audio from one clock, in sync; interrupts are quick."""

from __future__ import annotations

import asyncio
import io
import math
import time
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from engine.audio.base import SAMPLES_PER_FRAME
from engine.audio.resample import resample
from engine.live.runner import AvatarEngine
from server.client import KeyFaceClient, MediaReceiver
from server.config import ServerConfig
from server.main import ServerThread

from .live_helpers import micro_bundle, speechlike

API_TOKEN = "test-api-token"
VIDEO_TICKS = 3600  # 90 kHz RTP clock per 25 fps frame
AUDIO_RTP_RATE = 48_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    bundle = micro_bundle(seed=5)
    face = tmp_path_factory.mktemp("identity") / "face.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(face)
    bundle.identity_image = face
    engine = AvatarEngine(bundle, max_sessions=4)
    config = ServerConfig(port=0, web_root=None, auth="on", api_token=API_TOKEN)
    with ServerThread(config, engine) as srv:
        yield srv
    engine.close()


def wav_file(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return pcm.astype(np.float32) / 32768.0, w.getframerate()


def record_rtp_arrivals(pc) -> dict[str, list[tuple[int, float]]]:
    """Observe (RTP timestamp, arrival time) of every packet before the jitter buffers."""
    log: dict[str, list[tuple[int, float]]] = {"video": [], "audio": []}
    for receiver in pc.getReceivers():
        original = receiver._handle_rtp_packet

        async def spy(packet, arrival_time_ms, _orig=original, _log=log[receiver.track.kind]):
            _log.append((packet.timestamp, time.perf_counter()))
            return await _orig(packet, arrival_time_ms)

        receiver._handle_rtp_packet = spy
    return log


def first_arrival(log: list[tuple[int, float]], timestamp: int) -> float:
    times = [t for ts, t in log if ts == timestamp % (1 << 32)]
    assert times, f"no packet with RTP timestamp {timestamp}"
    return min(times)


def best_lag(received: np.ndarray, sent: np.ndarray) -> tuple[int, float]:
    """Lag of ``sent`` inside ``received`` by cross-correlation, and the normalised peak."""
    n = 1 << math.ceil(math.log2(len(received) + len(sent)))
    corr = np.fft.irfft(np.fft.rfft(received, n) * np.conj(np.fft.rfft(sent, n)), n)[: len(received)]
    lag = int(np.argmax(corr))
    window = received[lag : lag + len(sent)]
    peak = float(corr[lag] / (np.linalg.norm(window) * np.linalg.norm(sent[: len(window)]) + 1e-9))
    return lag, peak


async def connect(server: ServerThread) -> tuple[KeyFaceClient, object, MediaReceiver, dict]:
    client = KeyFaceClient(server.url, token=API_TOKEN)
    session = await client.create_session()
    rx = MediaReceiver(client, session)
    await rx.connect()
    arrivals = record_rtp_arrivals(rx.pc)
    await asyncio.wait_for(rx.connected.wait(), 10)
    return client, session, rx, arrivals


async def first_frame(audio) -> int:
    if audio.ready.get("first_frame") is not None:
        return audio.ready["first_frame"]
    return (await audio.wait_for("media_started", 10))["frame"]


def test_wav_in_real_time_comes_back_as_synced_video_and_audio(server):
    rate = 24_000
    sent, sent_rate = read_wav(wav_file(speechlike(2.0, seed=7, sr=rate), rate))
    sent16 = resample(sent, sent_rate, 16_000)
    speech_frames = math.ceil(len(sent16) / SAMPLES_PER_FRAME)

    async def scenario():
        client, session, rx, arrivals = await connect(server)
        async with client.audio(session) as audio:
            f0 = await first_frame(audio)
            await asyncio.sleep(0.3)
            await audio.stream(sent, sent_rate, chunk_seconds=0.02, lead_seconds=0.1)
            started = await audio.wait_for("speech_started", 10)
            finished = await audio.wait_for("playback_finished", 10)
            await asyncio.sleep(0.6)  # idle after the speech: the video must keep running
        await rx.close()
        await client.close_session(session)
        await client.aclose()
        return f0, started, finished, rx, arrivals

    f0, started, finished, rx, arrivals = asyncio.run(scenario())
    fs, fe = started["frame"], finished["frame"]
    assert not finished["interrupted"]
    assert fe - fs == speech_frames  # every sample of the WAV on its own frame
    assert finished["playback_position"] == pytest.approx(speech_frames * 0.04)

    # Video: one frame per 40 ms of audio, from the same frame index on both tracks.
    v0 = rx.video[0].pts
    indices = [f0 + (r.pts - v0) // VIDEO_TICKS for r in rx.video]
    assert all((r.pts - v0) % VIDEO_TICKS == 0 for r in rx.video)
    audio_seconds = (rx.audio[-1].pts - rx.audio[0].pts) / AUDIO_RTP_RATE + 0.02
    assert abs(len(rx.video) - audio_seconds * 25) <= 2
    during_speech = sum(fs <= i < fe for i in indices)
    assert abs(during_speech - speech_frames) <= 2
    assert sum(i >= fe for i in indices) >= 10  # the idle face keeps streaming after the speech

    # Audio: the WAV comes back where the server says its first frame is.
    received = rx.audio_samples(16_000)
    lag, peak = best_lag(received, sent16)
    expected = (fs - f0) * SAMPLES_PER_FRAME
    assert abs(lag - expected) < SAMPLES_PER_FRAME, (lag, expected)
    assert peak > 0.6
    tail = received[lag + len(sent16) + 800 :]
    assert len(tail) > 4000 and float(np.sqrt(np.mean(tail**2))) < 0.01  # silence after the speech

    # A/V offset: the speech onset's video frame and audio packet are sent together.
    # (Decoded timestamps count from each stream's first packet; raw RTP ones from a random origin.)
    t_video = first_arrival(arrivals["video"], arrivals["video"][0][0] + (fs - f0) * VIDEO_TICKS)
    onset = (lag * AUDIO_RTP_RATE // 16_000) // 960 * 960
    t_audio = first_arrival(arrivals["audio"], arrivals["audio"][0][0] + onset)
    print(
        f"\nA/V: lag error {lag - expected} samples, peak {peak:.2f}, "
        f"arrival offset {1000 * (t_video - t_audio):.1f} ms"
    )
    assert abs(t_video - t_audio) < 0.040, t_video - t_audio


def test_interrupt_round_trip_under_300ms_and_back_to_idle(server):
    speech = speechlike(4.0, seed=9)

    async def scenario():
        client, session, rx, _ = await connect(server)
        async with client.audio(session) as audio:
            feeder = asyncio.create_task(audio.stream(speech, 16_000, lead_seconds=0.1))
            started = await audio.wait_for("speech_started", 10)
            await asyncio.sleep(0.6)
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            sent_at = time.perf_counter()
            await audio.interrupt()
            finished = await audio.wait_for("playback_finished", 5)
            answered = time.perf_counter() - sent_at
            await asyncio.sleep(0.5)
            info = (await client.http.get(f"/v1/sessions/{session.session_id}", headers=client._headers(None))).json()
            again = await _interrupt_when_idle(audio)
        await rx.close()
        await client.close_session(session)
        await client.aclose()
        return started, finished, answered, info, again, rx, sent_at

    started, finished, answered, info, again, rx, sent_at = asyncio.run(scenario())
    assert finished["interrupted"] is True
    print(f"\ninterrupt round trip {answered * 1000:.0f} ms at {finished['playback_position']} s")
    assert answered < 0.3, f"interrupt round trip took {answered * 1000:.0f} ms"
    assert 0.4 <= finished["playback_position"] <= 1.5
    assert finished["frame"] > started["frame"]
    assert info["speaking"] is False
    assert again["interrupted"] is False and again["playback_position"] == 0.0
    # Back to idle on the wire: audio packets arriving after the answer are silent.
    after = [r for r in rx.audio if r.at > sent_at + answered + 0.1]
    assert len(after) > 10
    level = max(float(np.abs(r.frame.to_ndarray()).max()) for r in after)
    assert level < 0.01 * 32768
    metrics = server.state.metrics.interrupt_latency.collect()[0]
    count = next(s.value for s in metrics.samples if s.name.endswith("_count"))
    assert count >= 1


async def _interrupt_when_idle(audio) -> dict:
    await audio.interrupt()
    return await audio.wait_for("playback_finished", 2)


def first_video_codec(sdp: str) -> str:
    m_line = next(line for line in sdp.splitlines() if line.startswith("m=video"))
    payload = m_line.split()[3]
    rtpmap = next(line for line in sdp.splitlines() if line.startswith(f"a=rtpmap:{payload} "))
    return rtpmap.split()[1].split("/")[0]


def test_h264_video(server):
    async def scenario():
        client = KeyFaceClient(server.url, token=API_TOKEN)
        session = await client.create_session()
        rx = MediaReceiver(client, session)
        await rx.connect(codec="h264")
        await asyncio.wait_for(rx.connected.wait(), 10)
        await asyncio.sleep(1.0)
        await rx.close()
        await client.close_session(session)
        await client.aclose()
        return rx

    rx = asyncio.run(scenario())
    assert first_video_codec(rx.pc.remoteDescription.sdp) == "H264"
    assert len(rx.video) >= 15
    image = rx.video[-1].frame.to_ndarray(format="rgb24")
    assert image.shape[:2] == (4, 4)
    assert torch.tensor(image).float().std() > 0
