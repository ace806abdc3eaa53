"""``keyface render`` end to end on a tiny random model: frame count, audio, options, errors."""

from __future__ import annotations

import wave

import av
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.bundle import load_bundle, save_bundle
from engine.media import load_image
from engine.pipeline.offline import OfflineRenderer, RenderSettings, identity_latent
from keyface.cli import main
from keyface.commands.init_model import placeholder_face

from .live_helpers import micro_bundle

SR = 16_000


def write_wav(path, seconds: float, rate: int = SR, channels: int = 1) -> None:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t))
    data = np.repeat((tone * 32767).astype("<i2")[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())


def probe(path) -> tuple[int, float, tuple[int, int]]:
    """(decoded video frames, audio stream duration in seconds, (width, height)).

    The audio duration is the container's (AAC codes whole 1024-sample packets; the MP4 trims
    the padding by the stream duration)."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        size = (frames[0].width, frames[0].height)
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        seconds = float(stream.duration * stream.time_base)
    return len(frames), seconds, size


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    face = placeholder_face(root / "face.png", 64)
    # Small random model, both guiders on: 64×64 video, every stage of the real schedule.
    save_bundle(micro_bundle(seed=1, guided=True, latent_size=16, vae_levels=3), root / "tiny", identity_image=face)
    return root / "tiny"


@pytest.mark.parametrize("seconds,rate,channels", [(1.7, 16_000, 1), (2.26, 44_100, 2)])
def test_render_frame_count_and_audio(tmp_path, model_dir, seconds, rate, channels):
    audio = tmp_path / "speech.wav"
    write_wav(audio, seconds, rate, channels)
    out = tmp_path / "out.mp4"
    code = main(["render", "--weights", str(model_dir), "--audio", str(audio), "--out", str(out), "--steps", "2"])
    assert code == 0
    frames, audio_seconds, size = probe(out)
    assert frames == round(seconds * 25)
    assert abs(audio_seconds - seconds) <= 1 / 25
    assert size == (64, 64)


def test_render_with_precomputed_embeddings_emotion_ramp_and_image(tmp_path, model_dir):
    audio = tmp_path / "a.wav"
    write_wav(audio, 1.0)
    emb = tmp_path / "a_emb.safetensors"
    save_file({"keyframe": torch.randn(25, 2, 16), "interpolation": torch.randn(25, 2, 16)}, str(emb))
    image = placeholder_face(tmp_path / "other.png", 200)
    out = tmp_path / "out.mp4"
    args = [
        "render",
        "--weights",
        str(model_dir),
        "--audio",
        str(audio),
        "--out",
        str(out),
        "--steps",
        "1",
        "--audio-emb",
        str(emb),
        "--image",
        str(image),
        "--emotion",
        "happy",
        "--emotion",
        "0.2,-0.5",
    ]
    assert main(args) == 0
    assert probe(out)[0] == 25


def test_same_seed_same_frames_different_seed_differs(model_dir):
    """Rendering is deterministic given the seed (compared before H.264, whose encoder is free to
    make different choices on noise-like content)."""
    bundle = load_bundle(model_dir)
    identity = identity_latent(bundle, load_image(bundle.identity_image))
    audio = torch.randn(15, 2, 16, generator=torch.Generator().manual_seed(0))
    emotions = torch.zeros(15, 2)

    def render(seed: int) -> torch.Tensor:
        settings = RenderSettings(keyframe_steps=1, interpolation_steps=1, seed=seed)
        with torch.no_grad():
            return torch.stack(list(OfflineRenderer(bundle, identity, audio, audio, emotions, 15, settings).frames()))

    first, again, other = render(5), render(5), render(6)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--audio", "missing.wav"], "audio file not found"),
        (["--emotion", "elated"], "unknown emotion 'elated'"),
        (["--valence", "2"], "valence must be within [-1, 1]"),
        (["--image", "nope.png"], "image not found"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--weights", "/nonexistent"], "weights folder not found"),
    ],
)
def test_render_bad_input_is_a_clear_error(tmp_path, model_dir, capsys, extra, needle):
    audio = tmp_path / "a.wav"
    write_wav(audio, 0.5)
    args = ["render", "--weights", str(model_dir), "--audio", str(audio), "--out", str(tmp_path / "o.mp4"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_embeddings_of_wrong_width_are_refused(tmp_path, model_dir, capsys):
    audio = tmp_path / "a.wav"
    write_wav(audio, 0.5)
    emb = tmp_path / "e.safetensors"
    save_file({"keyframe": torch.randn(13, 2, 30), "interpolation": torch.randn(13, 2, 30)}, str(emb))
    args = [
        "render",
        "--weights",
        str(model_dir),
        "--audio",
        str(audio),
        "--out",
        str(tmp_path / "o.mp4"),
        "--audio-emb",
        str(emb),
    ]
    assert main(args) == 2
    assert "keyframe audio embeddings must be (frames, 2, 16)" in capsys.readouterr().err
