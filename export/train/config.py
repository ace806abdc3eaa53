"""The demo model's sizes: one :class:`UNetConfig` family for both stages, a small VAE."""

from __future__ import annotations

from engine.bundle import SamplingDefaults
from engine.models.config import AudioProjectionConfig, ModelKind, StageConfig, UNetConfig, VAEConfig

from .dataset import AUDIO_CONTEXT, AUDIO_DIM, N_MELS

IMAGE_SIZE = 64
CONTEXT_DIM = 64
EMOTION_DIM = 16


def demo_vae(scale_factor: float = 1.0) -> VAEConfig:
    """×4 VAE (64×64 → 16×16×4), per-frame decoder."""
    return VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, temporal_decoder=False, scale_factor=scale_factor)


def demo_stage(kind: ModelKind, latent_size: int = IMAGE_SIZE // 4) -> StageConfig:
    """A 2-level VideoUNet (32/64 channels); attention only in the middle block (8×8)."""
    unet = UNetConfig(
        in_channels=8 if kind == "keyframe" else 9,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        num_head_channels=32,
        context_dim=CONTEXT_DIM,
        audio_dim=CONTEXT_DIM,
        adm_in_channels=2 * EMOTION_DIM if kind == "keyframe" else 0,
    )
    return StageConfig(kind, unet, AudioProjectionConfig(AUDIO_DIM, CONTEXT_DIM), EMOTION_DIM, latent_size)


def demo_audio() -> dict:
    return {"keyframe": ["logmel"], "interpolation": ["logmel"], "logmel": {"n_mels": N_MELS, "context": AUDIO_CONTEXT}}


TEACHER_SAMPLING = SamplingDefaults(keyframe_steps=10, interpolation_steps=10, interpolation_guidance="none")
"""The teacher: 10-step AYS (11 Euler updates), audio/reference guidance on keyframes."""

STUDENT_SAMPLING = SamplingDefaults(
    keyframe_steps=3, interpolation_steps=1, keyframe_guidance="none", interpolation_guidance="none"
)
