"""Every bad input gets a clear error or close code, and a bystander session keeps streaming."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import httpx
import numpy as np
import pytest
import websockets
from PIL import Image

from engine.live.runner import AvatarEngine
from server.client import KeyFaceClient, MediaReceiver, Session
from server.config import ServerConfig
from server.main import ServerThread

from .live_helpers import micro_bundle, speechlike

API = "protocol-api-token"
CONFIG = ServerConfig(
    port=0,
    web_root=None,
    auth="on",
    api_token=API,
    max_sessions=4,
    max_message_bytes=64 * 1024,
    max_body_bytes=256 * 1024,
    max_messages_per_second=100,
    max_buffered_seconds=2.0,
    sample_rates=(16000, 24000, 48000),
    idle_timeout=2.0,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    bundle = micro_bundle(seed=11)
    face = tmp_path_factory.mktemp("identity") / "face.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(face)
    bundle.identity_image = face
    engine = AvatarEngine(bundle, max_sessions=CONFIG.max_sessions)
    with ServerThread(CONFIG, engine) as srv:
        yield srv
    engine.close()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API}"}, timeout=20) as client:
        yield client


class Bystander:
    """A session watched by a real aiortc peer on its own event loop for the whole module."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client: KeyFaceClient | None = None
        self.session: Session | None = None
        self.rx: MediaReceiver | None = None
        self.run(self._open(url))
        self.started = time.perf_counter()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _open(self, url: str) -> None:
        self.client = KeyFaceClient(url, token=API)
        self.session = await self.client.create_session()
        self.rx = MediaReceiver(self.client, self.session, keep_video=False)
        await self.rx.connect()
        await asyncio.wait_for(self.rx.connected.wait(), 10)
        await asyncio.sleep(0.3)

    async def _close(self) -> None:
        await self.rx.close()
        await self.client.close_session(self.session)
        await self.client.aclose()

    def close(self) -> None:
        self.run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def bystander(server):
    watcher = Bystander(server.url)
    yield watcher
    watcher.close()


def new_session(http) -> dict:
    r = http.post("/v1/sessions", json={})
    assert r.status_code == 201, r.text
    return r.json()


