"""Audio encoders against the KeyFace reference goldens (tests/fixtures/keyface_audio/README.md)."""

from __future__ import annotations

import json
import shutil
import wave
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from engine.audio.alignment import (
    conv_frames,
    nearest_index,
    num_frames,
    pad_to_frames,
    pairs_per_frame,
    raw_audio_frames,
)
from engine.audio.base import AudioEncoder
from engine.audio.beats import BEATS_FILE, BEATsEncoder
from engine.audio.fbank import num_fbank_frames
from engine.audio.features import KeyFaceAudioFeatures
from engine.audio.wav2vec2 import WAV2VEC2_DIR, Wav2Vec2Encoder, normalize, split_sizes
from engine.audio.wavlm import WAVLM_FILE, WavLMEncoder
from engine.errors import WeightsError

AUDIO = Path(__file__).parent / "fixtures" / "keyface_audio"
ALIGNMENT = Path(__file__).parent / "fixtures" / "keyface" / "audio_alignment.json"
CASES = ("case0", "case1")
TOL = {"atol": 1e-4, "rtol": 1e-4}  # WavLM / wav2vec2 (fixture README §5)
BEATS_TOL = {"atol": 1e-3, "rtol": 0.0}  # BEATs with a re-implemented fbank
FBANK_TOL = {"atol": 5e-4, "rtol": 0.0}


@cache
def io(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(AUDIO / f"{name}_io.safetensors"))


@cache
def meta(name: str) -> dict:
    return json.loads((AUDIO / f"{name}.json").read_text())


def wav2vec2_dir(target: Path) -> Path:
    """A hub-style folder (config.json + model.safetensors) made from the tiny fixture."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps(meta("wav2vec2_tiny")["config"]))
    shutil.copy(AUDIO / "wav2vec2_tiny.safetensors", target / "model.safetensors")
    return target


def weights_folder(target: Path) -> Path:
    """The documented weights-folder layout, filled with the tiny original-format checkpoints."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(AUDIO / "wavlm_tiny.pt", target / WAVLM_FILE)
    shutil.copy(AUDIO / "beats_tiny.pt", target / BEATS_FILE)
    wav2vec2_dir(target / WAV2VEC2_DIR)
    return target


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> KeyFaceAudioFeatures:
    return KeyFaceAudioFeatures.from_folder(weights_folder(tmp_path_factory.mktemp("weights")))


def read_wav(path: Path) -> torch.Tensor:
    with wave.open(str(path)) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (16000, 1, 2)
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    return torch.from_numpy(pcm.astype(np.float32) / 32768.0)


# ------------------------------------------------------------------------------------------ WavLM
@pytest.mark.parametrize("case", CASES)
def test_wavlm_original_checkpoint(features: KeyFaceAudioFeatures, case: str) -> None:
    ref, enc = io("wavlm_tiny"), features.wavlm
    assert isinstance(enc, AudioEncoder)
    wave_ = ref[f"{case}.waveform"]
    torch.testing.assert_close(pad_to_frames(wave_, even=True), ref[f"{case}.padded_waveform"], atol=0, rtol=0)
    with torch.inference_mode():
        conv = enc.model.feature_extractor(ref[f"{case}.padded_waveform"][None])[0].T
    torch.testing.assert_close(conv, ref[f"{case}.conv_features"], **TOL)
    hidden = enc.hidden_states(ref[f"{case}.padded_waveform"])
    torch.testing.assert_close(hidden, ref[f"{case}.last_hidden_state"], **TOL)
    per_frame = ref[f"{case}.per_frame"]
    index = nearest_index(hidden.shape[0], 2 * per_frame.shape[0])
    assert torch.equal(index, ref[f"{case}.interp_index"])
    torch.testing.assert_close(enc.encode_reference(wave_), per_frame, **TOL)
    out = enc.encode(wave_)
    assert out.shape == (num_frames(wave_.numel()), 2, 64)
    torch.testing.assert_close(out, per_frame[: out.shape[0]], **TOL)


