"""The training set on disk: synthetic sessions packed into one ``.npz`` per split.

Arrays (frames of all sessions concatenated): ``frames`` (N, H, W, 3) uint8, ``audio_feats``
(N, 2, n_mels) log-mel rows, ``params`` (N, P), ``emotion`` (N, 2), ``starts`` (S+1,) session
offsets, ``neutral`` (S, H, W, 3) identity images, ``identity_seeds`` (S,), ``audio`` (N·640,).
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.audio.logmel import LogMelEncoder, stack_context
from engine.errors import InputError
from export.data.clip import ClipConfig, clip_seed, generate_clip, identity_seed
from export.data.face import FaceRenderer
from export.data.identity import Identity
from export.data.params import P

from .synth import Session, make_session

N_MELS = 40
AUDIO_CONTEXT = 2
"""Frames of log-mel context on each side of a frame (the demo encoder's ``context``)."""
AUDIO_DIM = N_MELS * (2 * AUDIO_CONTEXT + 1)


@dataclass
class SessionSet:
    frames: np.ndarray
    audio_feats: np.ndarray
    params: np.ndarray
    emotion: np.ndarray
    starts: np.ndarray
    neutral: np.ndarray
    identity_seeds: np.ndarray
    audio: np.ndarray

    @property
    def num_sessions(self) -> int:
        return len(self.starts) - 1

    def span(self, s: int) -> tuple[int, int]:
        return int(self.starts[s]), int(self.starts[s + 1])

    def subset(self, count: int) -> SessionSet:
        """The first ``count`` sessions."""
        if count >= self.num_sessions:
            return self
        end = int(self.starts[count])
        return SessionSet(
            frames=self.frames[:end], audio_feats=self.audio_feats[:end], params=self.params[:end],
            emotion=self.emotion[:end], starts=self.starts[: count + 1], neutral=self.neutral[:count],
            identity_seeds=self.identity_seeds[:count], audio=self.audio[: end * 640],
        )

    def context_features(self, context: int = AUDIO_CONTEXT) -> np.ndarray:
        """(N, 2, n_mels·(2c+1)) rows as the demo encoder with ``context`` gives them, session by session."""
        spans = [self.span(s) for s in range(self.num_sessions)]
        return np.concatenate(
            [stack_context(torch.from_numpy(self.audio_feats[a:b]), context).numpy() for a, b in spans]
        )

    @classmethod
    def concat(cls, parts: list[SessionSet]) -> SessionSet:
        """The sessions of ``parts``, in order, as one set."""
        offsets = np.cumsum([0] + [int(p.starts[-1]) for p in parts[:-1]])
        starts = np.concatenate([parts[0].starts[:1]] + [p.starts[1:] + o for p, o in zip(parts, offsets, strict=True)])
        fields = {f: np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__ if f != "starts"}
        return cls(**fields, starts=starts)

    @classmethod
    def load(cls, path: str | Path) -> SessionSet:
        if not Path(path).is_file():
            raise InputError(f"no training data at {path}: make it with `keyface train data --out DIR`, or pass --data")
        with np.load(path) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{k: getattr(self, k) for k in self.__dataclass_fields__})


SOURCES = ("sessions", "clips")
"""Where sessions come from: ``sessions`` = :func:`export.train.synth.make_session` (speech and
pauses; the shipped demo model's data), ``clips`` = :func:`export.data.clip.generate_clip`
(speech, laughs, sighs, hums and silences under a varying emotion course)."""

CLIP_SESSION = ClipConfig(min_seconds=8.0, max_seconds=12.0, motion=0.3)
"""Clip-sourced sessions last 8–12 s, so a keyframe window (14 frames 13 apart, 6.8 s) fits."""


def clip_session(index: int, split: str = "train", size: int = 64, seed: int = 0) -> Session:
    """Session ``index`` of a split drawn by the clip generator (one identity, one clip)."""
    identity = Identity.sample(identity_seed(seed, split, index))
    clip = generate_clip(clip_seed(seed, split, index), split, dataclasses.replace(CLIP_SESSION, size=size), identity)
    assert clip.frames is not None
    neutral = FaceRenderer(identity, size).render(np.zeros(P, np.float32))
    return Session(identity, clip.frames, clip.audio, clip.params, clip.emotion, neutral)


def generate(
    count: int, split: str = "train", size: int = 64, seed: int = 0, utterances: int = 4, n_mels: int = N_MELS,
    source: str = "sessions", workers: int = 1,
) -> SessionSet:
    """``count`` sessions of ``split`` with their log-mel rows (``source``: see :data:`SOURCES`),
    made by ``workers`` processes (each a contiguous share; the result does not depend on it)."""
    if source not in SOURCES:
        raise InputError(f"unknown data source {source!r} (expected one of {', '.join(SOURCES)})")
    if workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    bounds = np.linspace(0, count, min(workers, max(count, 1)) + 1).round().astype(int)
    jobs = [(int(a), int(b), split, size, seed, utterances, n_mels, source, i) for i, (a, b) in
            enumerate(itertools.pairwise(bounds))]
    if len(jobs) == 1:
        return _generate_range(*jobs[0])
    context = multiprocessing.get_context("spawn")  # no fork of a process whose torch threads are running
    with ProcessPoolExecutor(len(jobs), mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return SessionSet.concat(list(pool.map(_generate_range, *zip(*jobs, strict=True))))


def _generate_range(first: int, end: int, split: str, size: int, seed: int, utterances: int, n_mels: int,
                    source: str, position: int = 0) -> SessionSet:
    """Sessions ``first … end-1`` of ``split`` (one worker's share of :func:`generate`)."""
    encoder = LogMelEncoder(n_mels)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("frames", "audio_feats", "params", "emotion", "audio")}
    neutral, seeds, starts = [], [], [0]
    for k in tqdm(range(first, end), desc=f"sessions ({split}, {source})", unit="session", position=position):
        s = clip_session(k, split, size, seed) if source == "clips" else make_session(seed + k, split, size, utterances)
        seeds.append(s.identity.seed)
        feats = encoder.encode(torch.from_numpy(s.audio)).numpy()[: s.num_frames]
        parts["frames"].append(s.frames)
        parts["audio_feats"].append(feats)
        parts["params"].append(s.params)
        parts["emotion"].append(s.emotion)
        parts["audio"].append(s.audio)
        neutral.append(s.neutral)
        starts.append(starts[-1] + s.num_frames)
    return SessionSet(
        **{k: np.concatenate(v) for k, v in parts.items()},
        starts=np.asarray(starts, np.int64),
        neutral=np.stack(neutral),
        identity_seeds=np.asarray(seeds, np.int64),
    )
