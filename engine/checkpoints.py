"""Reading checkpoint files and loading them strictly into our modules.

Official KeyFace files are DeepSpeed ``.pt`` dicts (``{"module": {"_forward_module.<key>": …}}``);
ours are safetensors. Both end up as a flat ``{name: tensor}`` with the official names, and every
module is loaded with strict key and shape checking: one clear :class:`WeightsError` names the file
and the first offending keys.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from .errors import WeightsError

STRIP_PREFIXES = ("_forward_module.", "module.")
MAX_LISTED_KEYS = 5

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of fp32, fp16, bf16") from None


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` / ``.pt`` / ``.ckpt`` / ``.bin`` file into a flat tensor dict.

    Pickle-based files are read with ``weights_only=True``; ``trust_pickle`` allows full
    unpickling for checkpoints that carry extra Python objects (only for files you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found")
    try:
        if path.suffix == ".safetensors":
            raw: Mapping[str, object] = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: holds Python objects besides tensors; re-run with --trust-weights "
            f"(KEYFACE_TRUST_WEIGHTS=1) if you trust this file ({exc.__class__.__name__})"
        ) from exc
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable or truncated checkpoint ({exc})") from exc
    return flatten_checkpoint(raw, path)


def flatten_checkpoint(raw: Mapping[str, object], path: Path) -> dict[str, torch.Tensor]:
    """Unwrap DeepSpeed/Lightning containers and strip wrapper prefixes from the keys."""
    for container in ("module", "state_dict", "model_state_dict"):
        inner = raw.get(container)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            raw = inner
            break
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    if not out:
        raise WeightsError(f"{path}: no tensors found")
    return out


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = f" (+{len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else ""
    return shown + more


def load_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | Path,
    rename: Callable[[str], str | None],
    dtype: torch.dtype | None = None,
) -> None:
    """Load ``state`` into ``module``; ``rename`` maps a file key to a module key or None (skip).

    Missing, unexpected (after renaming) and mis-shaped tensors raise one :class:`WeightsError`.
    """
    expected = module.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        target = rename(key)
        if target is not None:
            mapped[target] = tensor
    missing = expected.keys() - mapped.keys()
    unexpected = mapped.keys() - expected.keys()
    wrong_shape = [
        f"{k} {tuple(mapped[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected.keys() & mapped.keys()
        if mapped[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_listing(unexpected)}")
    if wrong_shape:
        problems.append(f"wrong shape for {len(wrong_shape)}: {_listing(wrong_shape)}")
    if problems:
        raise WeightsError(f"{source}: does not match the model; " + "; ".join(problems))
    dtype = dtype or next(iter(expected.values())).dtype
    module.load_state_dict({k: v.to(dtype) for k, v in mapped.items()}, strict=True, assign=True)


def prefix_rename(mapping: Mapping[str, str], ignore: Iterable[str] = ()) -> Callable[[str], str | None]:
    """A ``rename`` for :func:`load_strict`: replace the first matching file-key prefix.

    Keys starting with an ``ignore`` prefix are skipped; keys matching no prefix are kept as
    they are (and so reported as unexpected).
    """
    ignore = tuple(ignore)

    def rename(key: str) -> str | None:
        if ignore and key.startswith(ignore):
            return None
        for src, dst in mapping.items():
            if key.startswith(src):
                return dst + key[len(src) :]
        return key

    return rename
