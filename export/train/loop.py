"""A small resumable training loop: seeded per-step randomness, checkpoints, tqdm progress.

Each step draws its randomness from a generator seeded with ``(seed, step)``, so a run resumed
from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

StepFn = Callable[[int, torch.Generator], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class LoopConfig:
    steps: int
    lr: float = 1e-3
    warmup: int = 50
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 25
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights with this decay (0: none); checkpoints
    store it under ``"ema"``."""


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class WeightAverage:
    """Exponential moving average of a model's floating-point weights.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates ``n``, so an
    average started late (e.g. when resuming a run that had none) is not dominated by its start.
    """

    def __init__(self, model: torch.nn.Module, decay: float, state: dict | None = None, updates: int = 0) -> None:
        self.decay, self.updates = decay, updates
        current = model.state_dict()
        source = state if state is not None else current
        self.state = {k: v.detach().clone().to(current[k].device) for k, v in source.items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.state[k].lerp_(v.detach(), 1.0 - d)
            else:
                self.state[k].copy_(v)
        self.updates += 1


def save_checkpoint(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int, extra: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, **extra}, tmp)
    tmp.replace(path)


def train(
    model: torch.nn.Module,
    step_fn: StepFn,
    cfg: LoopConfig,
    checkpoint: Path | None = None,
    desc: str = "train",
    log: Callable[[str], None] | None = None,
    params: list[torch.nn.Parameter] | None = None,
) -> list[float]:
    """Run ``step_fn`` for ``cfg.steps`` optimiser steps (resuming from ``checkpoint``); returns losses."""
    trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=0.0)
    start, state = 0, {}
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
    ema = WeightAverage(model, cfg.ema_decay, state.get("ema"), int(state.get("ema_updates", 0))) \
        if cfg.ema_decay > 0 else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    if start:  # jump the schedule to the resumed step (LambdaLR is closed-form in the step)
        sched.last_epoch = start
        for group, base in zip(opt.param_groups, sched.base_lrs, strict=True):
            group["lr"] = base * _lr_factor(start, cfg)
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc=desc, unit="step", initial=start, total=cfg.steps, mininterval=2.0)
    for step in bar:
        loss, logs = step_fn(step, step_generator(cfg.seed, step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        value = float(loss.detach())
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")
        done = step + 1
        if log is not None and (done % cfg.log_every == 0 or done == cfg.steps):
            parts = " ".join(f"{k}={v:.4f}" for k, v in logs.items())
            log(f"step {done} loss={value:.4f} {parts} t={time.perf_counter() - t0:.0f}s")
        if checkpoint is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            extra = {"ema": ema.state, "ema_updates": ema.updates} if ema is not None else {}
            save_checkpoint(checkpoint, model, opt, done, extra)
    model.eval()
    return losses


def _lr_factor(step: int, cfg: LoopConfig) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
