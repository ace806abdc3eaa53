"""Offline rendering: the full KeyFace schedule from audio embeddings to RGB frames.

Keyframe windows (13 new keyframes + the reference slot) are sampled with audio/reference guidance;
each pair of consecutive keyframes is filled in by the interpolation model with autoguidance;
segments are decoded frame by frame and merged (shared boundary frames averaged). Frames are
yielded in order as soon as they are final, so memory stays bounded for long audio.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..backends import Backend, default_backend_name, load_backend
from ..bundle import ModelBundle
from ..errors import InputError
from ..models.conditioning import Conditioning, anchor_concat, emotion_embedding, identity_concat
from ..sampling.euler import sample_euler
from ..sampling.guiders import AudioRefGuider, AutoGuider, Guider, PlainGuider
from ..sampling.schedule import ays_sigmas
from .plan import KeyFacePlan

ProgressFn = Callable[[int], None]


@dataclass
class RenderSettings:
    keyframe_steps: int | None = None
    interpolation_steps: int | None = None
    seed: int = 23
    segments_per_call: int = 2
    """Interpolation segments per network call (the reference uses 2)."""
    segments_per_sample: int = 2
    """Interpolation segments sampled together (bounded memory)."""
    autocast: torch.dtype | None = None
    """Sample under ``torch.autocast`` with this dtype (the reference: CUDA fp16)."""
    backend: str | None = None
    """Inference backend: torch, ort or trt (None: ``$KEYFACE_BACKEND``, else torch)."""


def identity_latent(bundle: ModelBundle, image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB in [0, 1] → stored-space (×0.18215) latent (1, 4, h, w), posterior mode."""
    size = bundle.image_size
    x = image[None].float()
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x * 2.0 - 1.0).to(bundle.vae.encoder.conv_in.weight)
    with torch.no_grad():
        return bundle.vae.scale_latent(bundle.vae.encode_mode(x)).float()


@torch.no_grad()
def decode_frames(bundle: ModelBundle, latents: torch.Tensor) -> torch.Tensor:
    """Stored-space latents → float RGB (n, H, W, 3) in [0, 1].

    Every frame is its own clip for the temporal decoder (the reference's ``--decoding_t 1``),
    all in one batched call.
    """
    vae = bundle.vae
    z = vae.unscale_latent(latents.to(vae.decoder.conv_in.weight.dtype))
    return vae.to_unit_range(vae.decode(z, frames_per_call=1).float()).permute(0, 2, 3, 1).cpu()


def _pad_rows(rows: torch.Tensor, length: int) -> torch.Tensor:
    if rows.shape[0] >= length:
        return rows[:length]
    pad = rows[-1:].expand(length - rows.shape[0], *rows.shape[1:])
    return torch.cat([rows, pad])


