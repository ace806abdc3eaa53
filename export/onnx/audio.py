"""Audio-encoder graphs: the log-mel front-end and, when configured, WavLM / wav2vec2 / BEATs.

``audio_logmel`` maps a wave of ``F·640`` samples to ``(F, 2, n_mels)`` features exactly as
:class:`engine.audio.logmel.LogMelEncoder` does (the FFT becomes a windowed DFT matmul, so the
graph needs no DFT op). The transformer encoders are exported as their network core (padded wave
or fbank → last hidden states); padding and frame alignment stay in PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from engine.audio.base import SAMPLES_PER_FRAME
from engine.audio.logmel import stack_context
from engine.backends.manifest import TensorInfo, combined_hash, module_hash
from engine.backends.profiles import Profile
from engine.bundle import ModelBundle

if TYPE_CHECKING:
    from .graphs import GraphSpec


class LogMelGraph(nn.Module):
    """Exportable :class:`~engine.audio.logmel.LogMelEncoder`: wave ``(F·640,)`` → ``(F, 2, dim)``."""

    def __init__(self, n_mels: int = 80, **options: float | int | None) -> None:
        super().__init__()
        from engine.audio.logmel import HOP, LogMelEncoder

        enc = LogMelEncoder(n_mels, **options)  # type: ignore[arg-type]
        self.n_mels, self.hop, self.pad, self.win = n_mels, HOP, enc.pad, enc.win_length
        self.context, self.dim = enc.context, enc.dim
        n = torch.arange(enc.win_length, dtype=torch.float64)[:, None]
        k = torch.arange(enc.n_fft // 2 + 1, dtype=torch.float64)[None]
        angle = 2.0 * math.pi * n * k / enc.n_fft
        window = enc._window.double()[:, None]
        self.register_buffer("cos", (window * torch.cos(angle)).float())
        self.register_buffer("sin", (window * torch.sin(angle)).float())
        self.register_buffer("fbank", enc._fbank.clone())

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave.shape[0] // SAMPLES_PER_FRAME
        padded = F.pad(wave[None], (self.pad, self.pad))[0]
        starts = torch.arange(2 * frames, device=wave.device)[:, None] * self.hop
        windows = padded[starts + torch.arange(self.win, device=wave.device)[None]]
        power = (windows @ self.cos).square() + (windows @ self.sin).square()
        mel = power @ self.fbank
        feats = (torch.log10(mel.clamp_min(1e-10)) + 4.0) / 4.0
        return stack_context(feats.reshape(frames, 2, self.n_mels), self.context)


def _logmel(bundle: ModelBundle, profile: Profile) -> GraphSpec:
    from .graphs import GraphSpec

    options = dict(bundle.audio.get("logmel", {}))
    module = LogMelGraph(**options)
    lo, opt, hi = profile.audio_frames
    dims = {"samples": (lo * SAMPLES_PER_FRAME, opt * SAMPLES_PER_FRAME, hi * SAMPLES_PER_FRAME)}
    return GraphSpec(
        "audio_logmel", module,
        [TensorInfo("wave", ("samples",))],
        [TensorInfo("features", ("frames", 2, module.dim))],
        dims, {"samples": max(lo, 4) * SAMPLES_PER_FRAME}, "fp32",
        combined_hash("audio_logmel", repr(sorted(options.items()))),
        {"n_mels": module.n_mels, "context": module.context, "frame_samples": SAMPLES_PER_FRAME},
        example=lambda t, shape: torch.randn(shape) * 0.1,
    )


class _HiddenStates(nn.Module):
    """``model(x).last_hidden_state`` of a transformers-style audio model."""

    def __init__(self, model: nn.Module, normalize: bool = False) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave[None]
        if self.normalize:
            x = F.layer_norm(x, x.shape)
        return self.model(x).last_hidden_state[0]


class _BeatsTokens(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.model.tokens(fbank)


def load_audio_encoder(name: str, root: Path) -> nn.Module:
    """WavLM / wav2vec2 / BEATs from a weights folder laid out as the KeyFace release."""
    if name == "wavlm":
        from engine.audio.wavlm import WAVLM_FILE, WavLMEncoder

        return WavLMEncoder.from_path(root / WAVLM_FILE)
    if name == "wav2vec2":
        from engine.audio.wav2vec2 import WAV2VEC2_DIR, Wav2Vec2Encoder

        return Wav2Vec2Encoder.from_path(root / WAV2VEC2_DIR)
    from engine.audio.beats import BEATS_FILE, BEATsEncoder

    return BEATsEncoder.from_path(root / BEATS_FILE)


def transformer_graph(name: str, encoder: nn.Module, profile: Profile) -> GraphSpec:
    """Graph of an audio transformer encoder (``WavLMEncoder``, ``Wav2Vec2Encoder``, ``BEATsEncoder``)."""
    from .graphs import GraphSpec

    lo, opt, hi = profile.audio_frames
    if name == "beats":
        module: nn.Module = _BeatsTokens(encoder.model)
        inputs = [TensorInfo("fbank", ("fbank_frames", 128))]
        fbank_frames = lambda n: 1 + (n * SAMPLES_PER_FRAME - 400) // 160  # noqa: E731
        dims = {"fbank_frames": (fbank_frames(max(lo, 6)), fbank_frames(opt), fbank_frames(hi))}
        trace = {"fbank_frames": fbank_frames(max(lo, 6))}
    else:
        module = _HiddenStates(encoder.model, getattr(encoder, "normalize", False))
        inputs = [TensorInfo("wave", ("samples",))]
        dims = {"samples": (max(lo, 2) * SAMPLES_PER_FRAME, opt * SAMPLES_PER_FRAME, hi * SAMPLES_PER_FRAME)}
        trace = {"samples": max(lo, 2) * SAMPLES_PER_FRAME}
    return GraphSpec(
        f"audio_{name}", module.eval(), inputs, [TensorInfo("hidden", ("tokens", int(encoder.dim)))],
        dims, trace, "fp32", combined_hash(f"audio_{name}", module_hash(module)),
    )


def audio_graphs(bundle: ModelBundle, profile: Profile) -> dict[str, Callable[[], GraphSpec]]:
    """Factories for the audio encoders the bundle uses."""
    names = set(bundle.audio.get("keyframe", [])) | set(bundle.audio.get("interpolation", []))
    out: dict[str, Callable[[], GraphSpec]] = {}
    if "logmel" in names:
        out["audio_logmel"] = lambda: _logmel(bundle, profile)
    for name in ("wavlm", "wav2vec2", "beats"):
        if name in names:
            out[f"audio_{name}"] = lambda name=name: _transformer(name, bundle, profile)  # type: ignore[misc]
    return out


def _transformer(name: str, bundle: ModelBundle, profile: Profile) -> GraphSpec:
    if bundle.root is None:
        raise ValueError(f"the {name} encoder needs a weights folder")
    return transformer_graph(name, load_audio_encoder(name, bundle.root), profile)
