"""Synthetic talking-face data (export/data): renderer, visemes, sounds, clips, measurements, dataset.

Clips with speech need espeak-ng (scripts/install-system-deps.sh); they are skipped without it
locally and fail in CI, where it is installed."""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from export.data import text
from export.data.clip import SAMPLES_PER_FRAME, ClipConfig, clip_seed, generate_clip, identity_seed
from export.data.dataset import SynthDataset, generate_dataset
from export.data.face import FaceRenderer
from export.data.identity import Identity, eye_openness, layout_problems
from export.data.measure import FaceMeasurer, measure_frames, non_mouth_mask, psnr
from export.data.nonspeech import laugh
from export.data.params import PARAM_INDEX, PARAM_NAMES, FaceParams, P, pose_of
from export.data.speech import (
    HELDOUT_LANGUAGES,
    HELDOUT_VARIANTS,
    TRAIN_LANGUAGES,
    TRAIN_VARIANTS,
    Phone,
    Voice,
    espeak_missing_reason,
    synthesize,
)
from export.data.visemes import closure_frames, viseme_tracks

I = PARAM_INDEX


@pytest.fixture(scope="module")
def espeak() -> None:
    reason = espeak_missing_reason()
    if reason:
        message = f"{reason} (run scripts/install-system-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _random_params(rng: np.random.Generator, n: int) -> np.ndarray:
    p = np.zeros((n, P), np.float32)
    for name in ("lip_width", "smile", "brow_raise", "eye_open", "head_dx", "head_dy", "head_tilt"):
        p[:, I[name]] = rng.uniform(-1, 1, n)
    for name in ("jaw_open", "lip_round", "cheek_raise"):
        p[:, I[name]] = rng.uniform(0, 1, n)
    p[:, I["blink"]] = rng.uniform(0, 1, n) * (rng.random(n) < 0.3)
    p[:, I["lip_closure"]] = rng.uniform(0, 1, n) * (rng.random(n) < 0.2)
    return p


