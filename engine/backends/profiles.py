"""Export/engine profiles: the shapes and precisions one set of graphs or engines is built for.

A profile is named on the command line as ``NAME`` or ``NAME:key=value,key=value`` (e.g.
``cuda-fp16:clips=1/2/8``); ranges are ``min/opt/max``. Batch dimensions are dynamic within their
range (multi-session batching); frames and resolution are fixed per profile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .base import BackendError

Range = tuple[int, int, int]
DTYPES = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Profile:
    name: str = "default"
    frames: int = 14
    """Frames per clip (keyframe slots / interpolation window)."""
    latent: int | None = None
    """Latent height = width; None = the model's own (64 for the released models)."""
    clips: Range = (1, 1, 2)
    """Clips per UNet graph call (min/opt/max): one per session and segment."""
    decode_frames: int = 1
    """Frames per temporal VAE decoder clip (KeyFace decodes frame by frame)."""
    decode_rows: Range = (1, 14, 28)
    """Latent frames per decoder graph call (a multiple of ``decode_frames``)."""
    encode_rows: Range = (1, 1, 4)
    """Images per VAE encoder call."""
    audio_frames: Range = (1, 250, 1500)
    """Video frames (640 samples each) per audio encoder call."""
    dtype: str = "fp32"
    """UNet weights/compute precision in the graph (fp32 I/O either way)."""
    vae_dtype: str = "fp32"
    dynamic_spatial: bool = False
    """Leave the latent size dynamic (keyframe UNet and VAE only); traced at ``trace_latent``."""
    trace_latent: int = 16
    fp8: bool = False
    """TensorRT fp8 (needs Q/DQ nodes in the graph, see docs/export.md)."""
    opset: int = 17

    def __post_init__(self) -> None:
        for key in ("clips", "decode_rows", "encode_rows", "audio_frames"):
            lo, opt, hi = getattr(self, key)
            if not 1 <= lo <= opt <= hi:
                raise BackendError(f"profile {self.name}: {key} needs 1 <= min <= opt <= max")
        for key in ("dtype", "vae_dtype"):
            if getattr(self, key) not in DTYPES:
                raise BackendError(f"profile {self.name}: {key} must be one of {', '.join(DTYPES)}")
        if self.opset < 17:
            raise BackendError(f"profile {self.name}: opset must be 17 or newer")
        if self.frames < 3:
            raise BackendError(f"profile {self.name}: frames must be at least 3")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        kwargs = dict(data)
        for key in ("clips", "decode_rows", "encode_rows", "audio_frames"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    @property
    def key(self) -> str:
        """Stable short id of everything that changes the exported graphs."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:10]}"

    def resolve_latent(self, model_latent: int) -> int:
        return self.latent or model_latent


BUILTIN: dict[str, Profile] = {
    "default": Profile(),
    "cuda-fp16": Profile(name="cuda-fp16", clips=(1, 2, 4), dtype="fp16"),
    "cuda-bf16": Profile(name="cuda-bf16", clips=(1, 2, 4), dtype="bf16"),
    "cuda-fp16-decode": Profile(name="cuda-fp16-decode", clips=(1, 2, 4), dtype="fp16", vae_dtype="fp16"),
}


def _parse_value(field: dataclasses.Field, text: str) -> Any:
    default = field.default
    if isinstance(default, tuple):
        parts = text.replace(",", "/").split("/")
        if len(parts) == 1:
            parts = parts * 3
        if len(parts) != 3:
            raise ValueError("a range is min/opt/max")
        return tuple(int(p) for p in parts)
    if isinstance(default, bool):
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError("expected true or false")
        return text.lower() in ("1", "true", "yes")
    if field.name == "latent" or isinstance(default, int):
        return None if text.lower() in ("none", "auto") else int(text)
    return text


def parse_profile(spec: str | Profile | None) -> Profile:
    """``NAME`` or ``NAME:key=value,...`` → :class:`Profile` (None = ``default``)."""
    if isinstance(spec, Profile):
        return spec
    name, _, overrides = (spec or "default").partition(":")
    if name not in BUILTIN:
        raise BackendError(f"unknown profile {name!r}; built-in profiles: {', '.join(BUILTIN)}")
    base = BUILTIN[name]
    if not overrides:
        return base
    fields = {f.name: f for f in dataclasses.fields(Profile)}
    changes: dict[str, Any] = {}
    for item in overrides.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields or key == "name":
            raise BackendError(f"bad profile override {item!r}; fields: {', '.join(sorted(fields))}")
        try:
            changes[key] = _parse_value(fields[key], value.strip())
        except ValueError as exc:
            raise BackendError(f"bad profile override {item!r}: {exc}") from None
    return dataclasses.replace(base, **changes)
