"""Synthetic talking-face sessions for training and evaluation, built on :mod:`export.data`.

A *session* is one identity speaking several utterances in a row (pauses in between), each
utterance with its own emotion (valence, arousal), at 25 fps with 16 kHz audio. Emotion drives
the face as ``smile = 0.8·v``, ``brow_raise = 0.6·v``, ``cheek_raise = 0.6·max(v, 0)``,
``eye_open = 0.5·a`` and the jaw articulation ``1 + 0.3·a``; head motion is a small smooth
random walk and blinks are random. The identity image is the identity's neutral render.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from export.data.face import FaceRenderer
from export.data.identity import Identity
from export.data.params import PARAM_INDEX, P, clip_params
from export.data.speech import Voice, synthesize
from export.data.text import pick_text
from export.data.visemes import TRACK_RATE, fit_length, to_frames, viseme_tracks

FPS = 25
SAMPLES_PER_FRAME = 640
TRAIN_VARIANTS = ("", "m1", "m3", "f1", "f3", "m5")
HELDOUT_VARIANTS = ("m7", "f4", "f2")
HELDOUT_ID_OFFSET = 100_000
"""Held-out identities use seeds from here on; training identities are below it."""


@dataclass
class Session:
    """One identity speaking: frames (T, H, W, 3) uint8, audio (T·640,), params (T, P), emotion (T, 2)."""

    identity: Identity
    frames: np.ndarray
    audio: np.ndarray
    params: np.ndarray
    emotion: np.ndarray
    neutral: np.ndarray
    """The identity image: the neutral render (H, W, 3) uint8."""

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def jaw(self) -> np.ndarray:
        return self.params[:, PARAM_INDEX["jaw_open"]]


def pick_voice(rng: np.random.Generator, split: str) -> Voice:
    variants = HELDOUT_VARIANTS if split == "heldout" else TRAIN_VARIANTS
    return Voice(
        variant=str(variants[int(rng.integers(len(variants)))]),
        rate=int(rng.integers(140, 200)),
        pitch=int(rng.integers(25, 75)),
    )


def _smooth_walk(rng: np.random.Generator, n: int, scale: float, smooth: int = 15) -> np.ndarray:
    x = np.cumsum(rng.normal(0, 1, n + smooth))
    x = np.convolve(x, np.ones(smooth) / smooth, mode="valid")[:n]
    x = x - x.mean()
    return (scale * x / max(1e-6, np.abs(x).max())).astype(np.float32)


def _ramp(values: np.ndarray, width: int = 6) -> np.ndarray:
    """Soften steps of a per-frame (T, k) track with a moving average."""
    kernel = np.ones(width) / width
    padded = np.pad(values, ((width, width), (0, 0)), mode="edge")
    out = np.stack([np.convolve(padded[:, k], kernel, mode="same") for k in range(values.shape[1])], 1)
    return out[width:-width].astype(np.float32)


def emotion_params(emotion: np.ndarray) -> dict[str, np.ndarray]:
    """Face parameters driven by per-frame (valence, arousal)."""
    v, a = emotion[:, 0], emotion[:, 1]
    return {
        "smile": 0.8 * v,
        "brow_raise": 0.6 * v,
        "cheek_raise": 0.6 * np.maximum(v, 0.0),
        "eye_open": 0.5 * a,
    }


def make_session(
    seed: int,
    split: str = "train",
    size: int = 64,
    utterances: int = 4,
    motion: float = 0.3,
    emotions: list[tuple[float, float]] | None = None,
    texts: list[str] | None = None,
    identity_seed: int | None = None,
) -> Session:
    """A deterministic session: identity, voice, texts and emotions all follow from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7 if split == "heldout" else 3]))
    id_seed = identity_seed if identity_seed is not None else seed + (HELDOUT_ID_OFFSET if split == "heldout" else 0)
    identity = Identity.sample(id_seed)
    voice = pick_voice(rng, split)
    count = len(texts) if texts else utterances
    audio_parts, mouth_parts, emo_parts = [], [], []
    for k in range(count):
        text = texts[k] if texts else pick_text(rng, split)
        utt = synthesize(text, voice)
        pause = np.zeros(int(rng.uniform(0.15, 0.6) * 16000), np.float32)
        wave = np.concatenate([utt.audio, pause])
        tracks = fit_length(viseme_tracks(utt.phones, len(wave) / 16000), len(wave) * TRACK_RATE // 16000)
        emo = emotions[k % len(emotions)] if emotions else (float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)))
        artic = 1.0 + 0.3 * emo[1]
        tracks[:, 0] = np.clip(tracks[:, 0] * artic, 0, 1)
        audio_parts.append(wave)
        mouth_parts.append(tracks)
        emo_parts.append(np.tile(np.asarray(emo, np.float32), (len(tracks), 1)))
    audio = np.concatenate(audio_parts)
    n = len(audio) // SAMPLES_PER_FRAME
    audio = audio[: n * SAMPLES_PER_FRAME]
    step = TRACK_RATE // FPS
    mouth = to_frames(np.concatenate(mouth_parts), n)
    emo_fine = fit_length(np.concatenate(emo_parts), n * step).reshape(n, step, 2)[:, 0]
    emotion = _ramp(emo_fine)
    params = np.zeros((n, P), np.float32)
    for i, name in enumerate(("jaw_open", "lip_width", "lip_round", "lip_closure")):
        params[:, PARAM_INDEX[name]] = mouth[:, i]
    for name, values in emotion_params(emotion).items():
        params[:, PARAM_INDEX[name]] = values
    for name in ("head_dx", "head_dy", "head_tilt"):
        params[:, PARAM_INDEX[name]] = _smooth_walk(rng, n, motion)
    blink = np.zeros(n, np.float32)
    t = int(rng.integers(10, 60))
    while t < n - 3:
        blink[t : t + 3] = (0.6, 1.0, 0.6)
        t += int(rng.integers(40, 120))
    params[:, PARAM_INDEX["blink"]] = blink
    params = clip_params(params)
    renderer = FaceRenderer(identity, size)
    return Session(
        identity=identity,
        frames=renderer.render_sequence(params),
        audio=audio.astype(np.float32),
        params=params,
        emotion=emotion,
        neutral=renderer.render(np.zeros(P, np.float32)),
    )
