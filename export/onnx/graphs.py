"""The exportable graphs of a model bundle: wrapper modules plus their tensor contracts.

UNet graphs fold the sampler's per-step work into one call:

* ``keyframe_guided`` — ``(x, sigma, concat, crossattn, vector, guidance) → D̂``: the EDM scalings,
  the three guidance branches (uc, ref, full) in one batch and ``D̂ = D_uc + ref·(D_ref − D_uc) +
  audio·(D_full − D_ref)`` with ``guidance = [audio, ref]``;
* ``interpolation_guided`` — ``(x, sigma, concat, crossattn, guidance) → D̂``: good and bad networks
  and ``D̂ = D_bad + g·(D_good − D_bad)``;
* ``*_denoiser`` — the unguided ``D(x, σ)`` (distilled models); ``*_network`` — raw ``F`` (optional).

All graph inputs and outputs are float32; reduced precision lives inside (weights and compute).
The code reuses the engine's own guiders and denoiser, so the graph is the PyTorch math.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from engine.backends.manifest import TensorInfo, combined_hash, module_hash
from engine.backends.profiles import Profile
from engine.bundle import ModelBundle
from engine.checkpoints import parse_dtype
from engine.models.conditioning import Conditioning
from engine.models.layers import GroupNorm32
from engine.models.vae import GroupNorm32 as VaeGroupNorm32
from engine.sampling.guiders import AudioRefGuider, AutoGuider, PlainGuider

GROUPS = {
    "unets": ("keyframe_guided", "keyframe_denoiser", "interpolation_guided", "interpolation_denoiser"),
    "networks": ("keyframe_network", "interpolation_network", "bad_network"),
    "vae": ("vae_decoder", "vae_encoder"),
    "audio": ("audio_logmel", "audio_wavlm", "audio_wav2vec2", "audio_beats"),
}
DEFAULT_GROUPS = ("unets", "vae", "audio")
LATENT_CHANNELS = 4


@dataclass
class GraphSpec:
    """One graph to export: its module (taking inputs positionally) and tensor contract."""

    name: str
    module: nn.Module
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    dims: dict[str, tuple[int, int, int]]
    trace: dict[str, int]
    """Values of every symbolic dimension used for the tracing example."""
    dtype: str = "fp32"
    source_hash: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    example: Callable[[TensorInfo, tuple[int, ...]], torch.Tensor] | None = None

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(0)
        out = []
        for t in self.inputs:
            shape = t.shape(self.trace)
            if self.example is not None:
                out.append(self.example(t, shape))
            elif t.name == "sigma":
                out.append(torch.rand(shape, generator=gen) * 4.0 + 0.5)
            elif t.name == "guidance":
                out.append(torch.tensor(self.info["guidance_default"], dtype=torch.float32))
            else:
                out.append(torch.randn(shape, generator=gen))
        return tuple(out)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = {}
        for t in [*self.inputs, *self.outputs]:
            named = {i: d for i, d in enumerate(t.dims) if isinstance(d, str)}
            if named:
                axes[t.name] = named
        return axes


class Positional(nn.Module):
    """Calls ``fn(**dict(zip(names, tensors)))``; holds the submodules so export sees weights."""

    def __init__(self, fn: Callable[..., torch.Tensor], names: list[str], **modules: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.names = names
        self.parts = nn.ModuleDict(modules)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.fn(**dict(zip(self.names, tensors, strict=True)))


@contextlib.contextmanager
def traceable_clips() -> Iterator[None]:
    """Trace the VAE's ``(b t) → b c t`` split as a reshape with a symbolic ``-1``.

    ``Tensor.unflatten(0, (-1, t))`` is recorded with the traced batch size resolved, which
    would freeze the decoder graph's batch; the reshape below is the same operation.
    """
    from engine.models import vae

    original = vae._to_clips
    vae._to_clips = lambda x, t: x.reshape(-1, t, *x.shape[1:]).transpose(1, 2)
    try:
        yield
    finally:
        vae._to_clips = original


def _trace_rows(lo: int, hi: int, multiple: int) -> int:
    """A traced batch of 2 clips where allowed: tracing a batch of 1 can bake the batch size in."""
    rows = min(max(lo, 2 * multiple), max(hi // multiple, 1) * multiple)
    return max(rows, multiple)


def _cast(module: nn.Module, dtype: str) -> nn.Module:
    """``module`` in ``dtype``; the fp32-computed GroupNorms keep fp32 parameters (as the model
    evaluates them in fp32 anyway, and CPU tracing needs matching dtypes)."""
    target = parse_dtype(dtype)
    if next(module.parameters()).dtype != target:
        module = copy.deepcopy(module).to(target)
    if target != torch.float32:
        for sub in module.modules():
            if isinstance(sub, GroupNorm32 | VaeGroupNorm32):
                sub.float()
    return module


class _Hashes:
    """Module hashes computed once per export."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self._cache: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name not in self._cache:
            b = self.bundle
            modules = {
                "keyframe": b.keyframe.network,
                "interpolation": b.interpolation.network,
                "bad": b.bad,
                "vae_decoder": b.vae.decoder,
                "vae_encoder": b.vae.encoder,
            }
            self._cache[name] = module_hash(modules[name])
        return self._cache[name]


