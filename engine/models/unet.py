"""The KeyFace VideoUNet (SVD architecture, audio added to the time embedding and cross-attended).

Module and parameter names follow the released state dicts under ``model.diffusion_model.``
(see ``docs/weights.md``), so official checkpoints load without renaming.
Batches are clip-major: a leading dimension ``b·t`` of ``b`` clips × ``t`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import UNetConfig
from .layers import (
    AlphaBlender,
    Attention,
    FeedForward,
    group_norm,
    timestep_embedding,
)


@dataclass
class FrameLayout:
    """How the flat ``b·t`` batch splits into clips, and which frames are image-only."""

    num_frames: int
    image_only_indicator: torch.Tensor  # (b, t)

    @property
    def num_clips(self) -> int:
        return self.image_only_indicator.shape[0]


class ResBlock(nn.Module):
    """openaimodel ResBlock (no scale-shift norm); 2-D, or 3-D with a (3,1,1) temporal kernel."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, temporal: bool = False):
        super().__init__()
        if temporal:
            conv = nn.Conv3d
            kernel, padding = (3, 1, 1), (1, 0, 0)
        else:
            conv = nn.Conv2d
            kernel, padding = 3, 1
        self.temporal = temporal
        self.in_layers = nn.Sequential(
            group_norm(channels), nn.SiLU(), conv(channels, out_channels, kernel, padding=padding)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            group_norm(out_channels),
            nn.SiLU(),
            nn.Dropout(0.0),
            conv(out_channels, out_channels, kernel, padding=padding),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)
        if self.temporal:  # emb (b, t, C) -> (b, C, t, 1, 1)
            emb_out = emb_out.transpose(1, 2)
        while emb_out.dim() < h.dim():
            emb_out = emb_out[..., None]
        h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class VideoResBlock(ResBlock):
    """Spatial ResBlock followed by a temporal ResBlock, blended by a learned α."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__(channels, emb_channels, out_channels)
        self.time_stack = ResBlock(out_channels, emb_channels, out_channels, temporal=True)
        self.time_mixer = AlphaBlender()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
        xs = super().forward(x, emb)
        bt, c, h, w = xs.shape
        t = layout.num_frames
        x5 = xs.reshape(bt // t, t, c, h, w).transpose(1, 2)
        xt = self.time_stack(x5, emb.reshape(bt // t, t, -1))
        xt = xt.transpose(1, 2).reshape(bt, c, h, w)
        return self.time_mixer(xs, xt, layout.image_only_indicator)


class BasicTransformerBlock(nn.Module):
    """Spatial block: self-attention, audio cross-attention, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = Attention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class VideoTransformerBlock(nn.Module):
    """Temporal block: extra GEGLU mix layer, self-attention over frames, audio cross-attention."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.ff_in = FeedForward(dim, dim_out=dim)
        self.norm_in = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        bt, s, c = x.shape
        b = bt // num_frames
        x = x.reshape(b, num_frames, s, c).transpose(1, 2).reshape(b * s, num_frames, c)
        x = x + self.ff_in(self.norm_in(x))
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        x = x + self.ff(self.norm3(x))
        return x.reshape(b, s, num_frames, c).transpose(1, 2).reshape(bt, s, c)


class SpatialVideoTransformer(nn.Module):
    """Spatial transformer + temporal transformer blended by a learned α (depth 1)."""

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.channels = channels
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, dim_head, context_dim)])
        self.time_stack = nn.ModuleList([VideoTransformerBlock(inner, heads, dim_head, context_dim)])
        self.time_pos_embed = nn.Sequential(
            nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, channels)
        )
        self.time_mixer = AlphaBlender()
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor, layout: FrameLayout) -> torch.Tensor:
        bt, c, h, w = x.shape
        t = layout.num_frames
        x_in = x
        # Temporal blocks cross-attend to each clip's context, repeated for every pixel.
        time_context = context[::t].repeat_interleave(h * w, dim=0)
        x = self.norm(x).flatten(2).transpose(1, 2)
        x = self.proj_in(x)
        frame_idx = torch.arange(t, device=x.device).repeat(bt // t)
        pos = self.time_pos_embed(timestep_embedding(frame_idx, c).to(x.dtype))[:, None, :]
        for block, mix_block in zip(self.transformer_blocks, self.time_stack, strict=True):
            x = block(x, context)
            x_mix = mix_block(x + pos, time_context, t)
            x = self.time_mixer(x, x_mix, layout.image_only_indicator)
        x = self.proj_out(x)
        return x.transpose(1, 2).reshape(bt, c, h, w) + x_in


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """Runs its layers, passing each the inputs it needs."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, layout: FrameLayout
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, VideoResBlock):
                x = layer(x, emb, layout)
            elif isinstance(layer, SpatialVideoTransformer):
                x = layer(x, context, layout)
            else:
                x = layer(x)
        return x


class VideoUNet(nn.Module):
    """KeyFace VideoUNet; ``in_channels`` 8 for keyframes, 9 for interpolation."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        mc = config.model_channels
        ted = config.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        self.label_emb = nn.Sequential(
            nn.Sequential(nn.Linear(config.label_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted))
        )

        def transformer(ch: int) -> SpatialVideoTransformer:
            heads = ch // config.num_head_channels
            return SpatialVideoTransformer(ch, heads, config.num_head_channels, config.context_dim)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(config.in_channels, mc, 3, padding=1))])
        skip_channels = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [VideoResBlock(ch, ted, mult * mc)]
                ch = mult * mc
                if ds in config.attention_resolutions:
                    layers.append(transformer(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            VideoResBlock(ch, ted, ch), transformer(ch), VideoResBlock(ch, ted, ch)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [VideoResBlock(ch + skip_channels.pop(), ted, mc * mult)]
                ch = mc * mult
                if ds in config.attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(mc, config.out_channels, 3, padding=1))

    def embed(self, timesteps: torch.Tensor, audio: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Time embedding plus ``label_emb(y ‖ audio)`` (audio = one vector per frame)."""
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        label_in = audio if y is None or y.shape[1] == 0 else torch.cat([y, audio], dim=1)
        return emb + self.label_emb(label_in.to(dtype))

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
        num_video_frames: int = 14,
        image_only_indicator: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict v for ``x`` (b·t, in_ch, H, W) at noise level ``timesteps`` = c_noise (b·t,).

        ``context`` is the audio as the conditioner emits it, (b, t, audio_dim): every frame
        cross-attends to its clip's ``t`` tokens, and frame i's own vector joins ``y`` in the
        time embedding. ``y`` is the per-frame emotion vector (keyframe model only).
        """
        t = num_video_frames
        b = x.shape[0] // t
        if image_only_indicator is None:
            image_only_indicator = torch.zeros(b, t, device=x.device)
        layout = FrameLayout(t, image_only_indicator)
        audio = context.reshape(-1, context.shape[-1])
        if context.shape[0] != x.shape[0]:
            context = context.repeat_interleave(t, dim=0)
        if y is not None and y.shape[0] != x.shape[0]:
            y = y.repeat_interleave(t, dim=0)
        dtype = self.input_blocks[0][0].weight.dtype
        emb = self.embed(timesteps, audio, y)
        h = x.to(dtype)
        context = context.to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb, context, layout)
            skips.append(h)
        h = self.middle_block(h, emb, context, layout)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, layout)
        return self.out(h)
