"""Metrics of a demo model on held-out synthetic sessions (unseen identities, sentences, voices).

* **lip sync**: Pearson r between the mouth opening measured on generated frames
  (:mod:`export.data.measure`) and the ground-truth jaw opening, over all evaluated frames
  pooled (the headline number), and per clip (each clip's r; per-identity offsets of the
  measured opening lower the pooled r but not these), on the keyframe positions and on the
  interpolated frames, with each clip's offset and gain of the measured opening;
* **emotion**: mean mouth-corner lift and brow height of renders at valence −1 … +1 (arousal 0),
  and whether both rise monotonically;
* **identity**: PSNR of the non-mouth region of generated frames against the identity image
  (the neutral render) in the first and in the last measured minute of a long render;
* **teacher vs student**: the same metrics for the 10-step guided teacher.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.bundle import ModelBundle
from engine.errors import InputError
from engine.pipeline.audio_inputs import compute_features
from engine.pipeline.offline import OfflineRenderer, RenderSettings, identity_latent
from export.data.identity import Identity
from export.data.measure import measure_frames, non_mouth_mask, psnr
from export.train.dataset import SessionSet

VALENCES = (-1.0, -0.5, 0.0, 0.5, 1.0)


def frame_stream(bundle: ModelBundle, image: np.ndarray, wave: np.ndarray, emotion: np.ndarray,
                 seed: int = 23) -> Iterator[np.ndarray]:
    """Generated uint8 (H, W, 3) frames for ``wave`` (16 kHz) with per-frame (valence, arousal)."""
    num_frames = len(wave) // 640
    ident = identity_latent(bundle, torch.from_numpy(image).permute(2, 0, 1).float() / 255.0)
    kf, ip = compute_features(bundle, wave)
    emo = torch.as_tensor(emotion, dtype=torch.float32)
    with torch.inference_mode():
        renderer = OfflineRenderer(bundle, ident, kf, ip, emo, num_frames, RenderSettings(seed=seed))
        for frame in renderer.frames():
            yield frame.numpy()


def render(bundle: ModelBundle, image: np.ndarray, wave: np.ndarray, emotion: np.ndarray, seed: int = 23) -> np.ndarray:
    return np.stack(list(frame_stream(bundle, image, wave, emotion, seed)))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def session_inputs(data: SessionSet, s: int) -> tuple[Identity, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(identity, identity image, wave, emotion, ground-truth jaw) of held-out session ``s``."""
    a, b = data.span(s)
    wave = data.audio[a * 640 : b * 640]
    return Identity.sample(int(data.identity_seeds[s])), data.neutral[s], wave, data.emotion[a:b], data.params[a:b, 0]


def identity_psnr(frames: np.ndarray, identity: Identity, image: np.ndarray) -> float:
    mask = non_mouth_mask(identity, image.shape[0])
    return psnr(frames, np.broadcast_to(image, frames.shape), mask)


@dataclass
class LipSync:
    """Lip sync of a set of clips: ``r`` pooled over all frames and its break-downs."""

    r: float
    per_clip: list[float]
    identity_psnr: float
    """Mean non-mouth PSNR (dB) of the clips against their identity images."""
    keyframes: float
    """Pooled r on the keyframe positions (every ``spacing``-th frame: the keyframe model's output)."""
    between: float
    """Pooled r on the other frames (the interpolation model's output)."""
    offsets: list[float]
    """Per clip: mean measured opening minus mean true jaw (an identity-dependent bias lowers ``r``)."""
    gains: list[float]
    """Per clip: spread of the measured opening over the spread of the true jaw (1: to scale)."""


@dataclass
class Report:
    clips: list[int] = field(default_factory=list)
    """The held-out sessions measured."""
    lip_sync_r: float = float("nan")
    lip_sync_r_per_clip: list[float] = field(default_factory=list)
    lip_sync_r_keyframes: float = float("nan")
    lip_sync_r_between: float = float("nan")
    mouth_offset_per_clip: list[float] = field(default_factory=list)
    mouth_gain_per_clip: list[float] = field(default_factory=list)
    identity_psnr: float = float("nan")
    emotion: dict[str, list[float]] = field(default_factory=dict)
    emotion_monotonic: bool | None = None
    drift: dict[str, float] = field(default_factory=dict)


def lip_sync(bundle: ModelBundle, data: SessionSet, sessions: list[int], seed: int = 23) -> tuple[float, float]:
    """(Pearson r of measured opening vs ground-truth jaw, mean non-mouth PSNR) over ``sessions``."""
    detail = lip_sync_detail(bundle, data, sessions, seed)
    return detail.r, detail.identity_psnr


def lip_sync_detail(bundle: ModelBundle, data: SessionSet, sessions: list[int], seed: int = 23,
                    spacing: int = 13) -> LipSync:
    """Lip sync of ``sessions`` rendered by ``bundle`` (keyframes every ``spacing`` frames)."""
    measured, truth, psnrs = [], [], []
    for s in sessions:
        identity, image, wave, emotion, jaw = session_inputs(data, s)
        frames = render(bundle, image, wave, emotion, seed)
        measured.append(measure_frames(frames, identity)["mouth_open"])
        truth.append(jaw[: len(frames)])
        psnrs.append(identity_psnr(frames, identity, image))
    return lip_sync_stats(measured, truth, float(np.mean(psnrs)), spacing)


