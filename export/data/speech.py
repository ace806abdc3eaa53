"""Speech from espeak-ng with exact phoneme timings.

The ``espeak-ng`` command prints phoneme *names* (``-x``) but gives durations only for MBROLA
voices (``--pho``). The shared library it is built on (``libespeak-ng.so.1``, a dependency of the
Debian/Ubuntu ``espeak-ng`` package) reports a phoneme event with its sample position for every
phoneme when initialised with ``espeakINITIALIZE_PHONEME_EVENTS``; we drive it through ctypes in
synchronous mode, so audio and timings come from one and the same synthesis. Each utterance runs in
a fresh interpreter (about 30 ms) because the library keeps state between utterances.
"""

from __future__ import annotations

import ctypes.util
import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import soxr

SAMPLE_RATE = 16_000
"""= engine.audio.base.SAMPLE_RATE (not imported from there: that module pulls in torch)."""

_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4  # espeak_PARAMETER values (speak_lib.h)

PAUSE = "_"
"""Symbol used for every pause phoneme (espeak's ``_``, ``_:``, ``_!`` …)."""


class EspeakError(RuntimeError):
    """espeak-ng (its shared library) is missing or failed."""


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: language, variant and prosody settings."""

    language: str = "en-us"
    variant: str = ""
    rate: int = 175
    """Words per minute (80..450)."""
    pitch: int = 50
    """Base pitch 0..99."""
    pitch_range: int = 50
    """Intonation range 0..99."""

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}" if self.variant else self.language

    def __str__(self) -> str:
        return f"{self.name} -s {self.rate} -p {self.pitch}"


@dataclass(frozen=True)
class Phone:
    """One phoneme (espeak mnemonic) with its time span in seconds."""

    symbol: str
    start: float
    end: float


@dataclass
class Utterance:
    """Synthesised speech at 16 kHz and its phonemes, trimmed to the spoken extent."""

    audio: np.ndarray
    phones: list[Phone]
    text: str
    voice: Voice

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


_HELPER = r"""
import ctypes, json, sys

class Id(ctypes.Union):
    _fields_ = (("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8))

class Event(ctypes.Structure):
    _fields_ = (("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", Id))

Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))
job = json.loads(sys.stdin.read())
out = sys.stdout.buffer

def fail(message):
    out.write(json.dumps({"error": message}).encode() + b"\n")
    sys.exit(0)

lib = None
for name in job["libs"]:
    try:
        lib = ctypes.CDLL(name)
        break
    except OSError:
        pass
if lib is None:
    fail("no-library")
lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
lib.espeak_SetSynthCallback.argtypes = (Callback,)
lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
lib.espeak_Synth.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                             ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p)
rate = lib.espeak_Initialize(2, 0, None, 1)  # synchronous output, phoneme events
if rate <= 0:
    fail("espeak_Initialize failed (is espeak-ng-data installed?)")
chunks, events = [], []

def on_synth(wav, n, ev):
    if n > 0:
        chunks.append(ctypes.string_at(wav, 2 * n))
    i = 0
    while ev[i].type != 0:
        if ev[i].type == 7:
            events.append((ev[i].sample, ev[i].id.string.decode("ascii", "replace")))
        i += 1
    return 0

callback = Callback(on_synth)
lib.espeak_SetSynthCallback(callback)
if lib.espeak_SetVoiceByName(job["voice"].encode()) != 0:
    fail("espeak-ng has no voice " + repr(job["voice"]))
for param, value in job["params"]:
    lib.espeak_SetParameter(param, value, 0)
data = job["text"].encode("utf-8") + b"\0"
err = lib.espeak_Synth(data, len(data), 0, 0, 0, 1, None, None)  # espeakCHARS_UTF8
if err != 0:
    fail("espeak_Synth failed with error %d" % err)
