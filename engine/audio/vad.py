"""Streaming voice-activity detection: silero-vad plus an energy gate, with start/end events.

Audio (16 kHz mono float32, chunks of any size) is cut into 512-sample windows (32 ms). A window is
*active* when silero-vad's speech probability passes the threshold (with hysteresis) **or** its
RMS level passes the energy gate — so laughs, sighs and other non-speech vocalisations, which
silero scores low, still count as activity. The gate is relative to a tracked noise floor as well
as absolute, so steady background noise does not hold it open.

Events carry positions on the detector's 16 kHz timeline (samples pushed since construction or
:meth:`VoiceActivityDetector.reset`): ``sample`` is the refined boundary, ``detected_at`` the
position at which the event was decided (``sample`` plus the min-speech or hang-over latency).
Boundaries are refined from window to 8 ms resolution with the energy envelope when the signal
rises clearly above the noise floor.

Model: the silero-vad pip package's bundled ONNX model through onnxruntime when available (fast;
one shared session, per-detector recurrent state), otherwise its bundled TorchScript model.
Nothing is downloaded.
"""

from __future__ import annotations

import importlib
import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import ModuleType
from typing import Any, Literal, Protocol

import numpy as np
import torch

from engine.audio.base import SAMPLE_RATE

WINDOW = 512
"""Samples per silero-vad window at 16 kHz (32 ms)."""
_CONTEXT = 64
_SUB = 128
"""Sub-block for boundary refinement (8 ms)."""
_SUBS = WINDOW // _SUB
_SILENCE_DB = -100.0


@dataclass(frozen=True)
class SpeechStart:
    """Activity began at ``sample``; decided once ``detected_at`` samples had been pushed."""

    sample: int
    detected_at: int


@dataclass(frozen=True)
class SpeechEnd:
    """Activity ended at ``sample`` (exclusive); decided at ``detected_at`` after the hang-over."""

    sample: int
    detected_at: int


VadEvent = SpeechStart | SpeechEnd


@dataclass(frozen=True)
class VadConfig:
    """Tuning of :class:`VoiceActivityDetector`; times in milliseconds, levels in dBFS."""

    threshold: float = 0.5
    """Silero speech probability that starts activity."""
    neg_threshold: float | None = None
    """Probability below which activity stops (hysteresis); default ``threshold - 0.15``."""
    min_speech_ms: float = 96.0
    """Activity must last this long before ``SpeechStart`` is emitted (rejects clicks)."""
    hangover_ms: float = 300.0
    """Inactivity must last this long before ``SpeechEnd`` is emitted (bridges pauses)."""
    energy_gate: bool = True
    """Count loud windows as activity even when silero does not call them speech."""
    energy_dbfs: float = -40.0
    """Absolute RMS level a window must reach for the energy gate."""
    energy_margin_db: float = 12.0
    """...and how far above the tracked noise floor."""
    floor_rise_db_per_s: float = 5.0
    """How fast the noise-floor estimate may climb (it falls instantly)."""
    refine_margin_db: float = 10.0
    """Sub-blocks this far above the floor count as sound when refining boundaries."""
    refine_ms: float = 64.0
    """How far a boundary may move when refined."""

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= self.threshold:
            raise ValueError("neg_threshold must be in [0, threshold]")
        for name in ("min_speech_ms", "hangover_ms", "floor_rise_db_per_s", "refine_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def off_threshold(self) -> float:
        """Effective hysteresis threshold."""
        return self.neg_threshold if self.neg_threshold is not None else max(0.0, self.threshold - 0.15)


class _SpeechModel(Protocol):
    def reset(self) -> None: ...
    def __call__(self, window: np.ndarray) -> float: ...


def _import_silero() -> ModuleType:
    """Import silero_vad without its side effect of ``torch.set_num_threads(1)``."""
    threads = torch.get_num_threads()
    try:
        return importlib.import_module("silero_vad")
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=1)
def _onnx_session() -> Any:  # onnxruntime is optional, imported lazily
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    _import_silero()  # the model ships inside the package
    path = resources.files("silero_vad.data").joinpath("silero_vad.onnx")
    with resources.as_file(path) as file:
        return ort.InferenceSession(str(file), sess_options=opts, providers=["CPUExecutionProvider"])


