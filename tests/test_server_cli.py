"""Server configuration (defaults ← environment ← flags) and the `keyface say` / `stream` commands."""

from __future__ import annotations

import shutil
import wave

import numpy as np
import pytest
from PIL import Image

from engine.errors import InputError
from engine.live.runner import AvatarEngine
from keyface.cli import main
from server.auth import Auth, AuthError, token_from
from server.config import ServerConfig, load_config
from server.main import ServerThread
from server.signaling import filter_candidates, resolve_interfaces

from .live_helpers import micro_bundle, speechlike


def test_flags_beat_environment_beat_defaults():
    env = {
        "KEYFACE_PORT": "9000",
        "KEYFACE_MAX_SESSIONS": "7",
        "KEYFACE_CORS_ORIGINS": "https://a.example, https://b.example",
    }
    config = load_config({"port": 9100, "max_sessions": None}, env)
    assert config.port == 9100  # flag
    assert config.max_sessions == 7  # environment
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert config.max_buffered_seconds == ServerConfig().max_buffered_seconds  # default
    with pytest.raises(InputError, match="max-sessions"):
        load_config({}, {"KEYFACE_MAX_SESSIONS": "many"})
    with pytest.raises(InputError, match="sample rates"):
        load_config({"sample_rates": "16000,11025"}, {})


def test_auth_is_on_by_default_off_loopback():
    assert not ServerConfig(host="127.0.0.1").auth_enabled
    assert not ServerConfig(host="localhost").auth_enabled
    assert ServerConfig(host="0.0.0.0").auth_enabled
    assert ServerConfig(host="127.0.0.1", auth="on").auth_enabled
    assert not ServerConfig(host="0.0.0.0", auth="off").auth_enabled
    auth = Auth(True, "api")
    auth.check_api("api")
    auth.check_session("sess", "sess")
    auth.check_session("api", "sess")
    for call in (lambda: auth.check_api(None), lambda: auth.check_api("x"), lambda: auth.check_session("x", "sess")):
        with pytest.raises(AuthError):
            call()
    assert token_from({"authorization": "Bearer abc"}, {"token": "q"}) == "abc"
    assert token_from({}, {"token": "q"}) == "q"


def test_ice_servers_and_interfaces():
    config = load_config(
        {"stun": ["stun.example.com:3478"], "turn": ["turn:turn.example.com:3478?transport=udp"]},
        {"KEYFACE_TURN_USERNAME": "user", "KEYFACE_TURN_PASSWORD": "pass"},
    )
    assert config.public_ice_servers() == [
        {"urls": ["stun:stun.example.com:3478"]},
        {"urls": ["turn:turn.example.com:3478?transport=udp"], "username": "user", "credential": "pass"},
    ]
    with pytest.raises(InputError, match="username"):
        load_config({"turn": ["turn:t.example.com"]}, {})
    with pytest.raises(InputError, match="TURN"):
        load_config({"ice_transport_policy": "relay"}, {})
    from_json = load_config(
        {}, {"KEYFACE_ICE_SERVERS": '[{"urls": "turn:x.example.com", "username": "u", "credential": "c"}]'}
    )
    assert from_json.ice_servers[0].urls == ("turn:x.example.com",)
    assert resolve_interfaces(["127.0.0.1", "lo"])[:2] == ["127.0.0.1", "127.0.0.1"]
    with pytest.raises(InputError, match="nope0"):
        resolve_interfaces(["nope0"])
    sdp = "v=0\r\na=candidate:1 1 udp 1 192.0.2.2 5000 typ host\r\na=candidate:2 1 udp 1 127.0.0.1 5001 typ host\r\n"
    assert "192.0.2.2" not in filter_candidates(sdp) and "127.0.0.1 5001" in filter_candidates(sdp)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    bundle = micro_bundle(seed=31)
    face = tmp_path_factory.mktemp("identity") / "face.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(face)
    bundle.identity_image = face
    engine = AvatarEngine(bundle, max_sessions=2)
    with ServerThread(ServerConfig(port=0, web_root=None, auth="on", api_token="cli-token"), engine) as srv:
        yield srv
    engine.close()


def test_keyface_stream_plays_a_file_in_a_new_session(server, tmp_path, capsys):
    path = tmp_path / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes((speechlike(0.8, seed=2, sr=24000) * 32767).astype("<i2").tobytes())
    assert main(["stream", str(path), "--server", server.url, "--token", "cli-token", "--emotion", "happy"]) == 0
    out = capsys.readouterr().out
    assert "opened session" in out and "played 0.80 s" in out
    assert not server.state.manager.sessions  # the session it opened is closed again
    assert main(["stream", str(path), "--server", server.url]) == 2  # no token: a clear refusal
    assert "API token" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_keyface_say_speaks_in_the_newest_session(server, capsys):
    from httpx import Client

    with Client(base_url=server.url, headers={"Authorization": "Bearer cli-token"}) as http:
        sid = http.post("/v1/sessions", json={}).json()["session_id"]
        assert main(["say", "Hello there.", "--server", server.url, "--token", "cli-token"]) == 0
        out = capsys.readouterr().out
        assert f"in session {sid}" in out and "opened session" not in out
        assert http.delete(f"/v1/sessions/{sid}").status_code == 204


def test_cors_and_a_model_without_a_face_of_its_own():
    from fastapi.testclient import TestClient

    from server.app import create_app

    engine = AvatarEngine(micro_bundle(seed=32), max_sessions=1)  # no identity image
    config = ServerConfig(web_root=None, cors_origins=("https://app.example",))
    with TestClient(create_app(config, engine)) as http:
        preflight = http.options(
            "/v1/sessions",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = http.options(
            "/v1/sessions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in other.headers
        created = http.post("/v1/sessions", json={}, headers={"Origin": "https://app.example"})
        assert created.status_code == 201 and created.headers["access-control-allow-origin"] == "https://app.example"
        assert http.delete(f"/v1/sessions/{created.json()['session_id']}").status_code == 204
    engine.close()


def test_serve_without_a_model_says_how_to_get_one(monkeypatch, tmp_path, capsys):
    import engine.defaults

    monkeypatch.delenv("KEYFACE_WEIGHTS", raising=False)
    monkeypatch.setattr(engine.defaults, "DEMO_MODEL_DIR", tmp_path / "no-demo")
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "no model is installed" in err and "--weights" in err and "init-model" in err
    assert main(["serve", "--weights", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
