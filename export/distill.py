"""Distillation of the demo teacher into a few-step, guidance-free student.

Losses, trained jointly on a copy of each teacher stage (the student) or on a shipped student:

* **Guidance distillation** (keyframe): at noise levels ``σ`` from the student's schedule and the
  training distribution, the student's plain ``D_s(x_σ)`` regresses the teacher's guided
  ``D̂ = D_uc + ref·(D_ref − D_uc) + audio·(D_full − D_ref)`` (one 3-branch teacher call).
* **Trajectory regression** (both stages; progressive/consistency-style knowledge distillation):
  the teacher samples clips with its full 10-step guided sampler from fixed noise; the student
  learns to map that noise at ``σ_max`` (and the teacher sample re-noised to each intermediate
  level of the student schedule) straight to the teacher's sample, so its 1-step (interpolation) or
  3-step (keyframe: σ 700 → 1.79 → 0.002) Euler sampling lands where the teacher lands.
* **Data loss** (``data_weight``): the student's loss on real training clips, at σ from the training
  distribution or (``data_levels="student"``) at the student's own sampling levels. Alone (no
  teacher), it fine-tunes a shipped student on more data.

All use the weighting of training (lower half λ_lower 3 / 2, the mouth box ×``MOUTH_WEIGHT``).
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
    data_levels: str = "training"
    """Noise levels of that data loss: ``training`` (σ from the training distribution) or
    ``student`` (the student's own sampling levels, from pure noise at σ_max: the trajectory
    regression with real clips in place of teacher samples)."""


DATA_LEVELS = ("training", "student")


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


def student_levels(steps: int) -> torch.Tensor:
    """The noise levels a ``steps``-step student is evaluated at (σ_max first, σ ≈ 0 left out)."""
    levels = ays_sigmas(steps)[:-1].float()
    return levels[levels > 0.01]


def level_input(target: torch.Tensor, noise: torch.Tensor, level: float, first: bool) -> torch.Tensor:
    """The student's input at ``level``: pure noise scaled as the sampler starts (``first``: σ_max),
    else ``target`` re-noised to ``level``."""
    return noise * (1.0 + level**2) ** 0.5 if first else target + level * noise


def distill_step_fn(student: KeyFaceStage, teacher: KeyFaceStage | None, lat: LatentSet,
                    traj: Trajectories | None, cfg: DistillConfig, clips: int):
    """One step: trajectory regression on a stored teacher batch + guidance distillation (keyframe)
    + the data loss. With no ``teacher`` (and no ``traj``) only the data loss trains the student:
    fine-tuning a shipped student on real clips."""
    if cfg.data_levels not in DATA_LEVELS:
        raise ValueError(f"data_levels must be one of {DATA_LEVELS}, not {cfg.data_levels!r}")
    if teacher is None and cfg.data_weight <= 0:
        raise ValueError("without a teacher the data loss is the only loss: data_weight must be > 0")
    kind = student.config.kind
    levels = student_levels(cfg.student_steps)
    guider = teacher_guider(teacher, cfg) if teacher is not None else None

    def at_level(batch, target: torch.Tensor, noise: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Weighted error of the student's prediction of ``target`` from a random level of its schedule."""
        pick = int(torch.randint(0, len(levels), (1,), generator=gen))
        level = float(levels[pick])
        x = level_input(target, noise, level, first=pick == 0)
        pred = denoise(student.network, x, torch.full((x.shape[0],), level), conditioning(student, batch), WINDOW)
        return _weighted_mse(pred, target, kind, batch.mouth)

    def step(i: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        loss = torch.zeros(())
        logs: dict[str, float] = {}
        if traj is not None:
            k = int(torch.randint(0, len(traj.batches), (1,), generator=gen))
            traj_loss = at_level(traj.batches[k], traj.samples[k], traj.noise[k], gen)
            logs["traj"] = float(traj_loss.detach())
            loss = loss + traj_loss
        if guider is not None and kind == "keyframe" and cfg.guided:
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
            real = sample_batch(kind, lat, clips, gen)
            if cfg.data_levels == "student":
                data_loss = at_level(real, real.x0, torch.randn(real.x0.shape, generator=gen), gen)
            else:
                data_loss, _ = diffusion_loss(student, real, gen)
            loss = loss + cfg.data_weight * data_loss
            logs["data"] = float(data_loss.detach())
        return loss, logs

    return step


def make_student(teacher: KeyFaceStage) -> KeyFaceStage:
    """The student starts as a copy of its teacher (same config, drops into the same bundle)."""
    return copy.deepcopy(teacher).train().requires_grad_(True)