def _r(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_constants_match_the_engine() -> None:
    from engine.audio import base
    from export.data import clip

    assert (clip.SAMPLE_RATE, clip.FPS, clip.SAMPLES_PER_FRAME) == (base.SAMPLE_RATE, base.FPS,
                                                                  base.SAMPLES_PER_FRAME)


def test_identities_vary_and_are_reproducible() -> None:
    ids = [Identity.sample(s) for s in range(12)]
    assert Identity.sample(3) == ids[3]
    assert Identity.from_dict(ids[3].to_dict()) == ids[3]
    for key in ("skin", "hair", "bg_top", "lip", "iris"):
        assert len({getattr(i, key) for i in ids}) == len(ids), key
    assert np.ptp([i.face_rx for i in ids]) > 0.04 and np.ptp([i.mouth_w for i in ids]) > 0.02
    assert len({i.hair_style for i in ids}) >= 3
    assert all(not layout_problems(i) for i in ids)
    frames = [FaceRenderer(i, 32).render(np.zeros(P, np.float32)) for i in ids[:4]]
    assert all(psnr(a, b) < 25 for a, b in itertools.pairwise(frames))


def test_renderer_is_deterministic_and_sized() -> None:
    ident = Identity.sample(5)
    params = _random_params(np.random.default_rng(0), 4)
    for size in (48, 64, 96):
        a = FaceRenderer(ident, size).render_sequence(params)
        assert a.shape == (4, size, size, 3) and a.dtype == np.uint8
        assert np.array_equal(a, FaceRenderer(ident, size).render_sequence(params))
    neutral = FaceRenderer(ident, 64).render(FaceParams().array())
    mouth = FaceRenderer(ident, 64).render(FaceParams(jaw_open=1.0).array())
    mask = non_mouth_mask(ident, 64)
    assert psnr(neutral, mouth, mask) == float("inf") and psnr(neutral, mouth) < 40


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measurements_follow_the_parameters(seed: int) -> None:
    """On clean renders with random parameters and head motion (pose estimated from the frame)."""
    ident = Identity.sample(seed)
    params = _random_params(np.random.default_rng(seed), 48)
    frames = FaceRenderer(ident, 64).render_sequence(params)
    m = measure_frames(frames, ident)
    opening = params[:, I["jaw_open"]] * (1 - params[:, I["lip_closure"]])
    assert _r(m["mouth_open"], opening) >= 0.95
    assert _r(m["corner_lift"], params[:, I["smile"]]) >= 0.95
    assert _r(m["brow_height"], params[:, I["brow_raise"]]) >= 0.95
    aperture = [eye_openness(a, b) for a, b in params[:, [I["eye_open"], I["blink"]]]]
    assert _r(m["eye_open"], np.array(aperture)) >= 0.9
    pose_err = m["pose"] - np.array([pose_of(p) for p in params])
    assert np.abs(pose_err[:, :2]).max() < 0.3 * (2 / 64) and np.abs(pose_err[:, 2]).max() < 0.01


def test_visemes_close_the_lips_for_bilabials() -> None:
    spans = [("_", 0.0, 0.1), ("m", 0.1, 0.17), ("a", 0.17, 0.3), ("p", 0.3, 0.33), ("a", 0.33, 0.5),
             ("s", 0.5, 0.58), ("u:", 0.58, 0.75), ("b", 0.75, 0.8), ("i:", 0.8, 1.0)]
    phones = [Phone(*s) for s in spans]
    fine = viseme_tracks(phones, 1.1)
    frames = closure_frames(fine[:, 3], 28)
    for sym, a, b in spans:
        window = frames[int(a * 25): int(np.ceil(b * 25)) + 1]
        if sym in "mpb":
            assert window.max() == 1.0, sym
            assert fine[int((a + b) / 2 * 1000), 0] < 0.05  # jaw shut on the closure
    assert frames[int(0.4 * 25)] == 0 and fine[400, 0] > 0.5  # open vowel between closures
    assert fine[int(0.68 * 1000), 2] > 0.6 and fine[int(0.9 * 1000), 1] > 0.4  # rounded u:, spread i:


def test_laugh_has_energy_and_a_smile() -> None:
    s = laugh(np.random.default_rng(0))
    assert s.audio.dtype == np.float32 and np.sqrt(np.mean(s.audio**2)) > 0.05
    assert len(s.tracks["smile"]) * 16 == len(s.audio)
    weight = s.tracks["weight"]
    assert (s.tracks["smile"][weight > 0.9] > 0.7).all() and s.tracks["cheek_raise"].max() > 0.6
    jaw = s.tracks["jaw_open"]
    assert jaw.max() > 0.3 and (jaw < 0.05).mean() > 0.2  # bursts, not a held-open mouth


def test_splits_do_not_share_texts_voices_or_identities() -> None:
    assert not set(text.TRAIN_SENTENCES) & set(text.HELDOUT_SENTENCES)
    assert not set(text.TRAIN_WORDS) & set(text.HELDOUT_WORDS)
    assert not set(TRAIN_LANGUAGES) & set(HELDOUT_LANGUAGES) and not set(TRAIN_VARIANTS) & set(HELDOUT_VARIANTS)
    train = {identity_seed(0, "train", i) for i in range(200)}
    assert not train & {identity_seed(0, "heldout", i) for i in range(200)}
    assert clip_seed(0, "train", 1) != clip_seed(0, "heldout", 1)


def test_espeak_phone_timings(espeak: None) -> None:
    u = synthesize("Mama made a plum pie.", Voice("en-us", "m3", rate=160))
    assert u.audio.dtype == np.float32 and abs(u.duration - u.phones[-1].end) < 0.01
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(u.phones))
    assert [p.symbol for p in u.phones if p.symbol in ("m", "p")] == ["m", "m", "m", "p", "m", "p"]
    rms = [np.sqrt(np.mean(u.audio[int(p.start * 16000):int(p.end * 16000)] ** 2)) for p in u.phones]
    vowels = [r for p, r in zip(u.phones, rms, strict=True) if p.symbol[0] in "aeiouAV@"]
    assert min(vowels) > 0.02
    again = synthesize("Mama made a plum pie.", Voice("en-us", "m3", rate=160))
    assert np.array_equal(u.audio, again.audio) and u.phones == again.phones