class GraphBuilder:
    """Makes :class:`GraphSpec` objects for one bundle and profile."""

    def __init__(self, bundle: ModelBundle, profile: Profile) -> None:
        self.bundle = bundle
        self.profile = profile
        self.hashes = _Hashes(bundle)
        self.latent = profile.resolve_latent(bundle.latent_size)
        self.frames = profile.frames

    # ---------------------------------------------------------------- shapes
    def _spatial(self, allow_dynamic: bool) -> tuple[tuple[int | str, int | str], dict[str, int]]:
        if self.profile.dynamic_spatial and allow_dynamic:
            return ("h", "w"), {"h": self.profile.trace_latent, "w": self.profile.trace_latent}
        return (self.latent, self.latent), {}

    def _unet_io(self, kind: str, guidance: int, raw: bool, dynamic_spatial: bool):
        stage = self.bundle.keyframe if kind == "keyframe" else self.bundle.interpolation
        cfg = stage.config.unet
        (h, w), trace = self._spatial(dynamic_spatial)
        concat_ch = LATENT_CHANNELS if kind == "keyframe" else 2 * LATENT_CHANNELS
        inputs = [
            TensorInfo("x", ("rows", LATENT_CHANNELS, h, w)),
            TensorInfo("c_noise" if raw else "sigma", ("rows",)),
            TensorInfo("concat", ("clips", concat_ch, h, w)),
            TensorInfo("crossattn", ("clips", self.frames, cfg.context_dim)),
        ]
        if kind == "keyframe" and cfg.adm_in_channels:
            inputs.append(TensorInfo("vector", ("rows", cfg.adm_in_channels)))
        if guidance:
            inputs.append(TensorInfo("guidance", (guidance,)))
        outputs = [TensorInfo("v" if raw else "denoised", ("rows", LATENT_CHANNELS, h, w))]
        lo, opt, hi = self.profile.clips
        dims = {"clips": (lo, opt, hi), "rows": (lo * self.frames, opt * self.frames, hi * self.frames)}
        trace = {"clips": lo, "rows": lo * self.frames, **trace}
        if isinstance(h, str):
            t = self.profile.trace_latent
            dims.update({"h": (t, self.latent, self.latent), "w": (t, self.latent, self.latent)})
        return inputs, outputs, dims, trace

    def _source(self, kind: str, *parts: str) -> str:
        return combined_hash(kind, self.profile.key, *parts)

    # ---------------------------------------------------------------- UNets
    def keyframe(self, guided: bool) -> GraphSpec:
        s = self.bundle.sampling
        net = _cast(self.bundle.keyframe.network, self.profile.dtype)
        inputs, outputs, dims, trace = self._unet_io("keyframe", 2 if guided else 0, False, True)
        names = [t.name for t in inputs]
        frames = self.frames

        def fn(x, sigma, concat, crossattn, vector=None, guidance=None):
            cond = Conditioning(concat, crossattn, vector)
            if guidance is None:
                return PlainGuider(net, frames)(x, sigma, cond)
            return AudioRefGuider(net, guidance[0], guidance[1], frames)(x, sigma, cond)

        name = "keyframe_guided" if guided else "keyframe_denoiser"
        info = {"guidance_default": [s.audio_scale, s.ref_scale]} if guided else {}
        return GraphSpec(
            name, Positional(fn, names, net=net), inputs, outputs, dims, trace, self.profile.dtype,
            self._source(name, self.hashes("keyframe")), info,
        )

    def interpolation(self, guided: bool) -> GraphSpec:
        s = self.bundle.sampling
        good = _cast(self.bundle.interpolation.network, self.profile.dtype)
        modules: dict[str, nn.Module] = {"good": good}
        if guided:
            if self.bundle.bad is None:
                raise ValueError("interpolation_guided needs the autoguidance (bad) network")
            modules["bad"] = _cast(self.bundle.bad, self.profile.dtype)
        inputs, outputs, dims, trace = self._unet_io("interpolation", 1 if guided else 0, False, False)
        names = [t.name for t in inputs]
        frames = self.frames

        def fn(x, sigma, concat, crossattn, guidance=None):
            cond = Conditioning(concat, crossattn)
            if guidance is None:
                return PlainGuider(good, frames)(x, sigma, cond)
            d_bad, d_good = AutoGuider(good, modules["bad"], 1.0, frames).denoise_pair(x, sigma, cond)
            return d_bad + guidance[0] * (d_good - d_bad)

        name = "interpolation_guided" if guided else "interpolation_denoiser"
        hashes = [self.hashes("interpolation")] + ([self.hashes("bad")] if guided else [])
        info = {"guidance_default": [s.autoguidance_scale]} if guided else {}
        return GraphSpec(
            name, Positional(fn, names, **modules), inputs, outputs, dims, trace, self.profile.dtype,
            self._source(name, *hashes), info,
        )

    def network(self, which: str) -> GraphSpec:
        """Raw ``F(c_in·x, c_noise, cond)`` of the keyframe, interpolation or bad network."""
        module = {
            "keyframe": self.bundle.keyframe.network,
            "interpolation": self.bundle.interpolation.network,
            "bad": self.bundle.bad,
        }[which]
        if module is None:
            raise ValueError("this model has no autoguidance (bad) network")
        net = _cast(module, self.profile.dtype)
        kind = "keyframe" if which == "keyframe" else "interpolation"
        inputs, outputs, dims, trace = self._unet_io(kind, 0, True, kind == "keyframe")
        names = [t.name for t in inputs]
        frames = self.frames

        def fn(x, c_noise, concat, crossattn, vector=None):
            return net(x, c_noise, Conditioning(concat, crossattn, vector), frames).float()

        name = f"{which}_network"
        return GraphSpec(
            name, Positional(fn, names, net=net), inputs, outputs, dims, trace, self.profile.dtype,
            self._source(name, self.hashes(which)),
            example=lambda t, shape: torch.randn(shape) * 0.5 if t.name == "c_noise" else torch.randn(shape),
        )

    # ---------------------------------------------------------------- VAE
    def vae_decoder(self) -> GraphSpec:
        p = self.profile
        decoder = _cast(self.bundle.vae.decoder, p.vae_dtype)
        factor = self.bundle.vae.cfg.downsample_factor
        (h, w), trace = self._spatial(True)
        out_hw = ("H", "W") if isinstance(h, str) else (h * factor, w * factor)  # type: ignore[operator]
        frames = p.decode_frames

        def fn(z):
            with traceable_clips():
                return decoder(z.to(next(decoder.parameters()).dtype), frames).float()

        lo, opt, hi = p.decode_rows
        dims = {"rows": (lo, opt, hi)}
        if isinstance(h, str):
            spatial = (p.trace_latent, self.latent, self.latent)
            dims.update({"h": spatial, "w": spatial})
        return GraphSpec(
            "vae_decoder", Positional(fn, ["z"], decoder=decoder),
            [TensorInfo("z", ("rows", LATENT_CHANNELS, h, w))],
            [TensorInfo("image", ("rows", 3, *out_hw))],
            dims, {"rows": _trace_rows(lo, hi, frames), **trace}, p.vae_dtype,
            self._source("vae_decoder", self.hashes("vae_decoder")), {"decode_frames": frames},
        )

    def vae_encoder(self) -> GraphSpec:
        p = self.profile
        encoder = _cast(self.bundle.vae.encoder, p.vae_dtype)
        factor = self.bundle.vae.cfg.downsample_factor
        size = self.latent * factor
        z2 = 2 * self.bundle.vae.cfg.z_channels

        def fn(image):
            return encoder(image.to(next(encoder.parameters()).dtype)).float()

        lo, opt, hi = p.encode_rows
        return GraphSpec(
            "vae_encoder", Positional(fn, ["image"], encoder=encoder),
            [TensorInfo("image", ("rows", 3, size, size))],
            [TensorInfo("moments", ("rows", z2, self.latent, self.latent))],
            {"rows": (lo, opt, hi)}, {"rows": _trace_rows(lo, hi, 1)}, p.vae_dtype,
            self._source("vae_encoder", self.hashes("vae_encoder")),
        )

    # ---------------------------------------------------------------- all
    def available(self) -> dict[str, Callable[[], GraphSpec]]:
        """Graph name → factory, for the graphs this bundle supports."""
        from .audio import audio_graphs

        s = self.bundle.sampling
        out: dict[str, Callable[[], GraphSpec]] = {}
        if s.keyframe_guidance == "none":
            out["keyframe_denoiser"] = lambda: self.keyframe(False)
        else:
            out["keyframe_guided"] = lambda: self.keyframe(True)
        if s.interpolation_guidance == "none" or self.bundle.bad is None:
            out["interpolation_denoiser"] = lambda: self.interpolation(False)
        else:
            out["interpolation_guided"] = lambda: self.interpolation(True)
        out["keyframe_network"] = lambda: self.network("keyframe")
        out["interpolation_network"] = lambda: self.network("interpolation")
        if self.bundle.bad is not None:
            out["bad_network"] = lambda: self.network("bad")
        out["vae_decoder"] = self.vae_decoder
        out["vae_encoder"] = self.vae_encoder
        out.update(audio_graphs(self.bundle, self.profile))
        return out


def select_graphs(requested: list[str] | None, available: list[str]) -> list[str]:
    """Expand group names (``unets``, ``networks``, ``vae``, ``audio``) and check the rest."""
    names: list[str] = []
    for item in requested or list(DEFAULT_GROUPS):
        members = GROUPS.get(item, (item,))
        if item not in GROUPS and item not in available:
            known = sorted(set(available) | set(GROUPS))
            raise ValueError(f"unknown graph {item!r}; choose from {', '.join(known)}")
        names += [m for m in members if m in available and m not in names]
    return names
