"""50 sessions opened (with a WebRTC peer and an audio socket) and closed leave nothing behind."""

from __future__ import annotations

import asyncio
import gc
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from engine.live.runner import AvatarEngine, AvatarSession
from engine.live.session import LiveSession
from server.client import KeyFaceClient, MediaReceiver
from server.config import ServerConfig
from server.main import ServerThread
from server.media import AvatarAudioTrack, AvatarVideoTrack, MediaFeed
from server.session import ServerSession

from .live_helpers import micro_bundle, speechlike

TRACKED = (ServerSession, AvatarSession, LiveSession, MediaFeed, AvatarVideoTrack, AvatarAudioTrack)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    bundle = micro_bundle(seed=21)
    face = tmp_path_factory.mktemp("identity") / "face.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(face)
    bundle.identity_image = face
    engine = AvatarEngine(bundle, max_sessions=2)
    with ServerThread(ServerConfig(port=0, web_root=None, max_sessions=2), engine) as srv:
        yield srv
    engine.close()


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        line = next(ln for ln in fh if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def _server_tasks() -> list[str]:
    current = asyncio.current_task()
    return sorted(t.get_name() for t in asyncio.all_tasks() if t is not current)


def snapshot(server: ServerThread) -> dict:
    gc.collect()
    from aiortc import RTCPeerConnection

    kinds = {k: k.__name__ for k in (*TRACKED, RTCPeerConnection)}
    objects = dict.fromkeys(kinds.values(), 0)
    for obj in gc.get_objects():
        name = kinds.get(type(obj))
        if name is not None:
            objects[name] += 1
    state = server.state
    return {
        "tasks": server.call(_server_tasks()),
        "workers": [t.name for t in threading.enumerate() if t.name.startswith("avatar-session")],
        "engine_sessions": len(state.engine.sessions),
        "server_sessions": len(state.manager.sessions),
        "objects": objects,
        "gauges": (
            state.metrics.sessions_active._value.get(),
            state.metrics.sockets_active._value.get(),
            state.metrics.peers_active._value.get(),
        ),
        "rss": rss_mb(),
        "gpu": torch.cuda.memory_allocated() if torch.cuda.is_available() else 0,
    }


async def one_session(client: KeyFaceClient, speech: np.ndarray) -> int:
    session = await client.create_session()
    rx = MediaReceiver(client, session, keep_video=False)
    await rx.connect()
    await asyncio.wait_for(rx.connected.wait(), 10)
    for _ in range(100):
        if rx.video and rx.audio:
            break
        await asyncio.sleep(0.02)
    async with client.audio(session) as audio:
        await audio.send_pcm(speech)
        await audio.end_utterance()
        await asyncio.sleep(0.05)
    await rx.close()
    await client.close_session(session)
    return len(rx.video)


async def run_sessions(url: str, count: int) -> list[int]:
    speech = speechlike(0.3, seed=1)
    async with KeyFaceClient(url) as client:
        return [await one_session(client, speech) for _ in range(count)]


def test_fifty_sessions_in_sequence_leave_no_tasks_tracks_or_memory(server):
    asyncio.run(run_sessions(server.url, 3))  # warm up (codecs, thread pools, caches)
    before = snapshot(server)
    frames = asyncio.run(run_sessions(server.url, 25))
    middle = snapshot(server)
    frames += asyncio.run(run_sessions(server.url, 25))
    after = snapshot(server)
    print(f"\n50 sessions: RSS {before['rss']:.0f} → {middle['rss']:.0f} → {after['rss']:.0f} MB")

    assert len(frames) == 50 and min(frames) > 0  # they really streamed
    for state in (middle, after):
        assert state["tasks"] == before["tasks"], (before["tasks"], state["tasks"])
        assert state["workers"] == [] and state["engine_sessions"] == 0 and state["server_sessions"] == 0
        assert state["objects"] == dict.fromkeys(state["objects"], 0), state["objects"]
        assert state["gauges"] == (0, 0, 0)
        assert state["gpu"] <= before["gpu"]
    assert after["rss"] - before["rss"] < 60
    assert after["rss"] - middle["rss"] < 15  # flat once warm: nothing grows per session
    assert server.state.metrics.sessions_closed.labels("deleted")._value.get() == 53
