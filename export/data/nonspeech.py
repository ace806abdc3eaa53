"""Non-speech vocal sounds (laugh, sigh, hum) with the face tracks that go with them.

Sounds are synthesised at 16 kHz: a band-limited glottal pulse train (harmonics with a 1/k
roll-off) plus breath noise, shaped by vowel formants (zero-phase filtering in the frequency
domain) and an amplitude envelope. Face tracks are on the 1 kHz grid of
:mod:`export.data.visemes`: mouth tracks replace the speech visemes for the duration, expression
targets are blended in with the ``weight`` envelope, ``head_dy`` is added to the head motion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .speech import SAMPLE_RATE
from .visemes import TRACK_RATE

MOUTH_TRACKS = ("jaw_open", "lip_width", "lip_round", "lip_closure")
EXPRESSION_TRACKS = ("smile", "brow_raise", "eye_open", "cheek_raise")


@dataclass
class Sound:
    """A non-speech event: audio (16 kHz float32) and face tracks (1 kHz) of the same duration."""

    kind: str
    audio: np.ndarray
    tracks: dict[str, np.ndarray] = field(default_factory=dict)
    """Mouth tracks, expression targets, ``weight`` (0..1 blend of the targets) and ``head_dy``."""

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def _formants(x: np.ndarray, formants: list[tuple[float, float]], sr: int = SAMPLE_RATE) -> np.ndarray:
    """Filter ``x`` through a cascade of 2-pole resonators (magnitude only, zero phase)."""
    n = len(x)
    spec = np.fft.rfft(x, 2 * n)
    z = np.exp(-2j * np.pi * np.fft.rfftfreq(2 * n, 1 / sr) / sr)
    gain = np.ones(len(z))
    for freq, bw in formants:
        r = np.exp(-np.pi * bw / sr)
        den = np.abs(1 - 2 * r * np.cos(2 * np.pi * freq / sr) * z + r * r * z * z)
        gain *= (1 - r) / den
    out = np.fft.irfft(spec * gain, 2 * n)[:n]
    return out.astype(np.float32)


def _pulses(f0: np.ndarray, sr: int = SAMPLE_RATE, tilt: float = 1.0) -> np.ndarray:
    """Band-limited glottal source with instantaneous pitch ``f0`` (Hz per sample)."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros(len(f0), np.float64)
    kmax = int(sr / 2 / max(float(f0.min()), 50.0))
    for k in range(1, kmax + 1):
        alias = (k * f0 < sr / 2 - 200).astype(np.float64)
        out += alias * np.sin(k * phase) / k**tilt
    return out.astype(np.float32)


def _ms(seconds: float) -> int:
    return round(seconds * TRACK_RATE)


