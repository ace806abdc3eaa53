"""One model description (dataclasses) that drives every network size.

The released KeyFace networks, the tiny golden-fixture networks and our demo avatar model are all
instances of :class:`UNetConfig`; nothing else in the engine hard-codes a channel count.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ModelKind = Literal["keyframe", "interpolation"]


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of the SVD-style VideoUNet used by both KeyFace stages."""

    in_channels: int = 8
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    audio_dim: int = 1024
    adm_in_channels: int = 512
    """Width of the emotion ``vector`` input (valence ‖ arousal embeddings); 0 = none."""

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def label_in_channels(self) -> int:
        """Input width of ``label_emb``: emotion vector ‖ per-frame audio vector."""
        return self.adm_in_channels + self.audio_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown UNetConfig fields: {sorted(unknown)}")
        kwargs = dict(data)
        for key in ("channel_mult", "attention_resolutions"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclass(frozen=True)
class VAEConfig:
    """kl-f8 autoencoder: encoder (sgm ``Encoder``) and SVD temporal decoder."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    in_channels: int = 3
    out_ch: int = 3
    scale_factor: float = 0.18215
    temporal_decoder: bool = True
    """SVD's temporal decoder (True) or a purely per-frame decoder (False, demo models)."""

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        kwargs = dict(data)
        if "ch_mult" in kwargs:
            kwargs["ch_mult"] = tuple(kwargs["ch_mult"])
        return cls(**kwargs)


@dataclass(frozen=True)
class AudioProjectionConfig:
    """The conditioner's audio embedder: mean of the 2 sub-frame vectors, then Linear."""

    audio_dim: int = 1536
    linear_dim: int = 1024


@dataclass(frozen=True)
class StageConfig:
    """Everything that describes one KeyFace stage (keyframe or interpolation)."""

    kind: ModelKind
    unet: UNetConfig
    audio: AudioProjectionConfig = field(default_factory=AudioProjectionConfig)
    emotion_dim: int = 256
    """Per-scalar sinusoidal width of valence / arousal (keyframe only)."""
    latent_size: int = 64
    """Latent height = width the stage runs at (image size / VAE factor)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "unet": self.unet.to_dict(),
            "audio": dataclasses.asdict(self.audio),
            "emotion_dim": self.emotion_dim,
            "latent_size": self.latent_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageConfig:
        return cls(
            kind=data["kind"],
            unet=UNetConfig.from_dict(data["unet"]),
            audio=AudioProjectionConfig(**data.get("audio", {})),
            emotion_dim=data.get("emotion_dim", 256),
            latent_size=data.get("latent_size", 64),
        )


def keyframe_unet_full() -> UNetConfig:
    """The released keyframe VideoUNet (1.53 B parameters)."""
    return UNetConfig(in_channels=8, adm_in_channels=512)


def interpolation_unet_full() -> UNetConfig:
    """The released interpolation VideoUNet (and its autoguidance "bad" twin)."""
    return UNetConfig(in_channels=9, adm_in_channels=0)


def keyframe_stage_full() -> StageConfig:
    return StageConfig(kind="keyframe", unet=keyframe_unet_full())


def interpolation_stage_full() -> StageConfig:
    return StageConfig(kind="interpolation", unet=interpolation_unet_full())


def tiny_unet(kind: ModelKind) -> UNetConfig:
    """The tiny configuration of the golden fixtures."""
    return UNetConfig(
        in_channels=8 if kind == "keyframe" else 9,
        model_channels=32,
        channel_mult=(1, 1, 2, 2),
        num_head_channels=16,
        context_dim=64,
        audio_dim=64,
        adm_in_channels=32 if kind == "keyframe" else 0,
    )


def tiny_stage(kind: ModelKind) -> StageConfig:
    """Tiny stage matching the sampler fixtures (audio 48 → 64, emotion 16 per scalar)."""
    return StageConfig(
        kind=kind,
        unet=tiny_unet(kind),
        audio=AudioProjectionConfig(audio_dim=48, linear_dim=64),
        emotion_dim=16,
        latent_size=16,
    )


def tiny_vae() -> VAEConfig:
    """The VAE configuration of the golden fixtures."""
    return VAEConfig(ch=32, ch_mult=(1, 1, 2, 2))


def load_json_config(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
