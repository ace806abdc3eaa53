"""Phonemes to visemes: per-phoneme mouth targets blended with dominance coarticulation.

Each phone gets targets for jaw opening, lip width (spread +, narrow -) and lip rounding plus a
dominance strength; tracks are the dominance-weighted average of all targets (Cohen & Massaro
1993), where a phone's dominance is its strength inside its span and decays exponentially outside
(slowly for rounding, which is anticipated over several phones). Bilabials (p, b, m) get a lip
closure track of their own that always reaches 1, and the jaw is multiplied by (1 - closure).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .speech import PAUSE, Phone

TRACK_RATE = 1000
"""Samples per second of the fine-grained tracks (1 ms)."""
TRACKS = ("jaw_open", "lip_width", "lip_round", "lip_closure")


@dataclass(frozen=True)
class Viseme:
    """Mouth targets of a phoneme and how strongly it imposes them on its neighbours."""

    jaw: float
    width: float
    round: float
    strength: float = 1.0
    closure: bool = False
    lip_strength: float | None = None
    """Dominance for lip width and rounding (default: ``strength``); low for bilabials, whose
    lips close whatever their shape (the "oo" of "boot" rounds the /b/)."""


_V = Viseme
VISEMES: dict[str, Viseme] = {
    # open vowels
    "a": _V(0.85, 0.25, 0.0), "a#": _V(0.7, 0.2, 0.0), "aa": _V(0.9, 0.2, 0.0),
    "A:": _V(0.95, 0.0, 0.05), "A@": _V(0.9, 0.0, 0.05), "V": _V(0.65, 0.1, 0.0),
    # mid / front vowels
    "E": _V(0.6, 0.4, 0.0), "e": _V(0.55, 0.45, 0.0), "e@": _V(0.6, 0.35, 0.0),
    "@": _V(0.4, 0.05, 0.0, 0.6), "@2": _V(0.38, 0.05, 0.0, 0.5), "@5": _V(0.38, 0.0, 0.0, 0.5),
    "@-": _V(0.3, 0.0, 0.0, 0.4), "@L": _V(0.35, 0.1, 0.0, 0.7),
    "3": _V(0.42, -0.15, 0.35), "3:": _V(0.45, -0.15, 0.4), "VR": _V(0.5, -0.1, 0.3),
    "IR": _V(0.35, -0.1, 0.3),
    # close front vowels: spread
    "I": _V(0.32, 0.55, 0.0), "I#": _V(0.3, 0.45, 0.0), "I2": _V(0.3, 0.5, 0.0),
    "i": _V(0.28, 0.6, 0.0), "i:": _V(0.25, 0.75, 0.0), "i@": _V(0.35, 0.5, 0.0),
    "i@3": _V(0.35, 0.45, 0.1),
    # back rounded vowels
    "0": _V(0.7, -0.2, 0.5, lip_strength=1.3), "O:": _V(0.6, -0.4, 0.75, lip_strength=1.6),
    "O@": _V(0.6, -0.35, 0.65, lip_strength=1.5), "O2": _V(0.6, -0.35, 0.7, lip_strength=1.5),
    "o@": _V(0.55, -0.4, 0.7, lip_strength=1.5), "o": _V(0.5, -0.45, 0.75, lip_strength=1.6),
    "U": _V(0.3, -0.4, 0.7, lip_strength=1.5), "u:": _V(0.22, -0.6, 0.95, lip_strength=1.6),
    "U@": _V(0.35, -0.3, 0.6, lip_strength=1.3),
    # consonants
    "p": _V(0.04, 0.0, 0.0, 3.0, True, 0.3), "b": _V(0.04, 0.0, 0.0, 3.0, True, 0.3),
    "m": _V(0.04, 0.0, 0.0, 3.0, True, 0.3),
    "f": _V(0.12, 0.15, 0.0, 2.0), "v": _V(0.12, 0.15, 0.0, 2.0),
    "T": _V(0.22, 0.1, 0.0), "D": _V(0.2, 0.1, 0.0, 0.8),
    "t": _V(0.2, 0.1, 0.0, 0.7), "d": _V(0.2, 0.1, 0.0, 0.7), "n": _V(0.2, 0.1, 0.0, 0.6),
    "l": _V(0.25, 0.1, 0.0, 0.6), "t#": _V(0.22, 0.1, 0.0, 0.5),
    "s": _V(0.12, 0.35, 0.0, 1.5, lip_strength=0.7), "z": _V(0.12, 0.35, 0.0, 1.4, lip_strength=0.7),
    "S": _V(0.15, -0.3, 0.6, 1.5), "Z": _V(0.15, -0.3, 0.6, 1.5),
    "tS": _V(0.15, -0.3, 0.6, 1.5), "dZ": _V(0.15, -0.3, 0.6, 1.5),
    "k": _V(0.3, 0.05, 0.0, 0.6), "g": _V(0.3, 0.05, 0.0, 0.6), "N": _V(0.28, 0.05, 0.0, 0.6),
    "x": _V(0.3, 0.0, 0.0, 0.6),
    "h": _V(0.35, 0.0, 0.0, 0.2), "?": _V(0.3, 0.0, 0.0, 0.2),
    "r": _V(0.22, -0.25, 0.5), "w": _V(0.1, -0.6, 0.95, 2.0), "j": _V(0.18, 0.45, 0.0),
    PAUSE: _V(0.0, 0.0, 0.0, 0.8),
}
NEUTRAL = _V(0.3, 0.0, 0.0, 0.1)
"""Used for symbols not in the table (e.g. espeak's ``;`` palatal marker)."""
DIPHTHONGS: dict[str, tuple[str, ...]] = {
    "aI": ("a", "I"), "aI2": ("a", "I"), "aI@": ("a", "I", "@"), "aI3": ("a", "I", "@"),
    "aU": ("a", "U"), "aU@": ("a", "U", "@"), "eI": ("e", "I"), "oU": ("o", "U"),
    "OI": ("O:", "I"), "i@": ("i", "@"), "e@": ("e", "@"), "U@": ("U", "@"),
}
LAMBDA_S = {"jaw": 0.03, "width": 0.045, "round": 0.065}
"""Decay length of the dominance outside a phone's span, in seconds."""


def viseme_of(symbol: str) -> Viseme:
    """The viseme of an espeak-ng phoneme mnemonic (stress marks and variant suffixes ignored)."""
    sym = symbol.strip("'ˈˌ,")
    if sym in VISEMES:
        return VISEMES[sym]
    for cut in (sym.rstrip("0123456789"), sym.rstrip("#-[;0123456789"), sym[:2], sym[:1]):
        if cut in VISEMES:
            return VISEMES[cut]
    return NEUTRAL


def expand_diphthongs(phones: Sequence[Phone]) -> list[Phone]:
    """Split diphthongs into their parts (the first part gets 55% of the time)."""
    out: list[Phone] = []
    for p in phones:
        parts = DIPHTHONGS.get(p.symbol)
        if not parts:
            out.append(p)
            continue
        weights = np.array([1.2] + [1.0] * (len(parts) - 1))
        edges = p.start + (p.end - p.start) * np.concatenate([[0], np.cumsum(weights) / weights.sum()])
        out += [Phone(s, float(a), float(b)) for s, a, b in zip(parts, edges[:-1], edges[1:], strict=True)]
    return out


def closure_track(phones: Sequence[Phone], n: int, rate: int = TRACK_RATE, lead: float = 0.02,
                  min_hold: float = 0.06, ramp: float = 0.025) -> np.ndarray:
    """Lip closure (0..1) on an ``n``-sample grid: 1 over each bilabial, cosine ramps either side.

    The closed span starts ``lead`` s before the phone (lips close before the release) and lasts
    at least ``min_hold`` s so that even a 30 ms /p/ spans a video frame.
    """
    t = np.arange(n, dtype=np.float64) / rate
    out = np.zeros(n, np.float64)
    for p in phones:
        if not viseme_of(p.symbol).closure:
            continue
        a = p.start - lead
        b = max(p.end, a + min_hold)
        d = np.maximum(a - t, t - b)  # <= 0 inside the closed span
        bump = np.where(d <= 0, 1.0, 0.5 + 0.5 * np.cos(np.pi * np.clip(d / ramp, 0, 1)))
        np.maximum(out, bump, out=out)
    return out.astype(np.float32)


def viseme_tracks(phones: Sequence[Phone], duration: float, rate: int = TRACK_RATE,
                  articulation: float = 1.0) -> np.ndarray:
    """Mouth tracks (n, 4) = (jaw_open, lip_width, lip_round, lip_closure) at ``rate`` Hz.

    ``articulation`` scales jaw opening (hypo- vs hyper-articulated speakers, fast speech).
    Time outside all phones counts as a pause.
    """
    n = max(1, round(duration * rate))
    parts = expand_diphthongs(phones)
    padded = [Phone(PAUSE, -1.0, parts[0].start if parts else duration), *parts,
              Phone(PAUSE, parts[-1].end if parts else 0.0, duration + 1.0)]
    t = np.arange(n, dtype=np.float64) / rate
    start = np.array([p.start for p in padded])[:, None]
    end = np.array([p.end for p in padded])[:, None]
    vis = [viseme_of(p.symbol) for p in padded]
    jaw_strength = np.array([v.strength for v in vis])[:, None]
    lip_strength = np.array([v.strength if v.lip_strength is None else v.lip_strength for v in vis])[:, None]
    dist = np.maximum(np.maximum(start - t, t - end), 0.0)  # (phones, n) seconds outside the span
    out = np.zeros((n, 4), np.float32)
    for k, (key, attr) in enumerate((("jaw", "jaw"), ("width", "width"), ("round", "round"))):
        dom = (jaw_strength if k == 0 else lip_strength) * np.exp(-dist / LAMBDA_S[key])
        target = np.array([getattr(v, attr) for v in vis])[:, None]
        out[:, k] = (dom * target).sum(0) / np.maximum(dom.sum(0), 1e-12)
    closure = closure_track(parts, n, rate)
    out[:, 0] = np.clip(out[:, 0] * articulation, 0, 1) * (1 - closure)
    out[:, 3] = closure
    return out


def fit_length(track: np.ndarray, rows: int) -> np.ndarray:
    """``track`` cut or edge-padded to exactly ``rows`` rows (rounding leaves fine tracks a
    millisecond shorter or longer than their audio)."""
    if len(track) >= rows:
        return track[:rows]
    return np.concatenate([track, np.repeat(track[-1:], rows - len(track), axis=0)])


def to_frames(track: np.ndarray, n_frames: int, fps: int = 25, rate: int = TRACK_RATE) -> np.ndarray:
    """Average a fine track (n, ...) over each video frame's window -> (n_frames, ...)."""
    step = rate // fps
    x = fit_length(track, n_frames * step)
    return x.reshape(n_frames, step, *track.shape[1:]).mean(axis=1).astype(np.float32)


CLOSED_FRACTION = 0.7
"""A frame whose window is closed at least this fraction of the time gets lip_closure 1."""


def closure_frames(closure: np.ndarray, n_frames: int, fps: int = 25, rate: int = TRACK_RATE) -> np.ndarray:
    """Per-frame lip closure from the fine track: the closed fraction of the frame, sharpened so
    that every bilabial (closed >= 60 ms) fully closes the lips in at least one frame."""
    x = np.clip(to_frames(closure, n_frames, fps, rate) / CLOSED_FRACTION, 0, 1)
    return (x * x * (3 - 2 * x)).astype(np.float32)