def _lengths(seconds: float) -> tuple[int, int]:
    """(track samples, audio samples) of a duration rounded to whole milliseconds."""
    m = _ms(seconds)
    return m, m * (SAMPLE_RATE // TRACK_RATE)


def _smooth(x: np.ndarray, width_ms: int) -> np.ndarray:
    k = np.hanning(max(3, width_ms) | 1)
    k /= k.sum()
    return np.convolve(np.pad(x, len(k) // 2, mode="edge"), k, mode="valid").astype(np.float32)


def _env(n: int, attack: int, release: int) -> np.ndarray:
    """0..1 envelope with raised-cosine attack and release (in samples)."""
    e = np.ones(n, np.float32)
    a, r = min(attack, n // 2), min(release, n // 2)
    if a:
        e[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, a))
    if r:
        e[n - r:] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, r))
    return e


def laugh(rng: np.random.Generator, pitch: float = 1.0) -> Sound:
    """'Ha-ha-ha': 3-7 voiced bursts with falling pitch; smile, raised cheeks, jaw bursts, squint.

    ``pitch`` scales F0 (about 1 for a male voice, 1.6 for a female one).
    """
    n_bursts = int(rng.integers(3, 8))
    period = rng.uniform(0.17, 0.25)
    burst = rng.uniform(0.09, 0.14)
    lead, tail = 0.08, rng.uniform(0.25, 0.4)
    total = lead + period * (n_bursts - 1) + burst + tail
    m, n = _lengths(total)
    f0 = np.full(n, 150.0 * pitch * rng.uniform(1.3, 1.9))
    amp = np.zeros(n, np.float32)
    breath = np.zeros(n, np.float32)
    jaw = np.zeros(m, np.float32)
    head = np.zeros(m, np.float32)
    open_ = rng.uniform(0.45, 0.8)
    for b in range(n_bursts):
        t0 = lead + b * period
        a, dur = int(t0 * SAMPLE_RATE), int(burst * SAMPLE_RATE)
        decay = 0.85 ** b
        f0[a:a + dur] *= np.linspace(1.05, 0.9, dur) * (0.97 ** b)
        h = int(0.025 * SAMPLE_RATE)  # breathy "h" onset
        breath[max(0, a - h):a] += np.linspace(0, 0.5, min(h, a)) * decay
        amp[a:a + dur] = np.maximum(amp[a:a + dur], _env(dur, int(0.015 * SAMPLE_RATE), int(0.05 * SAMPLE_RATE))
                                    * decay)
        ja, jd = _ms(t0 - 0.02), _ms(burst + 0.03)
        jaw[ja:ja + jd] = np.maximum(jaw[ja:ja + jd], open_ * (0.6 + 0.4 * decay) * np.hanning(jd))
        head[ja:ja + jd] += 0.25 * decay * np.hanning(jd)
    voiced = _pulses(f0) * amp
    noise = rng.standard_normal(n).astype(np.float32) * (0.3 * amp + breath)
    f1, f2 = rng.uniform(700, 900), rng.uniform(1150, 1450)
    audio = _formants(voiced + 0.5 * noise, [(f1, 110), (f2, 140), (2700, 200), (3500, 300)])
    weight = _env(m, _ms(0.12), _ms(0.3))
    return Sound("laugh", _normalize(audio), {
        "jaw_open": _smooth(jaw, 30), "lip_width": 0.6 * weight, "lip_round": np.zeros(m, np.float32),
        "lip_closure": np.zeros(m, np.float32),
        "smile": np.full(m, rng.uniform(0.75, 1.0), np.float32), "brow_raise": np.full(m, rng.uniform(0.1, 0.4),
                                                                                          np.float32),
        "eye_open": np.full(m, rng.uniform(-0.8, -0.4), np.float32),
        "cheek_raise": np.full(m, rng.uniform(0.7, 1.0), np.float32),
        "weight": weight, "head_dy": _smooth(head, 40),
    })


def sigh(rng: np.random.Generator, pitch: float = 1.0) -> Sound:
    """A breathy exhale with falling loudness; brows and lids drop, mouth slightly open."""
    total = rng.uniform(0.8, 1.5)
    m, n = _lengths(total)
    t = np.arange(n) / SAMPLE_RATE
    env = (1 - np.exp(-t / 0.08)) * np.exp(-t / (0.45 * total))
    noise = rng.standard_normal(n).astype(np.float32) * env
    voicing = _pulses(np.linspace(130, 95, n) * pitch) * env * np.exp(-t / 0.25) * rng.uniform(0.0, 0.4)
    audio = _formants(noise + voicing, [(rng.uniform(500, 700), 250), (1100, 300), (2500, 400)])
    weight = _env(m, _ms(0.2), _ms(0.4))
    tm = np.arange(m) / TRACK_RATE
    jaw = rng.uniform(0.15, 0.3) * np.clip(tm / 0.15, 0, 1) * np.exp(-tm / (0.8 * total))
    return Sound("sigh", _normalize(audio), {
        "jaw_open": jaw.astype(np.float32), "lip_width": np.full(m, -0.1, np.float32),
        "lip_round": (0.25 * weight).astype(np.float32), "lip_closure": np.zeros(m, np.float32),
        "smile": np.full(m, rng.uniform(-0.5, -0.2), np.float32),
        "brow_raise": np.full(m, rng.uniform(-0.8, -0.4), np.float32),
        "eye_open": np.full(m, rng.uniform(-0.7, -0.3), np.float32), "cheek_raise": np.zeros(m, np.float32),
        "weight": weight, "head_dy": (0.35 * weight).astype(np.float32),
    })


def hum(rng: np.random.Generator, pitch: float = 1.0) -> Sound:
    """A closed-lip 'mmm' (nasal murmur): lips pressed together, a content little smile."""
    total = rng.uniform(0.4, 0.9)
    m, n = _lengths(total)
    f0 = np.linspace(1.0, rng.uniform(0.8, 1.2), n) * 120 * pitch
    audio = _formants(_pulses(f0, tilt=1.5) * _env(n, int(0.04 * SAMPLE_RATE), int(0.08 * SAMPLE_RATE)),
                      [(250, 60), (1000, 300), (2500, 400)])
    weight = _env(m, _ms(0.1), _ms(0.15))
    closure = _env(m, _ms(0.03), _ms(0.05))
    return Sound("hum", _normalize(audio), {
        "jaw_open": np.zeros(m, np.float32), "lip_width": (0.2 * weight).astype(np.float32),
        "lip_round": np.zeros(m, np.float32), "lip_closure": closure,
        "smile": np.full(m, rng.uniform(0.1, 0.4), np.float32), "brow_raise": np.full(m, 0.1, np.float32),
        "eye_open": np.zeros(m, np.float32), "cheek_raise": np.full(m, 0.2, np.float32),
        "weight": weight, "head_dy": np.zeros(m, np.float32),
    })


def _normalize(audio: np.ndarray, peak: float = 0.9) -> np.ndarray:
    return (audio * (peak / max(float(np.abs(audio).max()), 1e-9))).astype(np.float32)


SOUNDS: dict[str, Callable[..., Sound]] = {"laugh": laugh, "sigh": sigh, "hum": hum}
