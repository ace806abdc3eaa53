"""Conditioner embedders reproduce the reference (emotion, audio projection, latent concat)."""

from __future__ import annotations

import torch

from engine.models.conditioning import (
    AudioProjection,
    Conditioning,
    anchor_concat,
    emotion_embedding,
    identity_concat,
)
from engine.models.layers import timestep_embedding

from .conftest import golden

G = golden("embedders.safetensors")


def test_emotion_embeddings_full_size():
    v, a = G["valence.in"], G["arousal.in"]
    torch.testing.assert_close(timestep_embedding(v.flatten(), 256), G["valence.out"], atol=1e-6, rtol=0)
    torch.testing.assert_close(timestep_embedding(a.flatten(), 256), G["arousal.out"], atol=1e-6, rtol=0)
    torch.testing.assert_close(emotion_embedding(v, a, 256), G["vector.out"], atol=1e-6, rtol=0)
    torch.testing.assert_close(timestep_embedding(v.flatten(), 16), G["valence.out_outdim16"], atol=1e-6, rtol=0)


def test_audio_projection_means_then_projects():
    proj = AudioProjection(48, 64)
    proj.load_state_dict({"linear.weight": G["whisper.linear.weight"], "linear.bias": G["whisper.linear.bias"]})
    with torch.no_grad():
        torch.testing.assert_close(proj(G["whisper.in"]), G["whisper.out"], atol=1e-6, rtol=0)


def test_latent_concats():
    torch.testing.assert_close(identity_concat(G["cond_frames_1.in"]), G["cond_frames_1.out"], atol=1e-6, rtol=0)
    bcthw = G["cond_frames_2.in_bcthw"]
    out = anchor_concat(bcthw[:, :, 0], bcthw[:, :, 1])
    torch.testing.assert_close(out, G["cond_frames_2.out"], atol=1e-6, rtol=0)


def test_unconditional_zeroes_identity_and_audio_but_keeps_emotion():
    cond = Conditioning(torch.randn(1, 4, 8, 8), torch.randn(1, 14, 64), torch.randn(14, 32))
    uc = cond.unconditional()
    assert uc.concat.eq(0).all() and uc.crossattn.eq(0).all()
    assert torch.equal(uc.vector, cond.vector)
