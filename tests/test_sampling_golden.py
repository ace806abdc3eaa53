"""AYS sigmas and complete guided sampling runs reproduce the reference goldens."""

from __future__ import annotations

import json
import math

import pytest
import torch

from engine.models.conditioning import Conditioning, anchor_concat, emotion_embedding, identity_concat
from engine.sampling.euler import sample_euler
from engine.sampling.guiders import AudioRefGuider, AutoGuider
from engine.sampling.schedule import apply_strength, ays_sigmas, c_noise

from .conftest import KEYFACE, golden

ATOL_FINAL = 1e-3  # fixture README's suggested tolerance for full sampling runs


@pytest.mark.parametrize("n", ["10", "11", "14", "20", "25", "50"])
def test_ays_sigmas(n):
    ref = json.loads((KEYFACE / "ays_sigmas.json").read_text())[n]
    sig = ays_sigmas(int(n))
    assert sig.dtype == torch.float64
    assert len(sig) - 1 == ref["num_euler_steps"]
    torch.testing.assert_close(sig, torch.tensor(ref["sigmas"], dtype=torch.float64), atol=1e-9, rtol=1e-9)
    for s, cn in zip(ref["sigmas"][:-1], ref["c_noise_0.25log"][:-1], strict=True):
        assert math.isclose(c_noise(s), cn, abs_tol=1e-9)


def test_strength_keeps_the_tail():
    sig = ays_sigmas(10)
    assert torch.equal(apply_strength(sig, 1.0), sig)
    assert torch.equal(apply_strength(sig, 0.5), sig[-6:])
    with pytest.raises(ValueError):
        apply_strength(sig, 0.0)


def keyframe_conditioning(stage, g):
    return Conditioning(
        concat=identity_concat(g["golden.in.cond_frames_latent_scaled"]),
        crossattn=stage.project_audio(g["golden.in.audio_emb"]),
        vector=emotion_embedding(g["golden.in.valence"], g["golden.in.arousal"], stage.config.emotion_dim),
    )


@torch.no_grad()
def test_keyframe_sampling_run(keyframe_stage):
    g = golden("keyframe_sampler_tiny.safetensors")
    cond = keyframe_conditioning(keyframe_stage, g)
    uc = cond.unconditional()
    for route in ("concat", "crossattn", "vector"):
        torch.testing.assert_close(getattr(cond, route), g[f"golden.c.{route}"], atol=1e-5, rtol=0)
        torch.testing.assert_close(getattr(uc, route), g[f"golden.uc.{route}"], atol=1e-5, rtol=0)
    sigmas = ays_sigmas(10)
    torch.testing.assert_close(sigmas.float(), g["golden.sigmas"], atol=0, rtol=0)

    calls = []
    network = keyframe_stage.network

    def counting(*args):
        calls.append(args[0].shape[0])
        return network(*args)

    guider = AudioRefGuider(counting, audio_scale=5.0, ref_scale=2.0)
    x0 = g["golden.in.noise"] * math.sqrt(1 + 700.0**2)
    sigma0 = torch.full((14,), 700.0)
    branches = guider.denoise_branches(x0, sigma0, cond)
    torch.testing.assert_close(branches, g["golden.step0.denoised_3branches"], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(guider(x0, sigma0, cond), g["golden.step0.guided"], atol=1e-3, rtol=1e-5)

    calls.clear()
    trajectory = []
    final = sample_euler(guider, g["golden.in.noise"], cond, sigmas, lambda i, x: trajectory.append(x))
    assert calls == [42] * 11  # 3 branches × 14 frames batched into one call per step
    torch.testing.assert_close(torch.stack(trajectory), g["golden.trajectory"], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(final, g["golden.final"], atol=ATOL_FINAL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("segments_per_call,key", [(2, "golden.final"), (None, "golden.final_no_chunking")])
def test_interpolation_sampling_run(interpolation_stage, bad_network, segments_per_call, key):
    g = golden("interpolation_sampler_tiny.safetensors")
    anchors = g["golden.in.cond_frames_bcthw"]
    cond = Conditioning(
        concat=anchor_concat(anchors[:, :, 0], anchors[:, :, 1]),
        crossattn=interpolation_stage.project_audio(g["golden.in.audio_emb"]),
    )
    torch.testing.assert_close(cond.concat, g["golden.c.concat"], atol=1e-5, rtol=0)
    torch.testing.assert_close(cond.crossattn, g["golden.c.crossattn"], atol=1e-5, rtol=0)
    guider = AutoGuider(interpolation_stage.network, bad_network, 2.0, 14, segments_per_call)
    x0 = g["golden.in.noise"] * math.sqrt(1 + 700.0**2)
    sigma0 = torch.full((42,), 700.0)
    d_bad, d_good = guider.denoise_pair(x0, sigma0, cond)
    torch.testing.assert_close(
        torch.cat([d_bad, d_good]), g["golden.step0.bad_then_good_denoised"], atol=1e-3, rtol=1e-5
    )
    torch.testing.assert_close(guider(x0, sigma0, cond), g["golden.step0.guided"], atol=1e-3, rtol=1e-5)
    trajectory = []
    final = sample_euler(guider, g["golden.in.noise"], cond, ays_sigmas(10), lambda i, x: trajectory.append(x))
    torch.testing.assert_close(torch.stack(trajectory), g["golden.trajectory"], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(final, g[key], atol=ATOL_FINAL, rtol=0)
