"""WavLM (Base+) encoder: transformers' ``WavLMModel`` loaded from the original or the HF format.

KeyFace feeds the zero-padded clip (even frame count) in one pass and takes the last layer's
output (2F-1 vectors at 50 Hz), resampled by nearest to 2 vectors per frame: frame 0 = (y0, y0),
frame k = (y[2k-1], y[2k]).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import WavLMConfig, WavLMModel

from engine.audio.alignment import nearest_per_frame, num_frames, pad_to_frames
from engine.audio.weights import (
    build_loaded,
    fit_masked_spec_embed,
    load_tensor_file,
    original_checkpoint,
    rename_legacy_weight_norm,
    require_path,
)
from engine.errors import WeightsError

WAVLM_FILE = "WavLM-Base+.pt"
WHAT = "WavLM"
BASE_CONV_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"

# Original (microsoft/unilm) key fragment → transformers WavLMModel key fragment.
_RENAMES = (
    ("post_extract_proj.", "feature_projection.projection."),
    ("encoder.pos_conv.0.weight_g", "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    ("encoder.pos_conv.0.weight_v", "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    ("encoder.pos_conv.0.bias", "encoder.pos_conv_embed.conv.bias"),
    (".self_attn.grep_linear.", ".attention.gru_rel_pos_linear."),
    (".self_attn.grep_a", ".attention.gru_rel_pos_const"),
    (".self_attn.relative_attention_bias.", ".attention.rel_attn_embed."),
    (".self_attn_layer_norm.", ".layer_norm."),
    (".self_attn.", ".attention."),
    (".fc1.", ".feed_forward.intermediate_dense."),
    (".fc2.", ".feed_forward.output_dense."),
)


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """Evaluate a ``conv_feature_layers`` string such as ``"[(512,10,5)] + [(512,3,2)] * 4"`` safely."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported syntax: {ast.dump(node)}")

    try:
        layers = ev(ast.parse(spec, mode="eval"))
        return [(int(c), int(k), int(s)) for c, k, s in layers]
    except (ValueError, TypeError, SyntaxError) as exc:
        raise WeightsError(f"{WHAT}: bad conv_feature_layers {spec!r}: {exc}") from exc


# Defaults of the original ``WavLMConfig``: fields absent from a checkpoint's cfg take these values.
ORIGINAL_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_norm_first": False,
    "conv_feature_layers": BASE_CONV_LAYERS,
    "conv_bias": False,
    "normalize": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "relative_position_embedding": False,
    "num_buckets": 320,
    "max_distance": 1280,
    "gru_rel_pos": False,
}


def config_from_original(cfg: dict[str, Any]) -> WavLMConfig:
    """Translate an original WavLM ``cfg`` dict (missing fields: original defaults) to ``WavLMConfig``."""
    c = {**ORIGINAL_DEFAULTS, **cfg}
    if not c["relative_position_embedding"] or not c["gru_rel_pos"]:
        raise WeightsError(f"{WHAT}: transformers' WavLM needs relative_position_embedding and gru_rel_pos")
    if c["extractor_mode"] not in ("default", "layer_norm"):
        raise WeightsError(f"{WHAT}: unknown extractor_mode {c['extractor_mode']!r}")
    conv = parse_conv_layers(c["conv_feature_layers"])
    try:
        return WavLMConfig(
            hidden_size=int(c["encoder_embed_dim"]),
            num_hidden_layers=int(c["encoder_layers"]),
            num_attention_heads=int(c["encoder_attention_heads"]),
            intermediate_size=int(c["encoder_ffn_embed_dim"]),
            hidden_act=c["activation_fn"],
            conv_dim=[ch for ch, _, _ in conv],
            conv_kernel=[k for _, k, _ in conv],
            conv_stride=[st for _, _, st in conv],
            conv_bias=bool(c["conv_bias"]),
            feat_extract_norm="group" if c["extractor_mode"] == "default" else "layer",
            num_conv_pos_embeddings=int(c["conv_pos"]),
            num_conv_pos_embedding_groups=int(c["conv_pos_groups"]),
            num_buckets=int(c["num_buckets"]),
            max_bucket_distance=int(c["max_distance"]),
            do_stable_layer_norm=bool(c["layer_norm_first"]),
            layer_norm_eps=1e-5,
        )
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{WHAT}: bad checkpoint cfg: {exc}") from exc


