"""Per-frame audio embeddings for a bundle: computed by its encoders or read from files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..bundle import ModelBundle
from ..checkpoints import read_state_dict
from ..errors import InputError, WeightsError

REFERENCE_SUFFIXES = {"wavlm": "_wavlm_emb", "beats": "_beats_emb", "wav2vec2": "_wav2vec2_emb"}


def load_precomputed(path: str | Path, bundle: ModelBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings from ``.safetensors``: ours (keys ``keyframe``, ``interpolation``) or the
    reference's per-encoder files (``<stem>_{wavlm,beats,wav2vec2}_emb.safetensors``, key
    ``audio``), given as any one of them or the common stem."""
    path = Path(path)
    if path.is_file():
        try:
            data = read_state_dict(path)
        except WeightsError as exc:
            raise InputError(str(exc)) from None
        if "keyframe" in data and "interpolation" in data:
            return data["keyframe"].float(), data["interpolation"].float()
        stem = str(path.with_suffix(""))
        for suffix in REFERENCE_SUFFIXES.values():
            stem = stem.removesuffix(suffix)
    else:
        stem = str(path)
    parts = {}
    for name, suffix in REFERENCE_SUFFIXES.items():
        file = Path(f"{stem}{suffix}.safetensors")
        if file.is_file():
            parts[name] = read_state_dict(file)["audio"].float()
    return combine(parts, bundle, source=str(path))


def combine(
    parts: dict[str, torch.Tensor], bundle: ModelBundle, source: str = "audio features"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-encoder (F, 2, D) features as each stage wants them, truncated to the
    common length (keyframe = WavLM‖BEATs, interpolation = wav2vec2‖BEATs for the official)."""
    outs = []
    for stage in ("keyframe", "interpolation"):
        names = bundle.audio[stage]
        missing = [n for n in names if n not in parts]
        if missing:
            raise InputError(f"{source}: no {', '.join(missing)} embeddings for the {stage} model")
        outs.append([parts[n] for n in names])
    length = min(t.shape[0] for group in outs for t in group)
    kf, ip = (torch.cat([t[:length] for t in group], dim=-1) for group in outs)
    return kf, ip


def compute_features(bundle: ModelBundle, wave: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the bundle's audio encoders on a 16 kHz mono waveform."""
    names = sorted(set(bundle.audio["keyframe"]) | set(bundle.audio["interpolation"]))
    tensor = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    parts = {name: encoder_for(bundle, name).encode(tensor) for name in names}
    return combine(parts, bundle)


def encoder_for(bundle: ModelBundle, name: str):
    """The named audio encoder of a bundle (imported lazily; heavy ones load weights)."""
    options = bundle.audio.get(name, {})
    if name == "logmel":
        from ..audio.logmel import LogMelEncoder

        return LogMelEncoder(**options)
    if bundle.root is None:
        raise WeightsError(f"the {name} encoder needs a weights folder")
    from ..audio.features import load_encoder

    return load_encoder(name, bundle.root)
