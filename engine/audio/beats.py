"""BEATs (iter3+ AS2M fine-tuned) audio encoder, our own port; loads the original ``.pt`` checkpoint.

Pipeline: waveform × 2¹⁵ → Kaldi fbank (128 mel) → (fbank − 15.41663) / (2·6.55582) → 16×16
patches (time-major tokens, 8 mel bands per 160 ms) → LayerNorm → projection → deep-norm post-LN
transformer with a shared, gated relative position bias. KeyFace takes the last layer's tokens
(no predictor) and resamples them by nearest to 2 vectors per frame along the token axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.audio.alignment import nearest_per_frame, num_frames, pad_to_frames
from engine.audio.base import SAMPLES_PER_FRAME
from engine.audio.fbank import kaldi_fbank
from engine.audio.weights import build_loaded, original_checkpoint
from engine.errors import WeightsError

BEATS_FILE = "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"
WHAT = "BEATs"
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
MIN_FRAMES = 6  # shortest even clip giving one 16-row fbank patch (4·6 − 2 = 22 rows)


@dataclass
class BEATsConfig:
    """The fields of the original ``BEATsConfig`` that shape the network, with its defaults
    (which apply to fields a checkpoint's cfg omits; unknown keys are ignored)."""

    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> BEATsConfig:
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in cfg.items() if k in known})
        if config.layer_norm_first or not config.relative_position_embedding or not config.gru_rel_pos:
            raise WeightsError(
                f"{WHAT}: only post-LN with gated relative position bias is implemented "
                f"(layer_norm_first={config.layer_norm_first}, "
                f"relative_position_embedding={config.relative_position_embedding}, "
                f"gru_rel_pos={config.gru_rel_pos})"
            )
        if config.input_patch_size <= 0:
            raise WeightsError(f"{WHAT}: cfg needs a positive input_patch_size (got {config.input_patch_size})")
        if config.activation_fn != "gelu":
            raise WeightsError(f"{WHAT}: unsupported activation_fn {config.activation_fn!r}")
        return config


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5-style bidirectional buckets (length, length) for key − query offsets."""
    pos = torch.arange(length)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    scaled = torch.log(rel.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    large = exact + (scaled * (half - exact)).long()
    large = large.clamp(max=half - 1)
    return buckets + torch.where(rel < exact, rel, large)


class WeightNormConv1d(nn.Module):
    """Conv1d with weight norm over dim 2 (``weight_g``/``weight_v`` as in the checkpoint)."""

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * 0.02)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, weight, self.bias, padding=weight.shape[-1] // 2, groups=self.groups)


class RelativeBias(nn.Module):
    """The bucketed relative position table, one module shared by all layers."""

    def __init__(self, num_buckets: int, heads: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_buckets, heads))


class Attention(nn.Module):
    """Self-attention with the query-gated relative position bias of BEATs."""

    def __init__(self, dim: int, heads: int, relative_bias: RelativeBias) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.grep_linear = nn.Linear(dim // heads, 8)
        self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))
        self.relative_attention_bias = relative_bias

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        gate_a, gate_b = torch.sigmoid(self.grep_linear(q).view(b, self.heads, t, 2, 4).sum(-1)).chunk(2, -1)
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=gate * position_bias)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))


class Layer(nn.Module):
    """Post-LN transformer layer with deep-norm residual scaling."""

    def __init__(self, cfg: BEATsConfig, relative_bias: RelativeBias) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.self_attn = Attention(dim, cfg.encoder_attention_heads, relative_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.alpha = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, position_bias))
        return self.final_layer_norm(x * self.alpha + self.fc2(F.gelu(self.fc1(x))))


class Encoder(nn.Module):
    """Positional conv + LayerNorm + layers; the relative bias is computed once per forward."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(WeightNormConv1d(dim, cfg.conv_pos, cfg.conv_pos_groups))
        self.layer_norm = nn.LayerNorm(dim)
        shared = RelativeBias(cfg.num_buckets, cfg.encoder_attention_heads)
        self.layers = nn.ModuleList(Layer(cfg, shared) for _ in range(cfg.encoder_layers))
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.pos_conv(x.transpose(1, 2))[:, :, :-1]  # "SamePad": drop the extra step
        x = self.layer_norm(x + F.gelu(conv).transpose(1, 2))
        buckets = relative_position_buckets(x.shape[1], self.num_buckets, self.max_distance)
        table = self.layers[0].self_attn.relative_attention_bias.weight
        position_bias = table[buckets.to(x.device)].permute(2, 0, 1)[None]  # (1, H, T, T)
        for layer in self.layers:
            x = layer(x, position_bias)
        return x


