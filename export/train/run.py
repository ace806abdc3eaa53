"""The training stages as the ``keyface train`` command runs them, with their files in ``out``.

``out/vae.pt`` (checkpoint) → ``out/vae.safetensors`` + ``out/vae.json`` (calibrated scale) +
``out/latents.pt`` (cached dataset latents); ``out/keyframe.pt`` / ``out/interpolation.pt``
(stage checkpoints); :func:`teacher_bundle` assembles them into a :class:`ModelBundle`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from engine.bundle import ModelBundle, SamplingDefaults, load_bundle
from engine.errors import InputError
from engine.models.stage import KeyFaceStage
from engine.models.vae import AutoencoderKL

from .config import IMAGE_SIZE, TEACHER_SAMPLING, demo_audio, demo_stage, demo_vae
from .dataset import SessionSet
from .decoder import decoder_parameters, decoder_step_fn
from .diffusion import LatentSet, stage_step_fn
from .loop import LoopConfig, train
from .vae import calibrate_scale, encode_frames, train_vae

Log = Callable[[str], None]


def file_logger(out: Path, name: str) -> Log:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.log"

    def log(line: str) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    return log


def run_vae(data_path: Path, out: Path, steps: int, batch: int = 16, seed: int = 0,
            device: str = "cpu", lr: float = 1e-3, sessions: int = 0) -> AutoencoderKL:
    """Train the VAE, calibrate its latent scale, cache the latents of the first ``sessions``
    sessions (0: all) for the diffusion stages."""
    data = SessionSet.load(data_path)
    vae = train_vae(data, out, steps, batch, lr, seed, file_logger(out, "vae"), device).cpu().eval()
    data = data.subset(sessions) if sessions else data
    raw = encode_frames(vae, data.frames)
    return cache_latents(calibrate_scale(vae, raw), data, data_path, out, raw)


def cache_latents(vae: AutoencoderKL, data: SessionSet, data_path: Path, out: Path,
                  raw: torch.Tensor | None = None) -> AutoencoderKL:
    """Write ``vae`` (weights + config with its latent scale) and the scaled latents of ``data``
    (every frame and each session's identity image; ``raw``: the frames' unscaled latents when
    already encoded) to ``out`` for the diffusion stages."""
    with torch.no_grad():
        latents = vae.scale_latent(raw if raw is not None else encode_frames(vae, data.frames))
        identity = vae.scale_latent(encode_frames(vae, data.neutral))
    save_vae(vae, out)
    cache = {"latents": latents, "identity": identity, "data": str(data_path), "sessions": data.num_sessions}
    torch.save(cache, out / "latents.pt")
    return vae


def run_latents(data_path: Path, out: Path, weights: Path, sessions: int = 0) -> AutoencoderKL:
    """Cache the latents of ``data_path`` with the VAE of the model folder ``weights``, its scale
    kept: the data for fine-tuning that model's stages (``keyface distill --init``)."""
    vae = load_bundle(weights).vae
    if dataclasses.replace(vae.cfg, scale_factor=1.0) != demo_vae():
        raise InputError(f"{weights}: its VAE is not the demo VAE this trainer caches latents for")
    data = SessionSet.load(data_path)
    return cache_latents(vae, data.subset(sessions) if sessions else data, data_path, out)


def run_decoder(out: Path, steps: int, batch: int = 16, seed: int = 0, device: str = "cpu", lr: float = 1e-4,
                ema_decay: float = 0.999) -> AutoencoderKL:
    """Fine-tune the decoder of ``out``'s VAE on ``out``'s cached latents (checkpoint
    ``out/decoder.pt``); the result (its moving average) replaces ``out/vae.safetensors``, whose
    encoder, and so every cached latent, is unchanged."""
    lat = load_latents(out)
    vae = load_vae(out).to(device).train()
    params = decoder_parameters(vae)
    cfg = LoopConfig(steps=steps, lr=lr, seed=seed, warmup=20, ema_decay=ema_decay)
    train(vae, decoder_step_fn(vae, lat, batch, device), cfg, out / "decoder.pt", desc="decoder",
          log=file_logger(out, "decoder"), params=params)
    state = torch.load(out / "decoder.pt", map_location="cpu", weights_only=True)
    vae = vae.cpu().eval()
    vae.load_state_dict(state.get("ema", state["model"]))
    save_vae(vae, out)
    return vae.requires_grad_(False)


