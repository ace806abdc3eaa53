"""Distillation of the demo teacher into a few-step, guidance-free student.

Two losses, trained jointly on a copy of each teacher stage (the student):

* **Guidance distillation** (keyframe): at noise levels ``σ`` from the student's schedule and the
  training distribution, the student's plain ``D_s(x_σ)`` regresses the teacher's guided
  ``D̂ = D_uc + ref·(D_ref − D_uc) + audio·(D_full − D_ref)`` (one 3-branch teacher call).
* **Trajectory regression** (both stages; progressive/consistency-style knowledge distillation):
  the teacher samples clips with its full 10-step guided sampler from fixed noise; the student
  learns to map that noise at ``σ_max`` (and the teacher sample re-noised to each intermediate
  level of the student schedule) straight to the teacher's sample, so its 1-step (interpolation) or
  3-step (keyframe: σ 700 → 1.79 → 0.002) Euler sampling lands where the teacher lands.

Both use the weighting of training (lower half λ_lower 3 / 2, the mouth box ×``MOUTH_WEIGHT``).
The same code runs on the full-size models: only the stage configs and the clip source change (docs/demo-model.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tqdm import tqdm

from engine.models.stage import KeyFaceStage
from engine.sampling.denoiser import denoise
from engine.sampling.euler import sample_euler
from engine.sampling.guiders import AudioRefGuider, Guider, PlainGuider
from engine.sampling.schedule import ays_sigmas

from .train.diffusion import (
    WINDOW,
    LatentSet,
    conditioning,
    diffusion_loss,
    loss_weight,
    sample_batch,
    sample_sigma,
)


@dataclass
class DistillConfig:
    teacher_steps: int = 10
    student_steps: int = 1
    audio_scale: float = 5.0
    ref_scale: float = 2.0
    guided: bool = True
    """Teacher keyframe sampling uses audio/reference guidance (interpolation: unguided)."""
    data_weight: float = 0.0
    """Weight of the training loss on real clips, added to keep the student on the data."""


@dataclass
class Trajectories:
    """Teacher samples: per clip, its conditioning batch, the starting noise and the result."""

    batches: list
    noise: list[torch.Tensor]
    samples: list[torch.Tensor]


def teacher_guider(stage: KeyFaceStage, cfg: DistillConfig) -> Guider:
    if stage.config.kind == "keyframe" and cfg.guided:
        return AudioRefGuider(stage.network, cfg.audio_scale, cfg.ref_scale, WINDOW)
    return PlainGuider(stage.network, WINDOW)


@torch.no_grad()
def teacher_trajectories(
    teacher: KeyFaceStage, lat: LatentSet, cfg: DistillConfig, batches: int, clips: int, seed: int = 0
) -> Trajectories:
    """``batches`` × ``clips`` training-set clips sampled by the teacher (10 steps, guided)."""
    gen = torch.Generator().manual_seed(seed)
    guider = teacher_guider(teacher, cfg)
    sigmas = ays_sigmas(cfg.teacher_steps)
    out = Trajectories([], [], [])
    for _ in tqdm(range(batches), desc=f"teacher {teacher.config.kind}", unit="batch"):
        batch = sample_batch(teacher.config.kind, lat, clips, gen)
        cond = conditioning(teacher, batch)
        noise = torch.randn(batch.x0.shape, generator=gen)
        out.batches.append(batch)
        out.noise.append(noise)
        out.samples.append(sample_euler(guider, noise, cond, sigmas).float())
    return out


def _weighted_mse(a: torch.Tensor, b: torch.Tensor, kind: str, mouth: torch.Tensor | None = None) -> torch.Tensor:
    """Training's weighting: lower half ``λ_lower``, mouth-box cells ``MOUTH_WEIGHT`` on top."""
    return (loss_weight(kind, a.shape[-2], mouth, a.device) * (a - b).square()).mean()


def distill_step_fn(student: KeyFaceStage, teacher: KeyFaceStage, lat: LatentSet, traj: Trajectories,
                    cfg: DistillConfig, clips: int):
    """One step: trajectory regression on a stored teacher batch + guidance distillation (keyframe)."""
    kind = student.config.kind
    levels = ays_sigmas(cfg.student_steps)[:-1].float()
    levels = levels[levels > 0.01]
    guider = teacher_guider(teacher, cfg)

    def step(i: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        k = int(torch.randint(0, len(traj.batches), (1,), generator=gen))
        batch, noise, target = traj.batches[k], traj.noise[k], traj.samples[k]
        cond = conditioning(student, batch)
        level = levels[int(torch.randint(0, len(levels), (1,), generator=gen))]
        rows = noise.shape[0]
        sigma = torch.full((rows,), float(level))
        if k % 2 == 0 or level == levels[0]:
            x = noise * torch.sqrt(1.0 + level**2) if level == levels[0] else target + level * noise
        else:
            x = target + level * noise
        pred = denoise(student.network, x, sigma, cond, WINDOW)
        traj_loss = _weighted_mse(pred, target, kind, batch.mouth)
        logs = {"traj": float(traj_loss.detach())}
        loss = traj_loss
        if kind == "keyframe" and cfg.guided:
            fresh = sample_batch(kind, lat, clips, gen)
            c_t = conditioning(teacher, fresh)
            s = sample_sigma(clips, gen)
            xs = fresh.x0 + s[:, None, None, None] * torch.randn(fresh.x0.shape, generator=gen)
            with torch.no_grad():
                guided = guider(xs, s, c_t)
            pred_fresh = denoise(student.network, xs, s, conditioning(student, fresh), WINDOW)
            gd = _weighted_mse(pred_fresh, guided, kind, fresh.mouth)
            loss = loss + gd
            logs["guidance"] = float(gd.detach())
        if cfg.data_weight > 0:
            data_loss, _ = diffusion_loss(student, sample_batch(kind, lat, clips, gen), gen)
            loss = loss + cfg.data_weight * data_loss
            logs["data"] = float(data_loss.detach())
        return loss, logs

    return step


def make_student(teacher: KeyFaceStage) -> KeyFaceStage:
    """The student starts as a copy of its teacher (same config, drops into the same bundle)."""
    return copy.deepcopy(teacher).train().requires_grad_(True)
