"""The KeyFace audio front-end: three encoders loaded from one weights folder.

Folder layout (names as the KeyFace release uses them)::

    <weights>/WavLM-Base+.pt                                      original unilm checkpoint
    <weights>/BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt     original unilm checkpoint
    <weights>/wav2vec2-base-960h/{config.json, model.safetensors | pytorch_model.bin}

``WavLM-Base+.pt`` may instead be a transformers folder (``config.json`` + weights) of that name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from engine.audio.alignment import interpolation_features, keyframe_features
from engine.audio.beats import BEATS_FILE, BEATsEncoder
from engine.audio.streaming import StreamingConfig, StreamingExtractor
from engine.audio.wav2vec2 import WAV2VEC2_DIR, Wav2Vec2Encoder
from engine.audio.wavlm import WAVLM_FILE, WavLMEncoder
from engine.errors import WeightsError


@dataclass
class AudioEmbeddings:
    """Per-frame model inputs, both (F, 2, D_a + D_beats) = (F, 2, 1536) at full size."""

    keyframe: torch.Tensor
    """WavLM ‖ BEATs, for the keyframe model."""
    interpolation: torch.Tensor
    """wav2vec2 ‖ BEATs, for the interpolation model."""


class KeyFaceAudioFeatures:
    """Offline (reference) and streaming KeyFace audio embeddings."""

    def __init__(self, wavlm: WavLMEncoder, beats: BEATsEncoder, wav2vec2: Wav2Vec2Encoder) -> None:
        self.wavlm, self.beats, self.wav2vec2 = wavlm, beats, wav2vec2

    @classmethod
    def from_folder(
        cls, folder: str | Path, device: str | torch.device = "cpu", trust_pickle: bool = False
    ) -> KeyFaceAudioFeatures:
        """Load the three encoders from ``folder`` (see the module docstring for the layout).

        ``trust_pickle`` allows full unpickling of ``.pt`` files (only for files you trust).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise WeightsError(f"audio weights folder not found: {folder}")
        missing = [n for n in (WAVLM_FILE, BEATS_FILE, WAV2VEC2_DIR) if not (folder / n).exists()]
        if missing:
            raise WeightsError(f"audio weights missing in {folder}: {', '.join(missing)}")
        features = cls(
            WavLMEncoder.from_path(folder / WAVLM_FILE, trust_pickle),
            BEATsEncoder.from_path(folder / BEATS_FILE, trust_pickle),
            Wav2Vec2Encoder.from_path(folder / WAV2VEC2_DIR, trust_pickle),
        )
        return features.to(device)

    def to(self, device: str | torch.device) -> KeyFaceAudioFeatures:
        for encoder in (self.wavlm, self.beats, self.wav2vec2):
            encoder.to(device)
        return self

    def encode(self, wave: torch.Tensor) -> AudioEmbeddings:
        """Reference embeddings of one utterance (1-D float32, 16 kHz mono), F = ceil(N/640) frames."""
        beats = self.beats.encode(wave)
        return AudioEmbeddings(
            keyframe=keyframe_features(self.wavlm.encode(wave), beats),
            interpolation=interpolation_features(self.wav2vec2.encode(wave), beats),
        )

    def stream(self, config: StreamingConfig | None = None) -> KeyFaceAudioStream:
        """A streaming extractor producing both embeddings incrementally."""
        return KeyFaceAudioStream(self, config)


class KeyFaceAudioStream:
    """Streams WavLM, BEATs and wav2vec2 with one shared configuration."""

    def __init__(self, features: KeyFaceAudioFeatures, config: StreamingConfig | None = None) -> None:
        self.config = config or StreamingConfig()
        self._wavlm = StreamingExtractor(features.wavlm, self.config)
        self._beats = StreamingExtractor(features.beats, self.config)
        self._wav2vec2 = StreamingExtractor(features.wav2vec2, self.config)

    @property
    def lookahead_ms(self) -> float:
        return self.config.lookahead_ms

    @property
    def left_context_ms(self) -> float:
        return self.config.left_context_ms

    def push(self, samples: torch.Tensor) -> AudioEmbeddings:
        """Add 16 kHz samples; return the frames that became final."""
        wavlm, beats = self._wavlm.push(samples), self._beats.push(samples)
        return self._combine(wavlm, beats, self._wav2vec2.push(samples))

    def flush(self) -> AudioEmbeddings:
        """End of utterance: the remaining frames; the stream is then ready for the next one."""
        return self._combine(self._wavlm.flush(), self._beats.flush(), self._wav2vec2.flush())

    @staticmethod
    def _combine(wavlm: torch.Tensor, beats: torch.Tensor, wav2vec2: torch.Tensor) -> AudioEmbeddings:
        return AudioEmbeddings(keyframe_features(wavlm, beats), interpolation_features(wav2vec2, beats))