def test_clip_from_espeak_speech_and_laugh(espeak: None) -> None:
    clip = generate_clip(7, config=ClipConfig(size=64, motion=0.5),
                         script=[("speech", "Bob bought a big blue balloon."), ("laugh", "")])
    t = clip.n_frames
    assert clip.frames.shape == (t, 64, 64, 3) and clip.params.shape == (t, P)
    assert len(clip.audio) == t * SAMPLES_PER_FRAME and clip.emotion.shape == (t, 2)
    assert [s.kind for s in clip.segments] == ["speech", "laugh"] and clip.text.startswith("Bob")
    closure = clip.param("lip_closure")
    bilabials = [p for p in clip.phones if p.symbol in ("b", "m", "p")]
    assert len(bilabials) == 6
    for p in bilabials:  # every /b/ closes the lips in a frame at most 2 frames away
        assert closure[max(0, int(p.start * 25) - 2): int(p.end * 25) + 3].max() == 1.0
    m = measure_frames(clip.frames, clip.identity)
    assert _r(m["mouth_open"], clip.param("jaw_open")) >= 0.95
    assert np.abs(m["mouth_open"][closure == 1.0]).max() < 0.05
    a, b = clip.segments[1].frames()
    mid = slice(a + (b - a) // 4, b - (b - a) // 4)
    assert clip.param("smile")[mid].min() > 0.5 and m["corner_lift"][mid].mean() > 0.5
    laugh_audio = clip.audio[a * SAMPLES_PER_FRAME: b * SAMPLES_PER_FRAME]
    assert np.sqrt(np.mean(laugh_audio**2)) > 0.02
    assert np.sqrt(np.mean(clip.audio[:4 * SAMPLES_PER_FRAME] ** 2)) < 0.003  # leading silence


def test_clips_are_deterministic(espeak: None) -> None:
    config = ClipConfig(size=32, min_seconds=2.0, max_seconds=3.5)
    a, b = generate_clip(11, "heldout", config), generate_clip(11, "heldout", config)
    for field in ("frames", "audio", "params", "emotion"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.metadata() == b.metadata() and a.voice.language in HELDOUT_LANGUAGES
    c = generate_clip(12, "heldout", config)
    assert c.identity != a.identity and not np.array_equal(a.params[:10], c.params[:10])
    assert len(a.audio) == a.n_frames * SAMPLES_PER_FRAME and a.params.min() >= -1 and a.params.max() <= 1


def test_dataset_roundtrip_and_cli(espeak: None, tmp_path: Path) -> None:
    config = ClipConfig(min_seconds=1.5, max_seconds=2.5)
    index = generate_dataset(tmp_path, 3, resolution=32, seed=4, shard_size=2, config=config, progress=False)
    ds = SynthDataset(tmp_path)
    assert len(ds) == 3 and sorted(p.name for p in tmp_path.glob("shard_*.npz")) == ["shard_00000.npz",
                                                                                    "shard_00001.npz"]
    assert ds.index["param_names"] == list(PARAM_NAMES) and index.name == "index.json"
    clip = ds[2]
    ref = generate_clip(clip_seed(4, "train", 2), "train", dataclasses.replace(config, size=32))
    assert np.array_equal(clip.frames, ref.frames) and np.array_equal(clip.audio, ref.audio)
    assert np.array_equal(clip.params, ref.params) and clip.identity == ref.identity
    assert clip.phones == ref.phones and clip.segments == ref.segments and clip.voice == ref.voice

    import argparse

    from keyface.commands import data

    parser = argparse.ArgumentParser()
    data.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "generate", "--out", str(tmp_path / "x"), "--clips", "2", "--size", "48",
                              "--seed", "3", "--split", "heldout"])
    assert (args.clips, args.size, args.seed, args.split) == (2, 48, 3, "heldout") and callable(args.func)


def test_measurer_rejects_wrong_size() -> None:
    m = FaceMeasurer(Identity.sample(0), 64)
    with pytest.raises(ValueError):
        m.measure(np.zeros((32, 32, 3), np.uint8))
