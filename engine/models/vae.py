"""kl-f8 VAE: sgm ``Encoder`` and SVD's temporal ``VideoDecoder`` (spec §9).

Module and parameter names follow the sgm state dict (``first_stage_model.{encoder,decoder}.*`` after the
prefix is stripped), so released checkpoints load with ``strict=True``. Frames are batched frame-major
``(b t)``; every temporal op of one decoder call treats its frames as clips of ``timesteps`` frames.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.models.config import VAEConfig

__all__ = [
    "AttnBlock",
    "AutoencoderKL",
    "Encoder",
    "ResnetBlock",
    "TemporalResBlock",
    "TimeMixConv2d",
    "VideoDecoder",
    "VideoResnetBlock",
    "first_stage_state_dict",
    "vae_state_dict_from_diffusers",
]

SPATIAL_EPS = 1e-6
TEMPORAL_EPS = 1e-5
VIDEO_KERNEL = (3, 1, 1)
LOGVAR_RANGE = (-30.0, 20.0)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) evaluated in float32 and cast back to the input dtype."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__(32, channels, eps=eps, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


def _to_clips(x: Tensor, timesteps: int) -> Tensor:
    """``(b t) c h w -> b c t h w``."""
    return x.unflatten(0, (-1, timesteps)).transpose(1, 2)


def _from_clips(x: Tensor) -> Tensor:
    """``b c t h w -> (b t) c h w``."""
    return x.transpose(1, 2).flatten(0, 1)


class ResnetBlock(nn.Module):
    """sgm ``ResnetBlock`` without time embedding (GN eps 1e-6, SiLU, 3x3 convs, 1x1 ``nin_shortcut``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = GroupNorm32(in_channels, SPATIAL_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = GroupNorm32(out_channels, SPATIAL_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, timesteps: int | None = None) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class TemporalResBlock(nn.Module):
    """openaimodel ``ResBlock`` (dims 3, kernel (3,1,1), no time embedding) on ``b c t h w`` input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        pad = tuple(k // 2 for k in VIDEO_KERNEL)
        self.in_layers = nn.Sequential(
            GroupNorm32(channels, TEMPORAL_EPS),
            nn.SiLU(),
            nn.Conv3d(channels, channels, VIDEO_KERNEL, padding=pad),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(channels, TEMPORAL_EPS),
            nn.SiLU(),
            nn.Dropout(0.0),
            nn.Conv3d(channels, channels, VIDEO_KERNEL, padding=pad),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.out_layers(self.in_layers(x))


class VideoResnetBlock(ResnetBlock):
    """sgm ``VideoResBlock`` (``learned``): ``α·time_stack(xs) + (1−α)·xs``, ``α = sigmoid(mix_factor)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels)
        self.time_stack = TemporalResBlock(out_channels)
        self.mix_factor = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, timesteps: int | None = None) -> Tensor:
        xs = _to_clips(super().forward(x), timesteps or x.shape[0])
        xt = self.time_stack(xs)
        alpha = torch.sigmoid(self.mix_factor).to(xs.dtype)
        return _from_clips(alpha * xt + (1.0 - alpha) * xs)


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over all pixels (1x1 conv q, k, v, ``proj_out``; residual)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = GroupNorm32(channels, SPATIAL_EPS)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, timesteps: int | None = None) -> Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q, k, v = (
            proj(h).flatten(2).transpose(1, 2).unsqueeze(1).float() for proj in (self.q, self.k, self.v)
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (b, 1, hw, c), float32
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, hh, ww).to(x.dtype)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Zero pad (right, bottom) by 1, then 3x3 conv with stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TimeMixConv2d(nn.Conv2d):
    """sgm ``AE3DConv``: a Conv2d followed by ``time_mix_conv`` (Conv3d (3,1,1) over the clip's frames)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding)
        pad = tuple(k // 2 for k in VIDEO_KERNEL)
        self.time_mix_conv = nn.Conv3d(out_channels, out_channels, VIDEO_KERNEL, padding=pad)

    def forward(self, x: Tensor, timesteps: int | None = None) -> Tensor:  # type: ignore[override]
        h = super().forward(x)
        return _from_clips(self.time_mix_conv(_to_clips(h, timesteps or x.shape[0])))


class _Level(nn.Module):
    """Container giving the sgm names ``block.B`` and ``downsample`` / ``upsample``."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None, resample_name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        setattr(self, resample_name, resample)


