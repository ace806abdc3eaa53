"""Small real models and signals for the live-scheduler tests."""

from __future__ import annotations

import numpy as np

from engine.bundle import SamplingDefaults, random_bundle
from engine.models.config import AudioProjectionConfig, StageConfig, UNetConfig, VAEConfig


def micro_bundle(seed: int = 0, guided: bool = False, latent_size: int = 4, vae_levels: int = 1):
    """A real but very cheap random model: 1-level VideoUNets on ``latent_size`` latents and a VAE
    with ``vae_levels`` levels (video size = latent_size × 2**(vae_levels−1); 4×4 by default).

    ``guided`` adds the autoguidance model and samples with both guiders (else one plain step).
    """

    def stage(kind: str) -> StageConfig:
        unet = UNetConfig(
            in_channels=8 if kind == "keyframe" else 9,
            model_channels=32,
            channel_mult=(1,),
            num_res_blocks=1,
            attention_resolutions=(),
            num_head_channels=16,
            context_dim=32,
            audio_dim=32,
            adm_in_channels=16 if kind == "keyframe" else 0,
        )
        return StageConfig(kind, unet, AudioProjectionConfig(16, 32), emotion_dim=8, latent_size=latent_size)  # type: ignore[arg-type]

    sampling = SamplingDefaults(
        keyframe_steps=1,
        interpolation_steps=1,
        keyframe_guidance="audio_ref" if guided else "none",
        interpolation_guidance="auto" if guided else "none",
    )
    return random_bundle(
        stage("keyframe"),
        stage("interpolation"),
        VAEConfig(ch=32, ch_mult=(1,) * vae_levels, num_res_blocks=1, temporal_decoder=False),
        seed=seed,
        with_bad=guided,
        sampling=sampling,
        audio={"keyframe": ["logmel"], "interpolation": ["logmel"], "logmel": {"n_mels": 16}},
    )


def speechlike(seconds: float, seed: int = 0, sr: int = 16_000) -> np.ndarray:
    """A voiced, syllable-modulated signal (no silence inside)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    voiced = np.sin(2 * np.pi * np.cumsum(f0) / sr) + 0.3 * np.sin(4 * np.pi * np.cumsum(f0) / sr)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    return (0.25 * voiced * envelope + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
