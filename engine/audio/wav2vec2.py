"""wav2vec2-base-960h encoder: transformers' ``Wav2Vec2Model`` loaded from a hub-format folder.

KeyFace normalises the whole clip ``(x − mean) / sqrt(var_unbiased + 1e-7)`` before zero-padding to
a multiple of 640 (no even-frame padding), takes ``last_hidden_state`` (2F−1 vectors), appends one
zero vector and views (F, 2, D): frame k = (h[2k], h[2k+1]), the last frame's second vector is zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from engine.audio.alignment import num_frames, pad_to_frames, pairs_per_frame
from engine.audio.weights import (
    build_loaded,
    fit_masked_spec_embed,
    load_tensor_file,
    rename_legacy_weight_norm,
    require_path,
)
from engine.errors import WeightsError

WAV2VEC2_DIR = "wav2vec2-base-960h"
WHAT = "wav2vec2"
SPLIT_SAMPLES = 16_000 * 1000  # the reference encodes longer inputs in pieces of at least this size
_HEAD_PREFIXES = ("lm_head.", "dropout.", "projector.", "classifier.", "quantizer.", "project_")


def split_sizes(total: int, min_last: int = SPLIT_SAMPLES) -> list[int]:
    """Piece lengths of the reference ``calculate_splits`` (one piece up to ``min_last``)."""
    if total <= min_last:
        return [total]
    count = (total - min_last) // min_last + 1
    base = (total - min_last) // count
    sizes = [base] * (count - 1) + [total - base * (count - 1)]
    return sizes


def normalize(wave: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (unbiased) variance over the whole clip, epsilon 1e-7 (a 1-sample clip → 0)."""
    var = wave.var() if wave.numel() > 1 else wave.new_zeros(())
    return (wave - wave.mean()) / torch.sqrt(var + 1e-7)


def convert_hub_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the ``wav2vec2.*`` weights of a ``Wav2Vec2ForCTC`` file, renamed for ``Wav2Vec2Model``."""
    prefixed = any(k.startswith("wav2vec2.") for k in state)
    out = {}
    for key, value in state.items():
        if prefixed:
            if not key.startswith("wav2vec2."):
                continue
            key = key[len("wav2vec2.") :]
        elif key.startswith(_HEAD_PREFIXES):
            continue
        out[rename_legacy_weight_norm(key)] = value
    return out


class Wav2Vec2Encoder(nn.Module):
    """KeyFace wav2vec2 features: ``encode(wave) -> (ceil(N/640), 2, D)``."""

    name = "wav2vec2"

    def __init__(self, model: Wav2Vec2Model) -> None:
        super().__init__()
        self.model = model.eval()
        self.dim = model.config.hidden_size

    @classmethod
    def from_config(cls, config: Wav2Vec2Config, state: dict[str, torch.Tensor]) -> Wav2Vec2Encoder:
        """Build from a config and a hub state dict (``wav2vec2.*`` keys, legacy weight-norm names ok)."""
        converted = fit_masked_spec_embed(convert_hub_state_dict(state), config)
        return cls(build_loaded(lambda: Wav2Vec2Model(config), converted, WHAT))

    @classmethod
    def from_path(cls, directory: str | Path, trust_pickle: bool = False) -> Wav2Vec2Encoder:
        """Load a hub folder: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``)."""
        directory = require_path(directory, WHAT, directory=True)
        config_path = require_path(directory / "config.json", WHAT)
        try:
            config = Wav2Vec2Config(**json.loads(config_path.read_text()))
        except (ValueError, TypeError) as exc:
            raise WeightsError(f"{WHAT}: bad {config_path}: {exc}") from exc
        weights = directory / "model.safetensors"
        if not weights.is_file():
            weights = directory / "pytorch_model.bin"
        if not weights.is_file():
            raise WeightsError(f"{WHAT}: no model.safetensors or pytorch_model.bin in {directory}")
        return cls.from_config(config, load_tensor_file(weights, WHAT, trust_pickle))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def hidden_states(self, model_input: torch.Tensor, split_samples: int = SPLIT_SAMPLES) -> torch.Tensor:
        """``last_hidden_state`` (T', D) of a 1-D normalised, padded input, encoded in pieces
        (``calculate_splits``) when longer than ``split_samples``."""
        x = model_input.to(self.device, torch.float32)
        pieces = torch.split(x, split_sizes(x.shape[-1], split_samples))
        return torch.cat([self.model(p[None]).last_hidden_state[0] for p in pieces])

    def encode_reference(self, wave: torch.Tensor) -> torch.Tensor:
        """The reference embedding (F, 2, D); the last frame's second vector is zero."""
        return pairs_per_frame(self.hidden_states(pad_to_frames(normalize(wave.float()))))

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """(ceil(N/640), 2, D) per-frame embedding (same as the reference below 1000 s)."""
        if wave.shape[-1] == 0:
            return torch.zeros(0, 2, self.dim, device=self.device)
        return self.encode_reference(wave)[: num_frames(wave.shape[-1])]


def base_960h_config() -> Wav2Vec2Config:
    """The facebook/wav2vec2-base-960h architecture (for random-weight benchmarks)."""
    return Wav2Vec2Config(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        conv_dim=[512] * 7,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        conv_bias=False,
        vocab_size=32,
    )


def random_wav2vec2(config: Wav2Vec2Config | None = None) -> Wav2Vec2Encoder:
    """A randomly initialised wav2vec2 encoder (base size by default), for timing."""
    return Wav2Vec2Encoder(Wav2Vec2Model(config or base_960h_config()))