class _Mid(nn.Module):
    def __init__(self, block_1: nn.Module, attn_1: nn.Module, block_2: nn.Module) -> None:
        super().__init__()
        self.block_1 = block_1
        self.attn_1 = attn_1
        self.block_2 = block_2

    def forward(self, x: Tensor, timesteps: int | None = None) -> Tensor:
        x = self.block_1(x, timesteps)
        x = self.attn_1(x)
        return self.block_2(x, timesteps)


class Encoder(nn.Module):
    """sgm kl-f8 ``Encoder`` (double_z): image ``(N, 3, H, W)`` -> moments ``(N, 2·z, H/f, W/f)``."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = (1, *cfg.ch_mult)
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            block_in, block_out = cfg.ch * in_mult[level], cfg.ch * mult
            blocks: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            last = level == len(cfg.ch_mult) - 1
            self.down.append(_Level(blocks, None if last else Downsample(block_in), "downsample"))
        self.mid = _Mid(ResnetBlock(block_in, block_in), AttnBlock(block_in), ResnetBlock(block_in, block_in))
        self.norm_out = GroupNorm32(block_in, SPATIAL_EPS)
        self.conv_out = nn.Conv2d(block_in, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if level.downsample is not None:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VideoDecoder(nn.Module):
    """SVD temporal ``VideoDecoder`` (time_mode ``conv-only``), or a plain per-frame decoder.

    With ``cfg.temporal_decoder=False`` the same spatial modules are built without ``time_stack``,
    ``mix_factor`` and ``conv_out.time_mix_conv``.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.temporal = cfg.temporal_decoder
        res_block = VideoResnetBlock if self.temporal else ResnetBlock
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = _Mid(res_block(block_in, block_in), AttnBlock(block_in), res_block(block_in, block_in))
        levels: list[nn.Module] = []
        for level in reversed(range(len(cfg.ch_mult))):
            block_out = cfg.ch * cfg.ch_mult[level]
            blocks: list[nn.Module] = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(res_block(block_in, block_out))
                block_in = block_out
            levels.insert(0, _Level(blocks, Upsample(block_in) if level != 0 else None, "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = GroupNorm32(block_in, SPATIAL_EPS)
        if self.temporal:
            self.conv_out: nn.Conv2d = TimeMixConv2d(block_in, cfg.out_ch, 3, padding=1)
        else:
            self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, padding=1)

    def forward(self, z: Tensor, timesteps: int | None = None) -> Tensor:
        """Decode unscaled latents ``(b t) c h w``; ``timesteps`` defaults to all frames (one clip)."""
        t = timesteps or z.shape[0]
        if z.shape[0] % t:
            raise ValueError(f"{z.shape[0]} frames are not a whole number of {t}-frame clips")
        h = self.mid(self.conv_in(z), t)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h, t)
            if level.upsample is not None:
                h = level.upsample(h)
        h = F.silu(self.norm_out(h))
        return self.conv_out(h, t) if self.temporal else self.conv_out(h)


