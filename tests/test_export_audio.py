"""Audio encoders to ONNX: WavLM, wav2vec2 and BEATs (tiny fixtures) from a weights folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine.audio.beats import BEATS_FILE
from engine.audio.wav2vec2 import WAV2VEC2_DIR
from engine.audio.wavlm import WAVLM_FILE
from engine.backends.ort_backend import OrtBackend
from engine.backends.profiles import Profile
from engine.bundle import random_bundle
from export.onnx import export_bundle
from export.onnx.audio import load_audio_encoder

AUDIO = Path(__file__).parent / "fixtures" / "keyface_audio"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The release layout, filled with the tiny original-format checkpoints."""
    root = tmp_path_factory.mktemp("weights")
    shutil.copy(AUDIO / "wavlm_tiny.pt", root / WAVLM_FILE)
    shutil.copy(AUDIO / "beats_tiny.pt", root / BEATS_FILE)
    (root / WAV2VEC2_DIR).mkdir()
    config = json.loads((AUDIO / "wav2vec2_tiny.json").read_text())["config"]
    (root / WAV2VEC2_DIR / "config.json").write_text(json.dumps(config))
    shutil.copy(AUDIO / "wav2vec2_tiny.safetensors", root / WAV2VEC2_DIR / "model.safetensors")
    return root


def test_transformer_audio_encoders_export_and_match(weights, tmp_path):
    bundle = random_bundle()
    bundle.audio = {"keyframe": ["wavlm", "beats"], "interpolation": ["wav2vec2", "beats"]}
    bundle.root = weights
    manifest = export_bundle(bundle, tmp_path, Profile(), ["audio"], progress=False)
    assert set(manifest.graphs) == {"audio_wavlm", "audio_wav2vec2", "audio_beats"} and not manifest.skipped
    backend = OrtBackend(tmp_path)
    for name in ("wavlm", "wav2vec2", "beats"):
        encoder = load_audio_encoder(name, weights)
        runner = backend.runner(f"audio_{name}")
        for frames in (9, 40):  # dynamic length
            wave = torch.randn(frames * 640, generator=torch.Generator().manual_seed(frames)) * 0.1
            with torch.inference_mode():
                if name == "beats":
                    x = encoder.model.preprocess(wave)
                    ref = encoder.model.tokens(x)
                else:
                    x, ref = wave, encoder.hidden_states(wave)
            out = runner({runner.record.inputs[0].name: x}, tuple(ref.shape))
            assert float((out - ref).abs().max()) < 1e-4, name


def test_missing_audio_weights_are_skipped_with_the_reason(tmp_path):
    bundle = random_bundle()
    bundle.audio = {"keyframe": ["wavlm"], "interpolation": ["logmel"], "logmel": {"n_mels": 48}}
    bundle.root = tmp_path / "empty"
    bundle.root.mkdir()
    manifest = export_bundle(bundle, tmp_path / "out", Profile(), ["audio"], progress=False)
    assert set(manifest.graphs) == {"audio_logmel"}
    assert "WavLM" in manifest.skipped["audio_wavlm"] or "not found" in manifest.skipped["audio_wavlm"]