def error_of(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code
    assert body["message"] and "Traceback" not in body["message"]
    return body["message"]


def ws_url(server, info: dict, token: str | None) -> str:
    url = server.url.replace("http", "ws") + f"/v1/sessions/{info['session_id']}/audio"
    return url + (f"?token={token}" if token else "")


async def expect(ws, kind: str, code: str | None = None, timeout: float = 5.0) -> dict:
    """The next message of type ``kind`` (skipping playback events and warnings), checking its code."""
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg["type"] in ("media_started", "speech_started", "playback_finished", "warning") and kind != msg["type"]:
            continue
        assert msg["type"] == kind, msg
        if code is not None:
            assert msg["code"] == code, msg
            assert msg["message"]
        return msg


async def expect_close(ws, code: int, timeout: float = 5.0) -> None:
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code, closed.value


async def opened(server, info: dict):
    ws = await websockets.connect(ws_url(server, info, info["token"]), max_size=None)
    await expect(ws, "ready")
    return ws


def eventually(check, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pcm16(seconds: float, rate: int = 16000, seed: int = 0) -> bytes:
    return (speechlike(seconds, seed=seed, sr=rate) * 32767).astype("<i2").tobytes()


# -- HTTP ---------------------------------------------------------------------------------------


def test_health_config_metrics_and_openapi(server, bystander, http):
    assert http.get("/health").json()["status"] == "ok"
    config = http.get("/v1/config").json()
    assert config["auth"] is True and config["sample_rates"] == [16000, 24000, 48000]
    spec = http.get("/openapi.json").json()
    assert {"/v1/sessions", "/v1/sessions/{session_id}/offer", "/v1/sessions/{session_id}"} <= set(spec["paths"])
    text = http.get("/metrics").text
    assert "keyface_sessions_active" in text and "keyface_interrupt_latency_seconds" in text


def test_bad_or_missing_tokens_are_refused(server, bystander):
    with httpx.Client(base_url=server.url) as anon:
        assert "missing" in error_of(anon.post("/v1/sessions", json={}), 401, "unauthorized")
        r = anon.post("/v1/sessions", json={}, headers={"Authorization": "Bearer nope"})
        error_of(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        error_of(anon.get("/v1/sessions"), 401, "unauthorized")
        sid = bystander.session.session_id
        error_of(anon.get(f"/v1/sessions/{sid}", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        # a session token works for its own session only
        other = anon.post("/v1/sessions", json={}, headers={"Authorization": f"Bearer {API}"}).json()
        own = {"Authorization": f"Bearer {other['token']}"}
        assert anon.get(f"/v1/sessions/{other['session_id']}", headers=own).status_code == 200
        error_of(anon.get(f"/v1/sessions/{sid}", headers=own), 401, "unauthorized")
        error_of(anon.delete(f"/v1/sessions/{sid}", headers=own), 401, "unauthorized")
        assert anon.get(f"/v1/sessions/{other['session_id']}?token={other['token']}").status_code == 200
        assert anon.delete(f"/v1/sessions/{other['session_id']}", headers=own).status_code == 204

    async def sockets():
        info = {"session_id": bystander.session.session_id}
        for token in (None, "wrong-token"):
            async with websockets.connect(ws_url(server, info, token)) as ws:
                await expect(ws, "error", "unauthorized")
                await expect_close(ws, 4401)

    asyncio.run(sockets())


def test_unknown_session(server, http):
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/offer")):
        r = http.request(method, f"/v1/sessions/0123456789abcdef{path}", json={"sdp": "v=0", "type": "offer"})
        error_of(r, 404, "unknown_session")
    error_of(http.get("/v1/nothing-here"), 404, "not_found")

    async def socket():
        async with websockets.connect(ws_url(server, {"session_id": "0123456789abcdef"}, API)) as ws:
            await expect(ws, "error", "unknown_session")
            await expect_close(ws, 4404)

    asyncio.run(socket())


def test_malformed_offers_are_refused_and_the_session_still_connects(server, http):
    info = new_session(http)
    url = info["offer_url"]
    error_of(http.post(url, json={"sdp": "hello", "type": "offer"}), 400, "bad_request")
    garbage = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=video 9 nonsense\r\nm=audio x\r\nzzz\r\n"
    assert "SDP" in error_of(http.post(url, json={"sdp": garbage, "type": "offer"}), 400, "bad_request")
    video_only = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n"
    assert "audio" in error_of(http.post(url, json={"sdp": video_only, "type": "offer"}), 400, "bad_request")
    error_of(http.post(url, json={"sdp": "v=0", "type": "answer"}), 400, "bad_request")
    error_of(http.post(url, json={"type": "offer"}), 400, "bad_request")
    error_of(http.post(url, content=b"not json", headers={"content-type": "application/json"}), 400, "bad_request")

    async def real_peer():
        client = KeyFaceClient(server.url, token=API)
        session = Session.from_json(info)
        rx = MediaReceiver(client, session, keep_video=False)
        sendonly = await _sendonly_offer()
        r = await client.http.post(url, json={"sdp": sendonly, "type": "offer"}, headers=client._headers(None))
        error_of(r, 400, "bad_request")
        await rx.connect()
        await asyncio.wait_for(rx.connected.wait(), 10)
        await asyncio.sleep(0.5)
        await rx.close()
        await client.close_session(session)
        await client.aclose()
        return rx

    rx = asyncio.run(real_peer())
    assert len(rx.video) >= 8


async def _sendonly_offer() -> str:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendonly")
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def test_bad_session_requests(server, http):
    error_of(http.post("/v1/sessions", json={"image": "%%%"}), 400, "bad_request")
    not_png = base64.b64encode(b"definitely not an image").decode()
    assert "image" in error_of(http.post("/v1/sessions", json={"image": not_png}), 400, "bad_request")
    assert "unknown emotion" in error_of(http.post("/v1/sessions", json={"emotion": "grumpy"}), 400, "bad_request")
    error_of(http.post("/v1/sessions", json={"emotion": {"valence": 3, "arousal": 0}}), 400, "bad_request")
    big = "A" * (CONFIG.max_body_bytes + 10)
    error_of(http.post("/v1/sessions", json={"image": big}), 413, "too_large")
    error_of(http.post("/v1/sessions", json={"seed": "x"}), 400, "bad_request")


def test_session_limit_then_room_again(server, bystander, http):
    opened_ids = []
    while len(http.get("/v1/sessions").json()["sessions"]) < CONFIG.max_sessions:
        opened_ids.append(new_session(http)["session_id"])
    assert "limit" in error_of(http.post("/v1/sessions", json={}), 503, "too_many_sessions")
    for sid in opened_ids:
        assert http.delete(f"/v1/sessions/{sid}").status_code == 204
    info = new_session(http)
    assert http.delete(f"/v1/sessions/{info['session_id']}").status_code == 204


def test_idle_sessions_time_out(server, http):
    info = new_session(http)
    sid = info["session_id"]
    assert http.get(f"/v1/sessions/{sid}").status_code == 200
    assert eventually(lambda: http.get(f"/v1/sessions/{sid}").status_code == 404, CONFIG.idle_timeout + 3)
    error_of(http.get(f"/v1/sessions/{sid}"), 404, "unknown_session")
    assert 'keyface_sessions_closed_total{reason="idle_timeout"}' in http.get("/metrics").text


# -- the audio websocket -------------------------------------------------------------------------


def test_bad_messages_get_errors_and_the_socket_stays_usable(server, http):
    info = new_session(http)

    async def scenario():
        ws = await opened(server, info)
        await ws.send("this is not json")
        await expect(ws, "error", "bad_json")
        await ws.send("[1, 2]")
        await expect(ws, "error", "bad_message")
        await ws.send(json.dumps({"no": "type"}))
        await expect(ws, "error", "bad_message")
        await ws.send(json.dumps({"type": "dance"}))
        assert "dance" in (await expect(ws, "error", "unknown_type"))["message"]
        await ws.send(b"\x00\x01" * 160)
        assert "start" in (await expect(ws, "error", "no_format"))["message"]
        for start in (
            {"type": "start", "sample_rate": 12345},
            {"type": "start", "sample_rate": 8000},  # valid PCM, but not accepted by this server
            {"type": "start", "sample_rate": 16000, "channels": 3},
            {"type": "start", "sample_rate": 16000, "encoding": "mp3"},
            {"type": "start", "sample_rate": "fast"},
        ):
            await ws.send(json.dumps(start))
            await expect(ws, "error", "unsupported_format")
        await ws.send(json.dumps({"type": "start", "sample_rate": 24000, "channels": 2}))
        assert (await expect(ws, "started"))["channels"] == 2
        await ws.send(b"\x00" * 6)  # 1.5 stereo PCM16 sample frames
        assert "whole number" in (await expect(ws, "error", "bad_audio"))["message"]
        await ws.send(json.dumps({"type": "audio", "audio": "***"}))
        await expect(ws, "error", "bad_audio")
        await ws.send(json.dumps({"type": "audio"}))
        await expect(ws, "error", "bad_message")
        nan = base64.b64encode(np.array([0.1, np.nan], "<f4").tobytes()).decode()
        await ws.send(json.dumps({"type": "audio", "audio": nan, "encoding": "f32", "sample_rate": 16000}))
        assert "NaN" in (await expect(ws, "error", "bad_audio"))["message"]
        await ws.send(json.dumps({"type": "emotion", "valence": 2, "arousal": 0}))
        await expect(ws, "error", "bad_emotion")
        await ws.send(json.dumps({"type": "emotion", "preset": "happy", "ramp": -1}))
        await expect(ws, "error", "bad_emotion")
        await ws.send(json.dumps({"type": "emotion", "valence": True, "arousal": 0}))
        await expect(ws, "error", "bad_message")
        # still fully usable
        await ws.send(json.dumps({"type": "emotion", "preset": "happy", "ramp": 0.2}))
        assert (await expect(ws, "emotion_set"))["valence"] == pytest.approx(0.85)
        await ws.send(json.dumps({"type": "ping", "time": 1}))
        assert (await expect(ws, "pong"))["time"] == 1
        await ws.send(json.dumps({"type": "interrupt"}))  # nothing playing: answered at once
        finished = await expect(ws, "playback_finished")
        assert finished["interrupted"] is False and finished["playback_position"] == 0.0
        await ws.close()

    asyncio.run(scenario())
    assert http.delete(f"/v1/sessions/{info['session_id']}").status_code == 204


def test_json_audio_styles_play(server, http):
    info = new_session(http)
    audio = base64.b64encode(pcm16(0.6, rate=24000, seed=3)).decode()

    async def scenario():
        ws = await opened(server, info)
        # HeyGen style: agent.speak chunks + agent.speak_end
        half = len(audio) // 8 * 4
        await ws.send(json.dumps({"type": "agent.speak", "audio": audio[:half], "sample_rate": 24000}))
        assert (await expect(ws, "warning", "no_viewer"))["message"]
        await ws.send(json.dumps({"type": "agent.speak", "audio": audio[half:], "sample_rate": 24000}))
        await ws.send(json.dumps({"type": "agent.speak_end"}))
        await expect(ws, "speech_started", timeout=10)
        first = await expect(ws, "playback_finished", timeout=10)
        # Tavus style envelope with done: true
        echo = {"event_type": "conversation.echo", "properties": {"audio": audio, "sample_rate": 24000, "done": True}}
        await ws.send(json.dumps(echo))
        await expect(ws, "speech_started", timeout=10)
        second = await expect(ws, "playback_finished", timeout=10)
        await ws.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert first["playback_position"] == pytest.approx(0.6, abs=0.05)
    assert second["playback_position"] == pytest.approx(0.6, abs=0.05)
    assert http.delete(f"/v1/sessions/{info['session_id']}").status_code == 204


def test_audio_far_ahead_is_refused_with_buffer_full(server, http):
    info = new_session(http)

    async def scenario():
        ws = await opened(server, info)
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await expect(ws, "started")
        second = pcm16(1.0)
        for _ in range(4):  # 4 s at once against a 2 s buffer: the first second is taken
            await ws.send(second)
        refused = [await expect(ws, "error", "buffer_full") for _ in range(3)]
        await ws.send(json.dumps({"type": "interrupt"}))
        await expect(ws, "playback_finished", timeout=5)
        await ws.close()
        return refused

    refused = asyncio.run(scenario())
    assert all("limit 2 s" in r["message"] for r in refused)
    refusals = next(ln for ln in http.get("/metrics").text.splitlines() if ln.startswith("keyface_audio_refused_total"))
    assert float(refusals.split()[1]) >= 1
    assert http.delete(f"/v1/sessions/{info['session_id']}").status_code == 204


def test_oversized_messages_close_with_1009(server, http):
    info = new_session(http)

    async def scenario():
        ws = await opened(server, info)
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await expect(ws, "started")
        await ws.send(b"\x00\x00" * (CONFIG.max_message_bytes // 2 + 2))
        await expect(ws, "error", "message_too_large")
        await expect_close(ws, 1009)
        ws = await opened(server, info)  # the session is still there; far larger still: the transport closes
        await ws.send(b"\x00" * (8 * CONFIG.max_message_bytes))
        await expect_close(ws, 1009)

    asyncio.run(scenario())
    assert http.get(f"/v1/sessions/{info['session_id']}").status_code == 200
    assert http.delete(f"/v1/sessions/{info['session_id']}").status_code == 204


def test_message_flood_closes_with_1008(server, http):
    info = new_session(http)

    async def scenario():
        ws = await opened(server, info)
        for _ in range(3 * CONFIG.max_messages_per_second):
            try:
                await ws.send(json.dumps({"type": "ping"}))
            except websockets.ConnectionClosed:
                break
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if msg["type"] == "error":
                    assert msg["code"] == "rate_limited"
        assert closed.value.rcvd.code == 1008

    asyncio.run(scenario())
    assert http.delete(f"/v1/sessions/{info['session_id']}").status_code == 204


def test_second_socket_is_refused_and_disconnect_mid_stream_plays_out(server, http):
    info = new_session(http)

    async def scenario():
        ws = await opened(server, info)
        async with websockets.connect(ws_url(server, info, info["token"])) as second:
            await expect(second, "error", "busy")
            await expect_close(second, 4409)
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await expect(ws, "started")
        await ws.send(pcm16(0.8, seed=4))  # mid-utterance: no end_utterance …
        ws.transport.abort()  # … and the connection drops without a close frame
        await asyncio.sleep(0.2)
        ws = await opened(server, info)  # a client may come back to the same session
        await expect(ws, "speech_started", timeout=10)
        finished = await expect(ws, "playback_finished", timeout=10)
        await ws.close()
        return finished

    finished = asyncio.run(scenario())
    assert finished["interrupted"] is False
    assert finished["playback_position"] == pytest.approx(0.8, abs=0.05)
    assert eventually(lambda: http.get(f"/v1/sessions/{info['session_id']}").json()["audio_socket"] is False)
    assert http.delete(f"/v1/sessions/{info['session_id']}").status_code == 204


def test_deleting_a_session_closes_its_socket_with_4410(server, http):
    info = new_session(http)

    async def scenario():
        ws = await opened(server, info)
        assert http.delete(f"/v1/sessions/{info['session_id']}").status_code == 204
        msg = await expect(ws, "session_closed")
        assert msg["reason"] == "deleted"
        await expect_close(ws, 4410)

    asyncio.run(scenario())
    error_of(http.get(f"/v1/sessions/{info['session_id']}"), 404, "unknown_session")


def test_a_peer_that_goes_away_is_detached_and_its_session_times_out(server, http):
    info = new_session(http)
    sid = info["session_id"]

    async def watch_then_leave():
        async with KeyFaceClient(server.url, token=API) as client:
            rx = MediaReceiver(client, Session.from_json(info), keep_video=False)
            await rx.connect()
            await asyncio.wait_for(rx.connected.wait(), 10)
            await asyncio.sleep(0.3)
            assert http.get(f"/v1/sessions/{sid}").json()["peer"] == "connected"
            await rx.close()

    asyncio.run(watch_then_leave())
    assert eventually(lambda: http.get(f"/v1/sessions/{sid}").json()["peer"] == "none")
    assert eventually(lambda: http.get(f"/v1/sessions/{sid}").status_code == 404, CONFIG.idle_timeout + 3)
    error_of(http.get(f"/v1/sessions/{sid}"), 404, "unknown_session")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_engine_failure_ends_only_its_own_session(server, http):
    info = new_session(http)
    sid = info["session_id"]

    def broken() -> bool:
        raise RuntimeError("injected engine failure")

    avatar = server.state.manager.get(sid).avatar

    async def scenario():
        ws = await opened(server, info)
        avatar.live.work = broken  # fault injection into this session only
        msg = await expect(ws, "session_closed", timeout=5)
        await expect_close(ws, 4410)
        return msg

    assert asyncio.run(scenario())["reason"] == "engine_error"
    error_of(http.get(f"/v1/sessions/{sid}"), 404, "unknown_session")
    assert avatar not in server.state.engine.sessions.values()  # its place in the limit is free again


def test_bystander_kept_streaming_through_everything(server, bystander, http):
    elapsed = time.perf_counter() - bystander.started
    pts = [r.pts for r in bystander.rx.video]
    steps = np.diff(pts)
    assert len(pts) >= 0.9 * elapsed * 25, (len(pts), elapsed)
    assert (steps == 3600).mean() > 0.98  # consecutive frames, nothing skipped
    audio_seconds = (bystander.rx.audio[-1].pts - bystander.rx.audio[0].pts) / 48000
    assert abs(audio_seconds * 25 - (pts[-1] - pts[0]) / 3600) <= 3
    info = http.get(f"/v1/sessions/{bystander.session.session_id}").json()
    assert info["peer"] == "connected"
    assert info["late_frames"] <= 0.02 * info["frames"]