class _OnnxSilero:
    """silero-vad's bundled ONNX model, stepped one window at a time with our own state."""

    def __init__(self) -> None:
        self._session = _onnx_session()
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)

    def __call__(self, window: np.ndarray) -> float:
        x = np.concatenate([self._context, window])[None]
        out, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[0, -_CONTEXT:]
        return float(out[0, 0])


class _JitSilero:
    """silero-vad's bundled TorchScript model (keeps its own state and context).

    Fallback only: per-window calls are tens of times slower than ONNX when torch's intra-op pool
    has several threads and the CPU is busy.
    """

    def __init__(self) -> None:
        self._model = _import_silero().load_silero_vad(onnx=False)

    def reset(self) -> None:
        self._model.reset_states()

    def __call__(self, window: np.ndarray) -> float:
        with torch.inference_mode():
            return float(self._model(torch.from_numpy(window), SAMPLE_RATE))


def load_speech_model(backend: Literal["auto", "onnx", "jit"] = "auto") -> _SpeechModel:
    """Bundled silero-vad model: ONNX (onnxruntime) if available for ``auto``, else TorchScript."""
    if backend not in ("auto", "onnx", "jit"):
        raise ValueError(f"unknown VAD backend {backend!r}")
    if backend in ("auto", "onnx"):
        try:
            return _OnnxSilero()
        except ImportError:
            if backend == "onnx":
                raise
    return _JitSilero()


def _db(x: np.ndarray) -> float:
    ms = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return 10.0 * math.log10(ms) if ms > 1e-10 else _SILENCE_DB


