"""Reading audio-encoder checkpoints with clear :class:`WeightsError` messages."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from engine.checkpoints import load_strict as _load_strict
from engine.checkpoints import read_state_dict
from engine.errors import WeightsError

M = TypeVar("M", bound=nn.Module)


def require_path(path: str | Path, what: str, directory: bool = False) -> Path:
    """Return ``path`` as a Path, raising :class:`WeightsError` if it does not exist."""
    path = Path(path)
    if directory and not path.is_dir():
        raise WeightsError(f"{what}: directory not found: {path}")
    if not directory and not path.is_file():
        raise WeightsError(f"{what}: file not found: {path}")
    return path


def load_tensor_file(path: str | Path, what: str, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from ``.safetensors`` or a torch pickle (``.bin``/``.pt``)."""
    require_path(path, what)
    try:
        return read_state_dict(path, trust_pickle=trust_pickle)
    except WeightsError as exc:
        raise WeightsError(f"{what}: {exc}") from exc


def original_checkpoint(
    path: str | Path, what: str, trust_pickle: bool = False
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a microsoft/unilm ``{'cfg': dict, 'model': state_dict, ...}`` checkpoint."""
    path = require_path(path, what)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # garbage, not a forbidden class
            detail = "not a torch checkpoint"
            raise WeightsError(f"{what}: {path}: unreadable or truncated checkpoint ({detail})") from exc
        raise WeightsError(
            f"{what}: {path} holds Python objects besides tensors and plain data; pass "
            f"trust_pickle=True (--trust-weights) if you trust this file ({exc.__class__.__name__})"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{what}: {path}: unreadable or truncated checkpoint ({exc})") from exc
    if not isinstance(ckpt, Mapping) or "cfg" not in ckpt or "model" not in ckpt:
        raise WeightsError(f"{what}: {path} is not an original checkpoint (expected keys 'cfg' and 'model')")
    cfg, state = ckpt["cfg"], ckpt["model"]
    if not isinstance(cfg, Mapping) and hasattr(cfg, "__dict__"):  # a config object (trusted pickle)
        cfg = vars(cfg)
    if not isinstance(cfg, Mapping):
        raise WeightsError(f"{what}: {path}: 'cfg' is not a dict")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{what}: {path}: 'model' is not a state dict of tensors")
    return dict(cfg), dict(state)


def rename_legacy_weight_norm(key: str) -> str:
    """``pos_conv_embed.conv.weight_g/_v`` (older hub files) → current parametrization names."""
    for old, new in (("weight_g", "original0"), ("weight_v", "original1")):
        key = key.replace(f"pos_conv_embed.conv.{old}", f"pos_conv_embed.conv.parametrizations.weight.{new}")
    return key


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Strict key and shape checked loading (see :func:`engine.checkpoints.load_strict`)."""
    _load_strict(module, state, what, rename=lambda key: key)


def build_loaded(factory: Callable[[], M], state: Mapping[str, torch.Tensor], what: str) -> M:
    """Build a module on the meta device (no random init) and assign ``state`` into it, strictly."""
    with torch.device("meta"):
        module = factory()
    load_strict(module, state, what)
    return module


def fit_masked_spec_embed(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """transformers builds ``masked_spec_embed`` (training-only) iff a mask probability is > 0."""
    if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
        state.setdefault("masked_spec_embed", torch.zeros(config.hidden_size))
    else:
        state.pop("masked_spec_embed", None)
    return state
