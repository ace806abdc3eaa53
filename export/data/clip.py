"""One synthetic talking-face clip: plan, audio, face-parameter tracks, frames.

A clip is a random sequence of segments (speech from espeak-ng, laughs, sighs, hums, silences)
spoken by one identity with one voice under a valence/arousal course. All tracks are built on a
1 kHz grid, then averaged over each video frame's 40 ms window (closures take the maximum, so a
30 ms /p/ still closes the lips in its frame): frame ``t`` shows audio samples
``[640 t, 640 (t + 1))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .face import FaceRenderer
from .identity import Identity
from .nonspeech import EXPRESSION_TRACKS, MOUTH_TRACKS, SOUNDS, Sound
from .params import PARAM_INDEX, P, clip_params
from .speech import FEMALE_VARIANTS, SAMPLE_RATE, Phone, Utterance, Voice, sample_voice, synthesize
from .text import pick_text
from .visemes import TRACK_RATE, closure_frames, to_frames, viseme_tracks

FPS = 25  # = engine.audio.base.FPS
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
SPLITS = ("train", "heldout")
KINDS = ("speech", "laugh", "sigh", "hum", "silence")
_SPLIT_CODE = {"train": 1, "heldout": 2}
_MS = TRACK_RATE // FPS  # track samples per frame
_AUDIO_PER_MS = SAMPLE_RATE // TRACK_RATE
_FLASH = (0.3 * np.hanning(300)).astype(np.float32)


@dataclass(frozen=True)
class ClipConfig:
    """How clips are drawn."""

    size: int = 64
    """Frame height and width in pixels."""
    min_seconds: float = 3.0
    max_seconds: float = 8.0
    weights: tuple[tuple[str, float], ...] = (
        ("speech", 0.65), ("laugh", 0.12), ("sigh", 0.08), ("hum", 0.05), ("silence", 0.10))
    """Relative frequency of segment kinds (laughs are likelier with positive valence, sighs
    with negative)."""
    motion: float = 1.0
    """Head-motion scale (0: a still head, e.g. for pixel-aligned evaluation sets)."""
    noise_floor: bool = True
    """Add faint background noise (-70..-55 dBFS) to the audio."""
    render: bool = True
    """Render frames (False: audio and parameters only)."""


@dataclass(frozen=True)
class Segment:
    """One event of a clip, in seconds from the clip start."""

    kind: str
    start: float
    end: float
    text: str = ""

    def frames(self) -> tuple[int, int]:
        """First and one-past-last frame overlapping the segment."""
        return int(self.start * FPS), int(np.ceil(self.end * FPS))


@dataclass
class Clip:
    """A generated clip. Arrays are aligned: T frames, T*640 audio samples, T parameter rows."""

    frames: np.ndarray | None
    """(T, H, W, 3) uint8, or None when not rendered."""
    audio: np.ndarray
    """(T * 640,) float32 at 16 kHz."""
    params: np.ndarray
    """(T, P) float32 face parameters, columns in :data:`export.data.params.PARAM_NAMES` order."""
    emotion: np.ndarray
    """(T, 2) float32 valence and arousal, each in [-1, 1]."""
    identity: Identity
    voice: Voice
    segments: list[Segment] = field(default_factory=list)
    phones: list[Phone] = field(default_factory=list)
    """Phonemes in seconds from the clip start (espeak-ng mnemonics; ``_`` for pauses)."""
    seed: int = 0
    split: str = "train"

    @property
    def n_frames(self) -> int:
        return len(self.params)

    @property
    def valence(self) -> np.ndarray:
        return self.emotion[:, 0]

    @property
    def arousal(self) -> np.ndarray:
        return self.emotion[:, 1]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.kind == "speech")

    def param(self, name: str) -> np.ndarray:
        return self.params[:, PARAM_INDEX[name]]

    def metadata(self) -> dict:
        """Everything but the arrays, JSON-ready."""
        return {
            "seed": self.seed, "split": self.split, "n_frames": self.n_frames, "text": self.text,
            "voice": dataclasses.asdict(self.voice), "voice_name": str(self.voice),
            "segments": [dataclasses.asdict(s) for s in self.segments],
            "phones": [[p.symbol, p.start, p.end] for p in self.phones],
            "identity": self.identity.to_dict(),
        }


def split_code(split: str) -> int:
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _SPLIT_CODE[split]


def identity_seed(seed: int, split: str, index: int) -> int:
    """Seed of identity ``index`` of a split; train and held-out draw from disjoint streams."""
    return int(np.random.SeedSequence([int(seed), split_code(split), int(index), 0x1DE]).generate_state(1)[0])


def clip_seed(seed: int, split: str, index: int) -> int:
    """Seed of clip ``index`` of a dataset."""
    return int(np.random.SeedSequence([int(seed), split_code(split), int(index), 0xC11]).generate_state(1)[0])


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Unit-variance Gaussian-smoothed noise of length ``n`` (``sigma`` in samples)."""
    r = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= np.sqrt((k * k).sum())
    return np.convolve(rng.standard_normal(n + 2 * r), k, mode="valid")[:n].astype(np.float32)