class VoiceActivityDetector:
    """Streaming VAD over 16 kHz mono audio; :meth:`push` returns the events each chunk caused."""

    def __init__(
        self,
        config: VadConfig | None = None,
        *,
        backend: Literal["auto", "onnx", "jit"] = "auto",
    ) -> None:
        self.config = config or VadConfig()
        self._model = load_speech_model(backend)
        cfg = self.config
        self._min_speech = max(1, math.ceil(cfg.min_speech_ms * SAMPLE_RATE / 1000 / WINDOW))
        self._hangover = max(1, math.ceil(cfg.hangover_ms * SAMPLE_RATE / 1000 / WINDOW))
        self._refine_subs = int(cfg.refine_ms * SAMPLE_RATE / 1000 / _SUB)
        self._floor_rise = cfg.floor_rise_db_per_s * WINDOW / SAMPLE_RATE
        history = (max(self._min_speech, self._hangover) + 2) * _SUBS + self._refine_subs
        self._history: deque[tuple[int, float]] = deque(maxlen=history)  # (start sample, level dB)
        self.reset()

    def reset(self) -> None:
        """Forget all audio: fresh model state, timeline back to sample 0, idle."""
        self._model.reset()
        self._buf = np.zeros(0, np.float32)
        self._pos = 0  # samples consumed into windows (timeline position of self._buf[0])
        self._history.clear()
        self._floor: float | None = None  # noise-floor estimate (dBFS); None until the first window
        self._active = False  # inside speech (SpeechStart emitted, SpeechEnd not yet)
        self._run = 0  # consecutive active windows while idle (pending start)
        self._run_start = 0
        self._quiet = 0  # consecutive inactive windows while active
        self._last_active_end = 0
        self._last_end = 0  # sample of the previous SpeechEnd; a refined start never precedes it
        self.last_probability = 0.0

    @property
    def is_speech(self) -> bool:
        """Whether a ``SpeechStart`` has been emitted without its ``SpeechEnd`` yet."""
        return self._active

    @property
    def position(self) -> int:
        """Samples pushed so far on this detector's 16 kHz timeline."""
        return self._pos + len(self._buf)

    def push(self, samples: np.ndarray | torch.Tensor) -> list[VadEvent]:
        """Feed 16 kHz mono audio of any length; returns events decided by it, in order."""
        x = _as_float32(samples)
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x
        events: list[VadEvent] = []
        n = len(self._buf) // WINDOW
        for i in range(n):
            self._step(self._buf[i * WINDOW : (i + 1) * WINDOW], WINDOW, events)
        self._buf = self._buf[n * WINDOW :].copy()
        return events

    def flush(self) -> list[VadEvent]:
        """End of stream/utterance: score the partial window, close open activity, reset the model.

        The timeline keeps running, so positions stay comparable with the audio pushed later.
        """
        events: list[VadEvent] = []
        if self._buf.size:
            n = len(self._buf)
            window = np.zeros(WINDOW, np.float32)
            window[:n] = self._buf
            self._buf = np.zeros(0, np.float32)
            self._step(window, n, events)
        if self._active:
            events.append(self._end(self._pos))
        self._active, self._run, self._quiet = False, 0, 0
        self._history.clear()
        self._model.reset()
        return events

    def _step(self, window: np.ndarray, length: int, events: list[VadEvent]) -> None:
        cfg = self.config
        prob = self._model(window)
        self.last_probability = prob
        start, end = self._pos, self._pos + length
        self._history.extend(
            (start + j, _db(window[j : min(j + _SUB, length)])) for j in range(0, length, _SUB)
        )
        level = _db(window[:length])
        floor = level if self._floor is None else self._floor
        speech = prob >= (cfg.off_threshold if self._active else cfg.threshold)
        loud = cfg.energy_gate and level >= max(cfg.energy_dbfs, floor + cfg.energy_margin_db)
        self._floor = min(level, floor + self._floor_rise)
        self._pos = end
        active = speech or loud
        if self._active:
            if active:
                self._quiet = 0
                self._last_active_end = end
            else:
                self._quiet += 1
                if self._quiet >= self._hangover:
                    events.append(self._end(end))
                    self._active, self._quiet = False, 0
        elif active:
            if self._run == 0:
                self._run_start = start
            self._run += 1
            self._last_active_end = end
            if self._run >= self._min_speech:
                events.append(SpeechStart(self._refine_start(), end))
                self._active, self._run, self._quiet = True, 0, 0
        else:
            self._run = 0

    def _loud(self, sample: int) -> bool | None:
        """Whether the sub-block starting at ``sample`` stands out of the noise floor (None: unknown)."""
        if not self._history:
            return None
        newest = self._history[-1][0]
        idx = len(self._history) - 1 - (newest - sample) // _SUB
        if not 0 <= idx < len(self._history) or self._history[idx][0] != sample:
            return None
        floor = _SILENCE_DB if self._floor is None else self._floor
        return self._history[idx][1] > floor + self.config.refine_margin_db

    def _refine_start(self) -> int:
        """Move the start to the energy onset: earlier while sound precedes it, later over quiet."""
        s = self._run_start
        lo, hi = s - self._refine_subs * _SUB, s + self._refine_subs * _SUB
        first_loud = next((p for p in range(s, min(hi, self._pos), _SUB) if self._loud(p)), None)
        if first_loud is None:
            return s
        if first_loud > s:
            return first_loud
        while s - _SUB >= max(lo, self._last_end) and self._loud(s - _SUB):
            s -= _SUB
        return s

    def _end(self, detected_at: int) -> SpeechEnd:
        self._last_end = self._refine_end()
        return SpeechEnd(self._last_end, detected_at)

    def _refine_end(self) -> int:
        """Pull the end back over trailing quiet sub-blocks (silero's probability lags the audio)."""
        e = self._last_active_end
        lo = e - self._refine_subs * _SUB
        while e - _SUB >= lo and self._loud(e - _SUB) is False:
            e -= _SUB
        return e


def _as_float32(samples: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"VAD expects 1-D 16 kHz mono audio, got shape {x.shape}")
    return x