out.write(json.dumps({"rate": rate, "events": events}).encode() + b"\n" + b"".join(chunks))
"""


@functools.cache
def _library_names() -> list[str]:
    names = [os.environ.get("KEYFACE_ESPEAK_LIB", ""), ctypes.util.find_library("espeak-ng") or ""]
    names += ["libespeak-ng.so.1", "libespeak-ng.so", "libespeak-ng.1.dylib", "libespeak-ng.dylib"]
    return list(dict.fromkeys(n for n in names if n))


def _synth_raw(text: str, voice: Voice) -> tuple[int, np.ndarray, list[tuple[int, str]]]:
    """Run one synthesis in a fresh interpreter: 22.05 kHz int16 samples and phoneme events.

    libespeak-ng carries state (pitch-period phase, pause lengths) from one utterance to the
    next, so the same text comes out slightly differently on a second call; a fresh process per
    utterance makes the result a pure function of (text, voice).
    """
    params = [(_RATE, voice.rate), (_PITCH, voice.pitch), (_RANGE, voice.pitch_range), (_VOLUME, 100)]
    job = {"libs": _library_names(), "voice": voice.name, "text": text,
           "params": [(p, int(v)) for p, v in params]}
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _HELPER], input=json.dumps(job).encode(),
                              capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EspeakError(f"espeak-ng helper failed: {exc}") from exc
    header, _, payload = proc.stdout.partition(b"\n")
    try:
        info = json.loads(header)
    except ValueError:
        detail = proc.stderr.decode(errors="replace").strip()[-300:]
        raise EspeakError(f"espeak-ng helper crashed (exit {proc.returncode}): {detail}") from None
    if info.get("error") == "no-library":
        raise EspeakError(
            "libespeak-ng (the espeak-ng shared library) was not found; install espeak-ng "
            "(scripts/install-system-deps.sh) or set KEYFACE_ESPEAK_LIB to its path"
        )
    if "error" in info:
        raise EspeakError(info["error"])
    wave = np.frombuffer(payload, dtype="<i2")
    return int(info["rate"]), wave, [(int(s), str(sym)) for s, sym in info["events"]]


@functools.cache
def espeak_missing_reason() -> str | None:
    """None when speech synthesis works here, else why not (checked once per process)."""
    try:
        _synth_raw("a", Voice())
    except EspeakError as exc:
        return str(exc)
    return None


def synthesize(text: str, voice: Voice, lead: float = 0.03, tail: float = 0.06) -> Utterance:
    """Speak ``text`` with ``voice``: 16 kHz float32 audio and phone timings (seconds).

    Leading and trailing pauses are trimmed, keeping ``lead``/``tail`` seconds around the first
    and last spoken phoneme; every pause phoneme inside is reported as :data:`PAUSE`.
    """
    sr, wave, events = _synth_raw(text, voice)
    bounds = [max(0, min(s, len(wave))) for s, _ in events] + [len(wave)]
    phones = []
    for (_, sym), a, b in zip(events, bounds[:-1], bounds[1:], strict=True):
        sym = PAUSE if sym.startswith("_") else sym
        if b > a and sym:
            phones.append((sym, a, b))
    spoken = [p for p in phones if p[0] != PAUSE]
    if not spoken:
        raise EspeakError(f"espeak-ng produced no phonemes for {text!r}")
    first = max(0, spoken[0][1] - int(lead * sr))
    last = min(len(wave), spoken[-1][2] + int(tail * sr))
    audio = wave[first:last].astype(np.float32) / 32768.0
    audio = soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32)
    out = []
    for sym, a, b in phones:
        a, b = max(a, first), min(b, last)
        if b > a:
            out.append(Phone(sym, (a - first) / sr, (b - first) / sr))
    return Utterance(audio=audio, phones=out, text=text, voice=voice)


TRAIN_LANGUAGES = ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-x-gbcwmd")
HELDOUT_LANGUAGES = ("en-gb-scotland", "en-us-nyc", "en-gb-x-gbclan")
TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt", "klatt2")
HELDOUT_VARIANTS = ("m7", "m8", "f5", "klatt3", "klatt4")
FEMALE_VARIANTS = frozenset({"f1", "f2", "f3", "f4", "f5"})


def sample_voice(rng: np.random.Generator, split: str = "train") -> Voice:
    """A random voice of the split: held-out languages and variants never occur in train."""
    langs, variants = ((HELDOUT_LANGUAGES, HELDOUT_VARIANTS) if split == "heldout"
                       else (TRAIN_LANGUAGES, TRAIN_VARIANTS))
    return Voice(
        language=str(langs[int(rng.integers(len(langs)))]),
        variant=str(variants[int(rng.integers(len(variants)))]),
        rate=int(rng.integers(130, 241)),
        pitch=int(rng.integers(25, 76)),
        pitch_range=int(rng.integers(30, 81)),
    )