def _emotion_course(rng: np.random.Generator, n: int, start: np.ndarray) -> np.ndarray:
    """(n, 2) valence/arousal from ``start``: constant, a linear ramp, or a smooth step."""
    end = rng.uniform(-1, 1, 2)
    mode = rng.choice(["constant", "ramp", "step"], p=[0.5, 0.3, 0.2])
    if mode == "constant":
        return np.tile(start, (n, 1)).astype(np.float32)
    t = np.linspace(0, 1, n)[:, None]
    if mode == "step":
        at, width = rng.uniform(0.3, 0.7), 0.08
        t = np.clip((t - at) / width + 0.5, 0, 1)
        t = t * t * (3 - 2 * t)
    return (start * (1 - t) + end * t).astype(np.float32)


@dataclass
class _Placed:
    kind: str
    start_ms: int
    text: str = ""
    utterance: Utterance | None = None
    sound: Sound | None = None
    length_ms: int = 0


def _plan(rng: np.random.Generator, split: str, config: ClipConfig, voice: Voice, valence: float,
          script: Sequence[tuple[str, str]] | None) -> tuple[list[_Placed], int]:
    """Draw (or follow ``script``) the clip's segments; returns them and the total length in ms."""
    kinds = [k for k, _ in config.weights]
    w = np.array([wt for _, wt in config.weights], np.float64)
    w *= [1 + valence if k == "laugh" else 1 - valence if k == "sigh" else 1.0 for k in kinds]
    w = np.maximum(w, 0)
    pitch = 1.6 if voice.variant in FEMALE_VARIANTS else 1.0
    target = rng.uniform(config.min_seconds, config.max_seconds)
    pos = int(rng.uniform(0.2, 0.6) * TRACK_RATE)
    placed: list[_Placed] = []
    todo = list(script) if script is not None else None
    while True:
        if todo is not None:
            if not todo:
                break
            kind, text = todo.pop(0)
        else:
            kind, text = str(rng.choice(kinds, p=w / w.sum())), ""
        item = _Placed(kind, pos)
        if kind == "speech":
            item.text = text or pick_text(rng, split)
            jitter = dataclasses.replace(voice, rate=int(np.clip(voice.rate + rng.integers(-12, 13), 80, 400)))
            item.utterance = synthesize(item.text, jitter)
            item.length_ms = round(item.utterance.duration * TRACK_RATE)
        elif kind == "silence":
            item.length_ms = int(rng.uniform(0.3, 1.0) * TRACK_RATE)
        elif kind in SOUNDS:
            item.sound = SOUNDS[kind](rng, pitch=pitch)
            item.length_ms = round(item.sound.duration * TRACK_RATE)
        else:
            raise ValueError(f"unknown segment kind {kind!r} (expected one of {KINDS})")
        if todo is None and placed and (pos + item.length_ms) / TRACK_RATE > config.max_seconds - 0.2:
            break
        placed.append(item)
        pos += item.length_ms
        if todo is None and pos / TRACK_RATE >= target:
            break
        pos += int(rng.uniform(0.1, 0.5) * TRACK_RATE)
    return placed, pos + int(rng.uniform(0.2, 0.5) * TRACK_RATE)