def convert_original_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename original unilm WavLM keys to transformers ``WavLMModel`` keys."""
    out = {}
    for key, value in state.items():
        new = key
        if key == "mask_emb":
            new = "masked_spec_embed"
        elif key.startswith("feature_extractor.conv_layers."):
            _, _, i, *rest = key.split(".")
            tail = ".".join(rest)
            if tail.startswith("0."):  # the Conv1d
                new = f"feature_extractor.conv_layers.{i}.conv.{tail[2:]}"
            elif tail.startswith(("2.1.", "2.")):  # LayerNorm (layer_norm mode) / GroupNorm (default)
                new = f"feature_extractor.conv_layers.{i}.layer_norm.{rest[-1]}"
        elif key.startswith("layer_norm."):
            new = "feature_projection." + key
        else:
            for old, repl in _RENAMES:
                new = new.replace(old, repl)
        out[new] = value
    return out


def _normalize_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep the ``wavlm.*`` part of a ``WavLMFor*`` file (else everything); map legacy names."""
    if any(key.startswith("wavlm.") for key in state):
        state = {k[len("wavlm.") :]: v for k, v in state.items() if k.startswith("wavlm.")}
    return {rename_legacy_weight_norm(k): v for k, v in state.items()}


class WavLMEncoder(nn.Module):
    """KeyFace WavLM features: ``encode(wave) -> (ceil(N/640), 2, D)``."""

    name = "wavlm"

    def __init__(self, model: WavLMModel, normalize: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        self.normalize = normalize
        self.dim = model.config.hidden_size

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_original(cls, cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> WavLMEncoder:
        """Build from an original ``cfg`` dict and state dict (unilm key names)."""
        config = config_from_original(cfg)
        converted = fit_masked_spec_embed(convert_original_state_dict(state), config)
        model = build_loaded(lambda: WavLMModel(config), converted, WHAT)
        return cls(model, normalize=bool(cfg.get("normalize", False)))

    @classmethod
    def from_hf(cls, directory: str | Path, trust_pickle: bool = False) -> WavLMEncoder:
        """Build from a transformers folder: ``config.json`` + ``model.safetensors``/``pytorch_model.bin``."""
        directory = require_path(directory, WHAT, directory=True)
        config_path = require_path(directory / "config.json", WHAT)
        try:
            config = WavLMConfig(**json.loads(config_path.read_text()))
        except (ValueError, TypeError) as exc:
            raise WeightsError(f"{WHAT}: bad {config_path}: {exc}") from exc
        weights = directory / "model.safetensors"
        if not weights.is_file():
            weights = directory / "pytorch_model.bin"
        state = _normalize_hf_state_dict(load_tensor_file(weights, WHAT, trust_pickle))
        fit_masked_spec_embed(state, config)
        return cls(build_loaded(lambda: WavLMModel(config), state, WHAT), normalize=False)

    @classmethod
    def from_path(cls, path: str | Path, trust_pickle: bool = False) -> WavLMEncoder:
        """Load an original ``.pt`` checkpoint or a transformers folder."""
        path = Path(path)
        if path.is_dir():
            return cls.from_hf(path, trust_pickle)
        cfg, state = original_checkpoint(path, WHAT, trust_pickle)
        return cls.from_original(cfg, state)

    # ---------------------------------------------------------------- inference
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def hidden_states(self, padded: torch.Tensor) -> torch.Tensor:
        """Last-layer output (T', D) for a 1-D model input (already padded)."""
        x = padded.to(self.device, torch.float32)[None]
        if self.normalize:
            x = F.layer_norm(x, x.shape)
        return self.model(x).last_hidden_state[0]

    def encode_reference(self, wave: torch.Tensor) -> torch.Tensor:
        """The reference embedding (F_w, 2, D), including the extra zero frame when F is odd."""
        padded = pad_to_frames(wave, even=True)
        return nearest_per_frame(self.hidden_states(padded), num_frames(padded.shape[-1]))

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """(ceil(N/640), 2, D) per-frame embedding (reference with the padding frame trimmed)."""
        if wave.shape[-1] == 0:
            return torch.zeros(0, 2, self.dim, device=self.device)
        return self.encode_reference(wave)[: num_frames(wave.shape[-1])]


def base_plus_config() -> dict[str, Any]:
    """The WavLM Base+ ``cfg`` as transcribed (fixture README §1.7), for random-weight benchmarks."""
    return {
        **ORIGINAL_DEFAULTS,
        "relative_position_embedding": True,
        "max_distance": 800,
        "gru_rel_pos": True,
    }


def random_wavlm(cfg: dict[str, Any] | None = None) -> WavLMEncoder:
    """A randomly initialised WavLM encoder (Base+ size by default), for timing."""
    cfg = cfg or base_plus_config()
    return WavLMEncoder(WavLMModel(config_from_original(cfg)), normalize=bool(cfg.get("normalize", False)))