class BEATs(nn.Module):
    """The BEATs network with original state-dict names (``predictor`` only if fine-tuned)."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, p, stride=p, bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        dim = cfg.encoder_embed_dim
        self.post_extract_proj = nn.Linear(cfg.embed_dim, dim) if cfg.embed_dim != dim else None
        self.encoder = Encoder(cfg)
        self.predictor = nn.Linear(dim, cfg.predictor_class) if cfg.finetuned_model else None

    @staticmethod
    def preprocess(wave: torch.Tensor) -> torch.Tensor:
        """Normalised fbank (T_fb, 128) of a 1-D waveform in [-1, 1)."""
        return (kaldi_fbank(wave * 2**15) - FBANK_MEAN) / (2 * FBANK_STD)

    def tokens(self, fbank: torch.Tensor) -> torch.Tensor:
        """Last-layer tokens (L, D), L = 8·⌊T_fb/16⌋, time-major."""
        x = self.patch_embedding(fbank[None, None])  # (1, E, T/16, 8)
        x = self.layer_norm(x.flatten(2).transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(x)[0]

    def class_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """AudioSet probabilities ``sigmoid(mean_t predictor(x))`` (not on the KeyFace path)."""
        if self.predictor is None:
            raise ValueError("this BEATs checkpoint has no predictor")
        return torch.sigmoid(self.predictor(tokens).mean(0))


class BEATsEncoder(nn.Module):
    """KeyFace BEATs features: ``encode(wave) -> (ceil(N/640), 2, D)``."""

    name = "beats"

    def __init__(self, model: BEATs) -> None:
        super().__init__()
        self.model = model.eval()
        self.dim = model.cfg.encoder_embed_dim

    @classmethod
    def from_original(cls, cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> BEATsEncoder:
        """Build from an original ``cfg`` dict and state dict."""
        config = BEATsConfig.from_dict(cfg)
        return cls(build_loaded(lambda: BEATs(config), state, WHAT))

    @classmethod
    def from_path(cls, path: str | Path, trust_pickle: bool = False) -> BEATsEncoder:
        """Load an original ``{'cfg', 'model'[, 'label_dict']}`` checkpoint."""
        cfg, state = original_checkpoint(path, WHAT, trust_pickle)
        return cls.from_original(cfg, state)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def tokens(self, padded: torch.Tensor) -> torch.Tensor:
        """Last-layer tokens (L, D) of a 1-D model input (already padded)."""
        return self.model.tokens(self.model.preprocess(padded.to(self.device, torch.float32)))

    def encode_reference(self, wave: torch.Tensor) -> torch.Tensor:
        """The reference embedding (F_w, 2, D), F_w = F rounded up to even.

        Clips shorter than 6 frames (240 ms) give no fbank patch in the reference (it fails);
        here they are zero-padded to 6 frames first.
        """
        padded = pad_to_frames(wave, even=True)
        frames = num_frames(padded.shape[-1])
        if frames < MIN_FRAMES:
            padded = F.pad(padded, (0, (MIN_FRAMES - frames) * SAMPLES_PER_FRAME))
            return nearest_per_frame(self.tokens(padded), MIN_FRAMES)[:frames]
        return nearest_per_frame(self.tokens(padded), frames)

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """(ceil(N/640), 2, D) per-frame embedding (reference with the padding frame trimmed)."""
        if wave.shape[-1] == 0:
            return torch.zeros(0, 2, self.dim, device=self.device)
        return self.encode_reference(wave)[: num_frames(wave.shape[-1])]


CPT2_CONFIG: dict[str, Any] = {
    "input_patch_size": 16,
    "deep_norm": True,
    "relative_position_embedding": True,
    "max_distance": 800,
    "gru_rel_pos": True,
    "finetuned_model": True,
    "layer_wise_gradient_decay_ratio": 0.6,
}
"""The cpt2 ``cfg`` as transcribed (fixture README §1.7); other fields at their defaults."""


def random_beats(cfg: dict[str, Any] | None = None) -> BEATsEncoder:
    """A randomly initialised BEATs encoder (cpt2 size by default), for timing."""
    return BEATsEncoder(BEATs(BEATsConfig.from_dict(cfg or CPT2_CONFIG)))