def test_wavlm_original_safetensors_and_hf_folder(tmp_path: Path) -> None:
    ref = io("wavlm_tiny")
    from_st = WavLMEncoder.from_original(meta("wavlm_tiny")["cfg"], load_file(str(AUDIO / "wavlm_tiny.safetensors")))
    hf_dir = tmp_path / "wavlm-hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps(meta("wavlm_tiny")["transformers_equivalent"]["config"]))
    shutil.copy(AUDIO / "wavlm_tiny_hf.safetensors", hf_dir / "model.safetensors")
    from_hf = WavLMEncoder.from_path(hf_dir)
    for enc in (from_st, from_hf):
        for case in CASES:
            torch.testing.assert_close(enc.encode_reference(ref[f"{case}.waveform"]), ref[f"{case}.per_frame"], **TOL)


def test_wavlm_hf_folder_with_prefixed_legacy_keys(tmp_path: Path) -> None:
    """A ``WavLMFor*`` file (``wavlm.`` prefix, legacy weight-norm names) loads too."""
    state = load_file(str(AUDIO / "wavlm_tiny_hf.safetensors"))
    renamed = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        renamed[f"wavlm.{key}"] = value.contiguous()
    renamed["lm_head.weight"] = torch.zeros(32, 64)
    (tmp_path / "config.json").write_text(json.dumps(meta("wavlm_tiny")["transformers_equivalent"]["config"]))
    save_file(renamed, str(tmp_path / "model.safetensors"))
    ref = io("wavlm_tiny")
    torch.testing.assert_close(
        WavLMEncoder.from_path(tmp_path).encode_reference(ref["case1.waveform"]), ref["case1.per_frame"], **TOL
    )


# ------------------------------------------------------------------------------------------ BEATs
@pytest.mark.parametrize("case", CASES)
def test_beats_original_checkpoint(features: KeyFaceAudioFeatures, case: str) -> None:
    ref, enc = io("beats_tiny"), features.beats
    assert isinstance(enc, AudioEncoder)
    padded = ref[f"{case}.padded_waveform"]
    torch.testing.assert_close(pad_to_frames(ref[f"{case}.waveform"], even=True), padded, atol=0, rtol=0)
    fbank = enc.model.preprocess(padded)
    torch.testing.assert_close(fbank, ref[f"{case}.fbank"], **FBANK_TOL)
    with torch.inference_mode():
        tokens_from_ref_fbank = enc.model.tokens(ref[f"{case}.fbank"])
        lprobs = enc.model.class_probs(tokens_from_ref_fbank)
    torch.testing.assert_close(tokens_from_ref_fbank, ref[f"{case}.last_hidden_state"], **TOL)
    torch.testing.assert_close(lprobs, ref[f"{case}.lprobs"], **TOL)
    tokens = enc.tokens(padded)
    torch.testing.assert_close(tokens, ref[f"{case}.last_hidden_state"], **BEATS_TOL)
    per_frame = ref[f"{case}.per_frame"]
    assert torch.equal(nearest_index(tokens.shape[0], 2 * per_frame.shape[0]), ref[f"{case}.interp_index"])
    torch.testing.assert_close(enc.encode_reference(ref[f"{case}.waveform"]), per_frame, **BEATS_TOL)


def test_beats_from_safetensors_and_shared_bias() -> None:
    enc = BEATsEncoder.from_original(meta("beats_tiny")["cfg"], load_file(str(AUDIO / "beats_tiny.safetensors")))
    layers = enc.model.encoder.layers
    assert layers[0].self_attn.relative_attention_bias is layers[1].self_attn.relative_attention_bias
    ref = io("beats_tiny")
    torch.testing.assert_close(enc.encode_reference(ref["case1.waveform"]), ref["case1.per_frame"], **BEATS_TOL)


def test_short_clips(features: KeyFaceAudioFeatures) -> None:
    """Below 6 frames the BEATs reference has no fbank patch; we zero-pad and still return F frames."""
    for frames in (1, 2, 3, 5, 6):
        out = features.beats.encode(torch.randn(frames * 640 - 7) * 0.1)
        assert out.shape == (frames, 2, 64) and torch.isfinite(out).all()
    assert features.beats.encode(torch.zeros(0)).shape == (0, 2, 64)
    for enc in (features.wavlm, features.wav2vec2):
        assert enc.encode(torch.zeros(0)).shape == (0, 2, 64)
        for n in (1, 640, 700):
            out = enc.encode(torch.randn(n) * 0.1)
            assert out.shape == (num_frames(n), 2, 64) and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------- wav2vec2