class OfflineRenderer:
    """Renders one clip; iterate :meth:`frames` for uint8 (H, W, 3) frames in order."""

    def __init__(
        self,
        bundle: ModelBundle,
        identity: torch.Tensor,
        keyframe_audio: torch.Tensor,
        interpolation_audio: torch.Tensor,
        emotions: torch.Tensor,
        num_frames: int,
        settings: RenderSettings | None = None,
        progress: ProgressFn | None = None,
        backend: Backend | None = None,
    ) -> None:
        if num_frames < 1:
            raise InputError("the audio is too short: at least one video frame (40 ms) is needed")
        for name, audio, dim in (
            ("keyframe", keyframe_audio, bundle.keyframe.config.audio.audio_dim),
            ("interpolation", interpolation_audio, bundle.interpolation.config.audio.audio_dim),
        ):
            if audio.dim() != 3 or audio.shape[1] != 2 or audio.shape[2] != dim:
                raise InputError(f"{name} audio embeddings must be (frames, 2, {dim}), got {tuple(audio.shape)}")
        self.bundle = bundle
        self.settings = settings or RenderSettings()
        self.plan = KeyFacePlan(num_frames)
        self.device = bundle.keyframe.audio_projection.linear.weight.device
        self.dtype = bundle.keyframe.dtype
        rows = self.plan.covered_frames
        self.kf_audio = _pad_rows(keyframe_audio.float(), rows).to(self.device)
        self.ip_audio = _pad_rows(interpolation_audio.float(), rows).to(self.device)
        self.emotions = _pad_rows(emotions.float(), rows).to(self.device)
        self.identity = identity.to(self.device)
        self.progress = progress or (lambda n: None)
        self.generator = torch.Generator(device="cpu").manual_seed(self.settings.seed)
        name = self.settings.backend or default_backend_name()
        if backend is None and name != "torch":
            backend = load_backend(name, bundle)
        self.backend = backend
        """None: the bundle's PyTorch modules directly (the default)."""

    # -- work accounting (for progress bars) --------------------------------------------------

    def total_steps(self) -> int:
        """Sampler steps this render performs (keyframe batches + interpolation groups)."""
        kf_steps, ip_steps = self._sigmas("keyframe"), self._sigmas("interpolation")
        groups = -(-self.plan.num_segments // self.settings.segments_per_sample)
        return len(self.plan.keyframe_batches()) * (len(kf_steps) - 1) + groups * (len(ip_steps) - 1)

    # -- stages ---------------------------------------------------------------------------------

    def _sigmas(self, stage: str) -> torch.Tensor:
        defaults = self.bundle.sampling
        if stage == "keyframe":
            steps = self.settings.keyframe_steps or defaults.keyframe_steps
        else:
            steps = self.settings.interpolation_steps or defaults.interpolation_steps
        return ays_sigmas(steps)

    def _noise(self, rows: int) -> torch.Tensor:
        size = self.bundle.latent_size
        noise = torch.randn(rows, 4, size, size, generator=self.generator)
        return noise.to(self.device, self.dtype)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.settings.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.settings.autocast)

    def _keyframe_guider(self) -> Guider:
        s = self.bundle.sampling
        if self.backend is not None:
            return self.backend.keyframe_guider(s, self.plan.window)
        if s.keyframe_guidance == "none":
            return PlainGuider(self.bundle.keyframe)
        return AudioRefGuider(self.bundle.keyframe, s.audio_scale, s.ref_scale)

    def _interpolation_guider(self) -> Guider:
        s = self.bundle.sampling
        if self.backend is not None:
            return self.backend.interpolation_guider(s, self.plan.window, self.settings.segments_per_call)
        if s.interpolation_guidance == "none" or self.bundle.bad is None:
            return PlainGuider(self.bundle.interpolation)
        return AutoGuider(
            self.bundle.interpolation,
            self.bundle.bad,
            s.autoguidance_scale,
            max_clips_per_call=self.settings.segments_per_call,
        )

    def _sample(self, guider: Guider, cond: Conditioning, rows: int, stage: str) -> torch.Tensor:
        with torch.no_grad(), self._autocast():
            return sample_euler(
                guider, self._noise(rows), cond, self._sigmas(stage), lambda i, x: self.progress(1)
            ).float()

    def sample_keyframes(self, batch: list[int]) -> torch.Tensor:
        """Latents (len(batch), 4, h, w) of the keyframes in ``batch`` (reference slot dropped)."""
        slots = self.plan.batch_slot_frames(batch)
        stage = self.bundle.keyframe
        emotion = self.emotions[slots]
        cond = Conditioning(
            concat=identity_concat(self.identity),
            crossattn=stage.project_audio(self.kf_audio[slots][None]),
            vector=emotion_embedding(emotion[:, 0], emotion[:, 1], stage.config.emotion_dim),
        )
        out = self._sample(self._keyframe_guider(), cond, len(slots), "keyframe")
        return out[1 : 1 + len(batch)]

    def sample_segments(self, anchors: torch.Tensor, first: int) -> torch.Tensor:
        """Latents (S, 14, 4, h, w) of segments ``first … first+S−1`` from S+1 anchor latents."""
        count = anchors.shape[0] - 1
        stage = self.bundle.interpolation
        audio = torch.stack([self.ip_audio[self.plan.segment_frames(first + j)] for j in range(count)])
        cond = Conditioning(
            concat=anchor_concat(anchors[:-1], anchors[1:]),
            crossattn=stage.project_audio(audio),
        )
        window = self.plan.window
        out = self._sample(self._interpolation_guider(), cond, count * window, "interpolation")
        return out.reshape(count, window, *out.shape[1:])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Stored-space latents → float RGB in [0, 1], (n, H, W, 3), each frame its own clip."""
        if self.backend is None:
            return decode_frames(self.bundle, latents)
        vae = self.bundle.vae
        with torch.no_grad():
            image = self.backend.decode(vae.unscale_latent(latents.to(self.dtype)))
        return vae.to_unit_range(image.float()).permute(0, 2, 3, 1).cpu()

    # -- the schedule ---------------------------------------------------------------------------

    def keyframe_latents(self) -> Iterator[torch.Tensor]:
        """Keyframe latents in order, one (4, h, w) at a time, batch by batch."""
        for batch in self.plan.keyframe_batches():
            yield from self.sample_keyframes(batch)

    def frames(self) -> Iterator[torch.Tensor]:
        """uint8 (H, W, 3) frames, exactly ``num_frames`` of them."""
        emitted = 0
        carry: torch.Tensor | None = None  # last frame of the previous segment (float)
        keyframes = self.keyframe_latents()
        anchors = [next(keyframes)]
        segment = 0
        group = self.settings.segments_per_sample
        while segment < self.plan.num_segments and emitted < self.plan.num_frames:
            count = min(group, self.plan.num_segments - segment)
            while len(anchors) < count + 1:
                anchors.append(next(keyframes))
            latents = self.sample_segments(torch.stack(anchors[: count + 1]), segment)
            anchors = anchors[count:]
            for seg in latents:
                rgb = self.decode(seg)
                if carry is not None:
                    rgb[0] = (rgb[0] + carry) / 2.0
                carry = rgb[-1]
                for frame in rgb[:-1]:
                    if emitted < self.plan.num_frames:
                        yield (frame * 255.0).to(torch.uint8)
                        emitted += 1
            segment += count
        if emitted < self.plan.num_frames and carry is not None:
            yield (carry * 255.0).to(torch.uint8)
