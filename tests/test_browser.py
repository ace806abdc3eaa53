"""The web client in headless Chromium (Debian's, driven by Playwright): connect, play a WAV,
see the video advance and a non-blank face."""

from __future__ import annotations

import os
import shutil
import wave
from pathlib import Path

import pytest

from engine.live.runner import AvatarEngine
from keyface.commands.init_model import placeholder_face
from server.config import ServerConfig
from server.main import ServerThread

from .live_helpers import micro_bundle, speechlike

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]
API = "browser-api-token"

playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs `pip install playwright`")
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):  # CI installs it (scripts/install-system-deps.sh): missing is a failure
        raise RuntimeError("chromium is missing: scripts/install-system-deps.sh should have installed it")
    pytestmark = pytest.mark.skip(reason="the browser test needs Debian's chromium (scripts/install-system-deps.sh)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    bundle = micro_bundle(seed=4, latent_size=16, vae_levels=3)  # 64×64 video, real time on one core
    bundle.identity_image = placeholder_face(tmp_path_factory.mktemp("identity") / "face.png", 64)
    engine = AvatarEngine(bundle, max_sessions=2)
    with ServerThread(ServerConfig(port=0, auth="on", api_token=API), engine) as srv:
        yield srv
    engine.close()


@pytest.fixture
def speech_wav(tmp_path) -> Path:
    path = tmp_path / "speech.wav"
    samples = speechlike(1.6, seed=12, sr=22050)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


FACE_REGION = """() => {
  const video = document.getElementById("avatar");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(video, 0, 0);
  const w = canvas.width, h = canvas.height;
  const data = ctx.getImageData(Math.floor(w / 4), Math.floor(h / 4), Math.floor(w / 2), Math.floor(h / 2)).data;
  const values = [];
  for (let i = 0; i < data.length; i += 4) values.push((data[i] + data[i + 1] + data[i + 2]) / 3);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const std = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
  return { width: w, height: h, mean, std, pixels: Array.from(data.slice(0, 64)) };
}"""

SELECTED_PAIR = """async () => {
  const report = await window.keyfaceApp.avatar.pc.getStats();
  const out = [];
  report.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
      out.push([report.get(s.localCandidateId).address, report.get(s.remoteCandidateId).address]);
    }
  });
  return out;
}"""


def test_page_connects_plays_a_wav_and_shows_a_moving_face(server, speech_wav, tmp_path):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(  # a fresh profile in a fresh folder
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/#token={API}")
            page.click("#connect")
            page.wait_for_function("window.keyfaceApp.videoFrames > 10", timeout=30_000)
            assert page.evaluate(SELECTED_PAIR) == [["127.0.0.1", "127.0.0.1"]]
            t0 = page.evaluate("document.getElementById('avatar').currentTime")
            frames0 = page.evaluate("window.keyfaceApp.videoFrames")

            page.set_input_files("#wav-file", str(speech_wav))
            page.click("#play-wav")
            page.wait_for_function(
                "window.keyfaceApp.events.some((e) => e.type === 'playback_finished')", timeout=30_000
            )
            # emotion slider → emotion_set
            page.eval_on_selector("#valence", "(el) => { el.value = '0.5'; el.dispatchEvent(new Event('change')); }")
            page.wait_for_function("window.keyfaceApp.events.some((e) => e.type === 'emotion_set')", timeout=10_000)
            if shutil.which("espeak-ng"):  # say a text, interrupt it
                page.fill("#text", "This sentence is long enough to be interrupted before it ends, surely.")
                page.click("#say")
                page.wait_for_function(
                    "window.keyfaceApp.events.filter((e) => e.type === 'speech_started').length >= 2", timeout=30_000
                )
                page.click("#interrupt")
                page.wait_for_function(
                    "window.keyfaceApp.events.some((e) => e.type === 'playback_finished' && e.interrupted)",
                    timeout=10_000,
                )
            events = page.evaluate("window.keyfaceApp.events")
            page.wait_for_timeout(1200)  # a stats refresh
            t1 = page.evaluate("document.getElementById('avatar').currentTime")
            frames1 = page.evaluate("window.keyfaceApp.videoFrames")
            face = page.evaluate(FACE_REGION)
            stats = page.evaluate("window.keyfaceApp.stats")
            page.screenshot(path=str(tmp_path / "page.png"))
            page.click("#disconnect")
            page.wait_for_function("document.getElementById('status').textContent === 'disconnected'")
        finally:
            browser.close()

    kinds = [e["type"] for e in events]
    assert "speech_started" in kinds
    assert next(e for e in events if e["type"] == "emotion_set")["valence"] == pytest.approx(0.5)
    if shutil.which("espeak-ng"):
        cut = next(e for e in events if e["type"] == "playback_finished" and e["interrupted"])
        assert cut["playback_position"] < 4.0
    finished = next(e for e in events if e["type"] == "playback_finished")
    assert finished["interrupted"] is False
    assert finished["playback_position"] == pytest.approx(1.6, abs=0.05)
    assert t1 - t0 > 2.0  # the video element kept playing through the speech
    assert frames1 - frames0 > 30  # and painted new frames
    assert (face["width"], face["height"]) == (64, 64)
    assert face["mean"] > 20 and face["std"] > 5  # a visible, non-uniform face region
    assert stats["fps"] is None or stats["fps"] > 15
    assert not errors, errors
    assert server.call(_sessions(server)) == 0  # the page's disconnect ended its session


async def _sessions(server) -> int:
    return len(server.state.manager.sessions)