@pytest.mark.parametrize("case", CASES)
def test_wav2vec2_hub_folder(features: KeyFaceAudioFeatures, case: str) -> None:
    ref, enc = io("wav2vec2_tiny"), features.wav2vec2
    assert isinstance(enc, AudioEncoder)
    model_input = pad_to_frames(normalize(ref[f"{case}.waveform"]))
    torch.testing.assert_close(model_input, ref[f"{case}.input"], atol=1e-5, rtol=0)
    torch.testing.assert_close(enc.hidden_states(ref[f"{case}.input"]), ref[f"{case}.last_hidden_state"], **TOL)
    out = enc.encode(ref[f"{case}.waveform"])
    torch.testing.assert_close(out, ref[f"{case}.per_frame"], **TOL)
    assert torch.count_nonzero(out[-1, 1]) == 0


def test_wav2vec2_long_input_split(tmp_path: Path) -> None:
    """The reference's ``calculate_splits`` arithmetic, exercised with a small piece size."""
    assert split_sizes(100, 30) == [23, 23, 54]
    assert split_sizes(30, 30) == [30]
    assert split_sizes(16_000 * 1000 * 2 + 5) == [8_000_002, 24_000_003]  # sic: the reference's arithmetic
    enc = Wav2Vec2Encoder.from_path(wav2vec2_dir(tmp_path))
    x = io("wav2vec2_tiny")["case1.input"]
    pieces = enc.hidden_states(x, split_samples=8000)
    expected = torch.cat([enc.hidden_states(x[:6240]), enc.hidden_states(x[6240:])])
    torch.testing.assert_close(pieces, expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------- pipeline
@pytest.mark.parametrize("case", CASES)
def test_pipeline_goldens_from_wav(features: KeyFaceAudioFeatures, case: str) -> None:
    ref = load_file(str(AUDIO / "pipeline_tiny_io.safetensors"))
    wave_ = read_wav(AUDIO / f"input_{case}.wav")
    torch.testing.assert_close(wave_, io("wavlm_tiny")[f"{case}.waveform"], atol=0, rtol=0)
    emb = features.encode(wave_)
    keyframe, interpolation = ref[f"{case}.keyframe_audio"], ref[f"{case}.interpolation_audio"]
    assert emb.keyframe.shape == keyframe.shape and emb.interpolation.shape == interpolation.shape
    torch.testing.assert_close(emb.keyframe[..., :64], keyframe[..., :64], **TOL)  # WavLM half
    torch.testing.assert_close(emb.keyframe[..., 64:], keyframe[..., 64:], **BEATS_TOL)  # BEATs half
    torch.testing.assert_close(emb.interpolation[..., :64], interpolation[..., :64], **TOL)  # wav2vec2
    torch.testing.assert_close(emb.interpolation[..., 64:], interpolation[..., 64:], **BEATS_TOL)
    torch.testing.assert_close(raw_audio_frames(wave_), ref[f"{case}.raw_audio_frames"], atol=0, rtol=0)


# -------------------------------------------------------------------------------------- alignment
@pytest.mark.parametrize("frames", [1, 2, 3, 4, 14, 25, 50, 101])
def test_alignment_maps(frames: int) -> None:
    entry = json.loads(ALIGNMENT.read_text())["per_F"][str(frames)]
    n = entry["n_samples"]
    assert n == 640 * frames and num_frames(n) == frames
    t50 = conv_frames(n)
    assert t50 == entry["wav2vec2_or_wavlm_50hz_frames"] == 2 * frames - 1
    assert nearest_index(t50, 2 * frames).tolist() == entry["wavlm_nearest_src_index_per_slot(2F slots = F frames x 2)"]
    slots = pairs_per_frame(torch.arange(1.0, t50 + 1)[:, None])
    assert (
        slots.shape == (frames, 2, 1)
        and slots[-1, 1, 0] == 0
        and slots.flatten()[:-1].tolist() == list(range(1, t50 + 1))
    )
    rows = num_fbank_frames(n)
    assert rows == entry["beats_fbank_frames(25ms/10ms, snip_edges)"]
    assert rows // 16 == entry["beats_time_patches(16 fbank frames)"]
    tokens = 8 * (rows // 16)
    assert tokens == entry["beats_tokens(time_patches x 8 freq bands, time-major)"]
    if tokens == 0:
        assert entry["beats_nearest_src_token_per_slot"] is None
    else:
        index = nearest_index(tokens, 2 * frames)
        assert index.tolist() == entry["beats_nearest_src_token_per_slot"]
        pairs = [[i // 8, i % 8] for i in index.tolist()]
        assert pairs == entry["beats_src_(time_patch,freq_band)_per_slot"]


@pytest.mark.parametrize("frames", [2778, 2780, 2782, 3000, 12000])
def test_nearest_index_matches_interpolate(frames: int) -> None:
    """float32 index formula == F.interpolate(nearest), also where integer division differs."""
    for src in (2 * frames - 1, 8 * ((4 * frames - 2) // 16)):
        seq = torch.arange(src, dtype=torch.float32)[None, None]
        expected = F.interpolate(seq, size=2 * frames, mode="nearest")[0, 0].long()
        assert torch.equal(nearest_index(src, 2 * frames), expected)


# ------------------------------------------------------------------------------------------ errors
def test_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        KeyFaceAudioFeatures.from_folder(tmp_path / "nope")
    folder = weights_folder(tmp_path / "w")
    (folder / BEATS_FILE).unlink()
    with pytest.raises(WeightsError, match=BEATS_FILE.replace("+", r"\+")):
        KeyFaceAudioFeatures.from_folder(folder)
    with pytest.raises(WeightsError, match="file not found"):
        WavLMEncoder.from_path(tmp_path / WAVLM_FILE)
    (folder / WAV2VEC2_DIR / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"no model\.safetensors"):
        Wav2Vec2Encoder.from_path(folder / WAV2VEC2_DIR)


def test_malformed_weights(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="unreadable"):
        BEATsEncoder.from_path(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((AUDIO / "beats_tiny.pt").read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="unreadable"):
        BEATsEncoder.from_path(truncated)
    no_cfg = tmp_path / "no_cfg.pt"
    torch.save({"model": {}}, no_cfg)
    with pytest.raises(WeightsError, match="'cfg' and 'model'"):
        WavLMEncoder.from_path(no_cfg)
    ckpt = torch.load(AUDIO / "wavlm_tiny.pt", weights_only=True)
    del ckpt["model"]["encoder.layers.1.fc1.weight"]
    ckpt["model"]["post_extract_proj.weight"] = torch.zeros(3, 3)
    broken = tmp_path / "broken.pt"
    torch.save(ckpt, broken)
    with pytest.raises(WeightsError, match=r"missing 1 .*intermediate_dense.*wrong shape"):
        WavLMEncoder.from_path(broken)
    beats = torch.load(AUDIO / "beats_tiny.pt", weights_only=True)
    beats["model"]["surplus.weight"] = torch.zeros(1)
    torch.save(beats, broken)
    with pytest.raises(WeightsError, match="unexpected 1 tensor"):
        BEATsEncoder.from_path(broken)
    cfg = dict(meta("beats_tiny")["cfg"])
    del cfg["relative_position_embedding"]  # the original default (False) then applies
    with pytest.raises(WeightsError, match="relative_position_embedding=False"):
        BEATsEncoder.from_original(cfg, load_file(str(AUDIO / "beats_tiny.safetensors")))
    with pytest.raises(WeightsError, match="conv_feature_layers"):
        WavLMEncoder.from_original({**meta("wavlm_tiny")["cfg"], "conv_feature_layers": "__import__('os')"}, {})
    folder = wav2vec2_dir(tmp_path / "w2v")
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match="unreadable"):
        Wav2Vec2Encoder.from_path(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="bad"):
        Wav2Vec2Encoder.from_path(folder)