class AutoencoderKL(nn.Module):
    """sgm ``AutoencodingEngine`` (no quant convs): ``encoder`` + ``decoder``, latent scale 0.18215."""

    def __init__(self, cfg: VAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or VAEConfig()
        self.encoder = Encoder(self.cfg)
        self.decoder = VideoDecoder(self.cfg)

    @property
    def scale_factor(self) -> float:
        return self.cfg.scale_factor

    def scale_latent(self, z: Tensor) -> Tensor:
        """Unscaled latent -> diffusion space (``z · 0.18215``)."""
        return z * self.cfg.scale_factor

    def unscale_latent(self, z: Tensor) -> Tensor:
        """Diffusion-space latent -> decoder input (``z / 0.18215``)."""
        return z / self.cfg.scale_factor

    def encode_moments(self, image: Tensor) -> Tensor:
        """Raw encoder output ``[mean ; logvar]`` for ``image`` in [-1, 1]."""
        return self.encoder(image)

    def encode_mode(self, image: Tensor) -> Tensor:
        """Posterior mode (= mean), unscaled."""
        return self.encode_moments(image)[:, : self.cfg.z_channels]

    def encode_sample(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One posterior draw ``mean + exp(logvar/2)·ε`` (logvar clamped to [-30, 20]), unscaled."""
        mean, logvar = self.encode_moments(image).chunk(2, dim=1)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE)) * eps

    def decode(self, z_unscaled: Tensor, frames_per_call: int = 1) -> Tensor:
        """Decode ``(N, z, h, w)`` unscaled latents to images in ~[-1, 1].

        Frames are decoded in consecutive chunks of ``frames_per_call``; each chunk is one temporal clip
        (the last one may be shorter). KeyFace's pipeline uses ``frames_per_call=1``.
        """
        if frames_per_call < 1:
            raise ValueError("frames_per_call must be >= 1")
        if z_unscaled.shape[0] % frames_per_call == 0:  # whole clips: one batched call
            return self.decoder(z_unscaled, frames_per_call)
        chunks = [self.decoder(c, c.shape[0]) for c in z_unscaled.split(frames_per_call, dim=0)]
        return torch.cat(chunks, dim=0)

    @staticmethod
    def to_unit_range(image: Tensor) -> Tensor:
        """``clamp((x + 1) / 2, 0, 1)`` as the pipeline does after decoding."""
        return ((image + 1.0) / 2.0).clamp(0.0, 1.0)


def first_stage_state_dict(sd: Mapping[str, Tensor], prefix: str = "first_stage_model.") -> dict[str, Tensor]:
    """Keys under ``prefix`` with the prefix removed (e.g. ``encoder.*`` / ``decoder.*``)."""
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


# ------------------------------------------------------------------------------------------------
# diffusers -> sgm key mapping
# ------------------------------------------------------------------------------------------------

_ATTN = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
    # very old diffusers names
    "query": "q",
    "key": "k",
    "value": "v",
    "proj_attn": "proj_out",
}
_SPATIAL = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
_TEMPORAL = {
    "norm1": "time_stack.in_layers.0",
    "conv1": "time_stack.in_layers.2",
    "norm2": "time_stack.out_layers.0",
    "conv2": "time_stack.out_layers.3",
}
_TOP = {
    "conv_in": "conv_in",
    "conv_norm_out": "norm_out",
    "conv_out": "conv_out",
    "time_conv_out": "conv_out.time_mix_conv",
}


def _map_resnet(rest: str) -> str:
    """Map the part of a key after ``resnets.B.`` (spatio-temporal or plain ResnetBlock2D)."""
    if rest == "time_mixer.mix_factor":
        return "mix_factor"
    sub, _, tail = rest.partition(".")
    if sub == "spatial_res_block":
        layer, _, param = tail.partition(".")
        return f"{_SPATIAL[layer]}.{param}"
    if sub == "temporal_res_block":
        layer, _, param = tail.partition(".")
        return f"{_TEMPORAL[layer]}.{param}"
    return f"{_SPATIAL[sub]}.{tail}"


def _map_attn(rest: str, value: Tensor) -> tuple[str, Tensor]:
    name, param = rest.rsplit(".", 1)
    if param == "weight" and name != "group_norm" and value.ndim == 2:
        value = value[:, :, None, None]
    return f"attn_1.{_ATTN[name]}.{param}", value


def _fold_1x1(conv_w: Tensor, conv_b: Tensor, w2: Tensor, b2: Tensor) -> tuple[Tensor, Tensor]:
    """Fold a 1x1 conv ``(w2, b2)`` applied after ``(conv_w, conv_b)`` into a single conv."""
    dtype = torch.promote_types(conv_w.dtype, torch.float32)
    m = w2.reshape(w2.shape[0], w2.shape[1]).double()
    w = torch.einsum("oj,jikl->oikl", m, conv_w.double())
    b = m @ conv_b.double() + b2.double()
    return w.to(dtype), b.to(dtype)


def vae_state_dict_from_diffusers(sd: Mapping[str, Tensor], *, decoder: bool = True) -> dict[str, Tensor]:
    """Rename a diffusers ``AutoencoderKLTemporalDecoder`` / ``AutoencoderKL`` state dict to sgm names.

    Encoder keys (and a ``quant_conv``, folded exactly into ``encoder.conv_out``) are always mapped.
    With ``decoder=True`` the temporal decoder (``TemporalDecoder``: ``up_blocks.i`` -> ``up.(n-1-i)``,
    ``spatial_res_block`` / ``temporal_res_block`` / ``time_mixer``, ``time_conv_out``) or a plain
    diffusers ``Decoder`` is mapped as well; a non-identity ``post_quant_conv`` cannot be folded exactly
    into the padded 3x3 ``conv_in`` and raises. With ``decoder=False`` decoder keys are dropped.
    Unrecognised keys raise ``KeyError``.
    """
    out: dict[str, Tensor] = {}
    up_ids = [int(m.group(1)) for k in sd if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))]
    n_up = 1 + max(up_ids, default=-1)
    for key, value in sd.items():
        part, _, rest = key.partition(".")
        if part in ("quant_conv", "post_quant_conv"):
            continue
        if part not in ("encoder", "decoder"):
            raise KeyError(f"unrecognised diffusers VAE key: {key}")
        if part == "decoder" and not decoder:
            continue
        try:
            out.update([_map_key(part, rest, value, n_up)])
        except (KeyError, ValueError) as exc:
            raise KeyError(f"unrecognised diffusers VAE key: {key}") from exc

    if "quant_conv.weight" in sd:
        w, b = _fold_1x1(
            out["encoder.conv_out.weight"],
            out["encoder.conv_out.bias"],
            sd["quant_conv.weight"],
            sd["quant_conv.bias"],
        )
        out["encoder.conv_out.weight"], out["encoder.conv_out.bias"] = w, b
    if decoder and "post_quant_conv.weight" in sd:
        w, b = sd["post_quant_conv.weight"], sd["post_quant_conv.bias"]
        eye = torch.eye(w.shape[0], dtype=w.dtype).reshape(w.shape)
        if not (torch.equal(w, eye) and not b.any()):
            raise ValueError("a non-identity post_quant_conv cannot be folded; use decoder=False")
    return out


def _map_key(part: str, rest: str, value: Tensor, n_up: int) -> tuple[str, Tensor]:
    head, _, tail = rest.partition(".")
    if head in _TOP:
        if part == "encoder" and head == "time_conv_out":
            raise KeyError(rest)
        return f"{part}.{_TOP[head]}.{tail}", value
    if head == "mid_block":
        if m := re.fullmatch(r"resnets\.(\d)\.(.+)", tail):
            return f"{part}.mid.block_{int(m.group(1)) + 1}.{_map_resnet(m.group(2))}", value
        if m := re.fullmatch(r"attentions\.0\.(.+)", tail):
            name, value = _map_attn(m.group(1), value)
            return f"{part}.mid.{name}", value
    if head == "down_blocks" and part == "encoder":
        if m := re.fullmatch(r"(\d+)\.resnets\.(\d+)\.(.+)", tail):
            return f"encoder.down.{m.group(1)}.block.{m.group(2)}.{_map_resnet(m.group(3))}", value
        if m := re.fullmatch(r"(\d+)\.downsamplers\.0\.conv\.(\w+)", tail):
            return f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}", value
    if head == "up_blocks" and part == "decoder":
        if m := re.fullmatch(r"(\d+)\.resnets\.(\d+)\.(.+)", tail):
            level = n_up - 1 - int(m.group(1))
            return f"decoder.up.{level}.block.{m.group(2)}.{_map_resnet(m.group(3))}", value
        if m := re.fullmatch(r"(\d+)\.upsamplers\.0\.conv\.(\w+)", tail):
            return f"decoder.up.{n_up - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}", value
    raise KeyError(rest)