def lip_sync_stats(measured: list[np.ndarray], truth: list[np.ndarray], psnr_mean: float = float("nan"),
                   spacing: int = 13) -> LipSync:
    """:class:`LipSync` of per-clip measured openings against the true jaw tracks."""
    m, t = np.concatenate(measured), np.concatenate(truth)
    at_keyframe = np.concatenate([np.arange(len(x)) % spacing == 0 for x in measured])
    return LipSync(
        r=pearson(m, t),
        per_clip=[pearson(a, b) for a, b in zip(measured, truth, strict=True)],
        identity_psnr=psnr_mean,
        keyframes=pearson(m[at_keyframe], t[at_keyframe]),
        between=pearson(m[~at_keyframe], t[~at_keyframe]),
        offsets=[float(a.mean() - b.mean()) for a, b in zip(measured, truth, strict=True)],
        gains=[float(a.std() / b.std()) if b.std() > 0 else float("nan") for a, b in zip(measured, truth, strict=True)],
    )


def emotion_sweep(bundle: ModelBundle, data: SessionSet, s: int, seconds: float = 3.0) -> dict[str, list[float]]:
    """Mean corner lift / brow height at each valence of :data:`VALENCES` (arousal 0)."""
    identity, image, wave, _, _ = session_inputs(data, s)
    wave = wave[: int(seconds * 16000) // 640 * 640]
    corners, brows = [], []
    for v in VALENCES:
        emo = np.tile(np.array([v, 0.0], np.float32), (len(wave) // 640, 1))
        m = measure_frames(render(bundle, image, wave, emo), identity)
        corners.append(float(np.mean(m["corner_lift"])))
        brows.append(float(np.mean(m["brow_height"])))
    return {"valence": list(VALENCES), "corner_lift": corners, "brow_height": brows}


def monotonic(values: list[float]) -> bool:
    return all(b > a for a, b in itertools.pairwise(values))


def drift(bundle: ModelBundle, data: SessionSet, s: int, minutes: float, window: float = 10.0) -> dict[str, float]:
    """Non-mouth PSNR in the ``window`` seconds ending at minute 1 and at ``minutes``.

    The audio is the held-out sessions' speech looped to ``minutes`` minutes."""
    identity, image, _, _, _ = session_inputs(data, s)
    total = int(minutes * 60 * 25)
    wave = np.resize(data.audio, total * 640).astype(np.float32)
    emotion = np.zeros((total, 2), np.float32)
    mask = non_mouth_mask(identity, image.shape[0])
    first_end = min(total, 60 * 25)
    spans = {"first": (first_end - int(window * 25), first_end), "last": (total - int(window * 25), total)}
    sums = {k: [] for k in spans}
    for i, frame in enumerate(frame_stream(bundle, image, wave, emotion)):
        for k, (a, b) in spans.items():
            if a <= i < b:
                sums[k].append(frame)
    out = {f"psnr_{k}": psnr(np.stack(v), np.broadcast_to(image, (len(v), *image.shape)), mask)
           for k, v in sums.items()}
    out["minutes"] = minutes
    out["ratio"] = out["psnr_last"] / out["psnr_first"]
    return out


def evaluate(bundle: ModelBundle, data: SessionSet, clips: int, minutes: float = 0.0, emotion: bool = True,
             first: int = 0) -> Report:
    """Metrics on held-out sessions ``first … first+clips-1`` (the emotion sweep on the last, the
    drift render on the first)."""
    sessions = list(range(first, min(first + clips, data.num_sessions)))
    if clips < 1 or not sessions:
        raise InputError(f"no sessions to evaluate: the held-out set has {data.num_sessions}, "
                         f"asked for {clips} from session {first}")
    rep = Report(clips=sessions)
    ls = lip_sync_detail(bundle, data, sessions)
    rep.lip_sync_r, rep.lip_sync_r_per_clip, rep.identity_psnr = ls.r, ls.per_clip, ls.identity_psnr
    rep.lip_sync_r_keyframes, rep.lip_sync_r_between = ls.keyframes, ls.between
    rep.mouth_offset_per_clip, rep.mouth_gain_per_clip = ls.offsets, ls.gains
    if emotion:
        rep.emotion = emotion_sweep(bundle, data, sessions[-1])
        rep.emotion_monotonic = monotonic(rep.emotion["corner_lift"]) and monotonic(rep.emotion["brow_height"])
    if minutes > 0:
        rep.drift = drift(bundle, data, sessions[0], minutes)
    return rep


def ground_truth_lip_sync(data: SessionSet, sessions: list[int]) -> float:
    """r of measured opening on the ground-truth frames themselves (the metric's ceiling)."""
    measured, truth = [], []
    for s in sessions:
        a, b = data.span(s)
        identity = Identity.sample(int(data.identity_seeds[s]))
        measured.append(measure_frames(data.frames[a:b], identity)["mouth_open"])
        truth.append(data.params[a:b, 0])
    return pearson(np.concatenate(measured), np.concatenate(truth))