def generate_clip(seed: int, split: str = "train", config: ClipConfig | None = None,
                  identity: Identity | None = None, script: Sequence[tuple[str, str]] | None = None) -> Clip:
    """Generate one clip; the same arguments always give the same clip.

    ``identity`` defaults to a fresh identity of the split drawn from ``seed``. ``script`` forces
    the segments, e.g. ``[("speech", "Bob bought a blue balloon."), ("laugh", "")]``.
    """
    config = config or ClipConfig()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), split_code(split), 0x5EED]))
    identity = identity or Identity.sample(identity_seed(seed, split, 0))
    voice = sample_voice(rng, split)
    emotion0 = rng.uniform(-1, 1, 2)
    placed, total_ms = _plan(rng, split, config, voice, float(emotion0[0]), script)
    n_frames = int(np.ceil(total_ms / _MS))
    n_ms = n_frames * _MS

    # audio
    audio = np.zeros(n_ms * _AUDIO_PER_MS, np.float32)
    level = rng.uniform(0.3, 0.8)
    gains = {"speech": 1.0, "laugh": rng.uniform(0.7, 1.0), "sigh": rng.uniform(0.25, 0.5),
             "hum": rng.uniform(0.3, 0.6)}
    for item in placed:
        wave = item.utterance.audio if item.utterance else item.sound.audio if item.sound else None
        if wave is None:
            continue
        wave = wave * (level * gains[item.kind] / max(float(np.abs(wave).max()), 1e-9))
        a = item.start_ms * _AUDIO_PER_MS
        audio[a:a + len(wave)] += wave[: len(audio) - a]
    if config.noise_floor:
        audio += rng.standard_normal(len(audio)).astype(np.float32) * np.float32(10 ** (rng.uniform(-70, -55) / 20))

    # fine (1 kHz) tracks: mouth, event expression targets and weights, blinks
    mouth = np.zeros((n_ms, 4), np.float32)
    target = np.zeros((n_ms, 4), np.float32)
    weight = np.zeros(n_ms, np.float32)
    head_dy = np.zeros(n_ms, np.float32)
    brow_flash = np.zeros(n_ms, np.float32)
    phones: list[Phone] = []
    articulation = rng.uniform(0.95, 1.3) * (175 / voice.rate) ** 0.3
    for item in placed:
        a = item.start_ms
        if item.utterance is not None:
            u = item.utterance
            tracks = viseme_tracks(u.phones, u.duration, articulation=articulation)
            mouth[a:a + len(tracks)] = tracks[: n_ms - a]
            offset = a / TRACK_RATE
            phones += [Phone(p.symbol, p.start + offset, p.end + offset) for p in u.phones]
            for p in u.phones:  # occasional eyebrow flash on a vowel
                if p.symbol[0] in "aeiouAEIOUV03@" and rng.random() < 0.08:
                    s = int((p.start + offset) * TRACK_RATE)
                    m = max(0, min(len(_FLASH), n_ms - s))
                    brow_flash[s:s + m] = np.maximum(brow_flash[s:s + m], _FLASH[:m])
        elif item.sound is not None:
            tr = item.sound.tracks
            m = min(len(tr["weight"]), n_ms - a)
            for k, name in enumerate(MOUTH_TRACKS):
                mouth[a:a + m, k] = tr[name][:m]
            for k, name in enumerate(EXPRESSION_TRACKS):
                target[a:a + m, k] = tr[name][:m] * tr["weight"][:m]
            weight[a:a + m] = tr["weight"][:m]
            head_dy[a:a + m] += tr["head_dy"][:m]
    blink = _blinks(rng, n_ms)

    # to frames
    params = np.zeros((n_frames, P), np.float32)
    closure = closure_frames(mouth[:, 3], n_frames)
    emotion = _emotion_course(rng, n_frames, emotion0)
    v, ar = emotion[:, 0], emotion[:, 1]
    arousal01 = (ar + 1) / 2
    g = PARAM_INDEX
    params[:, g["jaw_open"]] = to_frames(mouth[:, 0], n_frames) * (1 - closure)
    params[:, g["lip_width"]] = to_frames(mouth[:, 1], n_frames) + 0.2 * v
    params[:, g["lip_round"]] = to_frames(mouth[:, 2], n_frames)
    params[:, g["lip_closure"]] = closure
    drift = [0.08 * _smooth_noise(rng, n_frames, 15.0) for _ in range(3)]
    base = {
        "smile": 0.7 * v + drift[0],
        "brow_raise": 0.45 * v + 0.25 * ar + drift[1] + to_frames(brow_flash, n_frames),
        "eye_open": 0.5 * ar - 0.2 * np.clip(-v, 0, 1) + drift[2],
    }
    base["cheek_raise"] = np.clip(0.5 * base["smile"], 0, 1)
    w = to_frames(weight, n_frames)
    tgt = to_frames(target, n_frames)
    for k, name in enumerate(EXPRESSION_TRACKS):
        params[:, g[name]] = base[name] * (1 - w) + tgt[:, k]
    params[:, g["blink"]] = to_frames(blink, n_frames)
    amp = config.motion * (0.2 + 0.3 * arousal01)
    speaking = to_frames((np.abs(mouth[:, 0]) > 0.05).astype(np.float32), n_frames)
    nod = _smooth_noise(rng, n_frames, 3.0) * speaking
    params[:, g["head_dx"]] = amp * _smooth_noise(rng, n_frames, 14.0)
    params[:, g["head_dy"]] = amp * (0.8 * _smooth_noise(rng, n_frames, 12.0) + 0.4 * nod) + config.motion * (
        to_frames(head_dy, n_frames))
    params[:, g["head_tilt"]] = amp * _smooth_noise(rng, n_frames, 18.0)
    params = clip_params(params)

    segments = [Segment(p.kind, p.start_ms / TRACK_RATE, (p.start_ms + p.length_ms) / TRACK_RATE, p.text)
                for p in placed]
    frames = FaceRenderer(identity, config.size).render_sequence(params) if config.render else None
    return Clip(frames=frames, audio=audio, params=params, emotion=emotion, identity=identity, voice=voice,
                segments=segments, phones=phones, seed=int(seed), split=split)


def _blinks(rng: np.random.Generator, n_ms: int) -> np.ndarray:
    """Blink track (1 kHz): ~0.3 blinks/s, each 60 ms closing, a short hold, 100 ms opening."""
    out = np.zeros(n_ms, np.float32)
    t = int(rng.uniform(0.3, 3.0) * TRACK_RATE)
    while t < n_ms:
        close, hold, opening = int(rng.uniform(50, 80)), int(rng.uniform(0, 40)), int(rng.uniform(80, 140))
        depth = 1.0 if rng.random() < 0.85 else rng.uniform(0.5, 0.9)
        shape = np.concatenate([np.linspace(0, 1, close), np.ones(hold), np.linspace(1, 0, opening)]) * depth
        m = min(len(shape), n_ms - t)
        out[t:t + m] = np.maximum(out[t:t + m], shape[:m])
        t += len(shape) + int(rng.exponential(3.0) * TRACK_RATE) + 200
    return out