def save_vae(vae: AutoencoderKL, out: Path) -> None:
    """Write ``out/vae.safetensors`` and ``out/vae.json`` (its config and latent scale), as
    :func:`load_vae` reads them; links there are replaced, not written through."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vae.safetensors", "vae.json"):
        (out / name).unlink(missing_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(out / "vae.safetensors"))
    (out / "vae.json").write_text(json.dumps(vae.cfg.to_dict()) + "\n", encoding="utf-8")


def load_vae(out: Path) -> AutoencoderKL:
    cfg = json.loads((out / "vae.json").read_text(encoding="utf-8"))
    vae = AutoencoderKL(demo_vae(scale_factor=cfg["scale_factor"]))
    vae.load_state_dict(load_file(str(out / "vae.safetensors")))
    return vae.eval().requires_grad_(False)


def load_latents(out: Path, data_path: Path | None = None) -> LatentSet:
    if not (out / "latents.pt").is_file():
        raise InputError(f"no latent cache in {out}: train the VAE there first "
                         f"(keyface train vae --out {out} --data …)")
    cache = torch.load(out / "latents.pt", weights_only=True)
    data = SessionSet.load(data_path or Path(cache["data"])).subset(int(cache["sessions"]))
    return LatentSet(data, cache["latents"].float(), cache["identity"].float())


def run_stage(kind: str, out: Path, steps: int, clips: int = 8, seed: int = 0, lr: float = 1e-3,
              pixel_every: int = 1, device: str = "cpu", data_path: Path | None = None,
              ema_decay: float = 0.999) -> KeyFaceStage:
    """Train (or resume) one stage on the cached latents, keeping a moving average of its weights."""
    lat = load_latents(out, data_path)
    vae = load_vae(out).to(device) if pixel_every > 0 else None
    torch.manual_seed(seed)
    stage = KeyFaceStage(demo_stage(kind)).to(device)  # type: ignore[arg-type]
    cfg = LoopConfig(steps=steps, lr=lr, seed=seed, ema_decay=ema_decay)
    train(stage, stage_step_fn(stage, lat, clips, vae, pixel_every, device), cfg, out / f"{kind}.pt",
          desc=kind, log=file_logger(out, kind))
    return stage.cpu().eval()


def load_stage(path: Path, kind: str, average: bool = True) -> KeyFaceStage:
    """A stage from its checkpoint: the moving average of its weights when it has one (``average``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    stage = KeyFaceStage(demo_stage(kind))  # type: ignore[arg-type]
    stage.load_state_dict(state["ema"] if average and "ema" in state else state["model"])
    return stage.eval().requires_grad_(False)


def teacher_bundle(out: Path, sampling: SamplingDefaults = TEACHER_SAMPLING, name: str = "keyface-demo-teacher",
                   keyframe: KeyFaceStage | None = None, interpolation: KeyFaceStage | None = None) -> ModelBundle:
    """Both trained stages + the VAE as a bundle (the 10-step guided teacher by default)."""
    return ModelBundle(
        name=name,
        keyframe=keyframe or load_stage(out / "keyframe.pt", "keyframe"),
        interpolation=interpolation or load_stage(out / "interpolation.pt", "interpolation"),
        bad=None,
        vae=load_vae(out),
        image_size=IMAGE_SIZE,
        audio=demo_audio(),
        sampling=sampling,
    ).eval()
