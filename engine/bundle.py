"""A complete avatar model: both stages, the autoguidance network, the VAE and the audio recipe.

Two on-disk layouts are read (see ``docs/weights.md``):

* **native** (our demo and random models): ``keyface.json`` + ``keyframe.safetensors``,
  ``interpolation.safetensors``, optional ``interpolation_bad.safetensors``, ``vae.safetensors``
  and an optional default identity image;
* **official** KeyFace release: ``keyframe.pt``, ``interpolation.pt``, ``interpolation_bad.pt``
  (the VAE decoder inside them) and the SVD VAE encoder in ``vae/`` (diffusers format).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .checkpoints import load_strict, read_state_dict
from .errors import WeightsError
from .models.config import (
    StageConfig,
    VAEConfig,
    interpolation_stage_full,
    keyframe_stage_full,
    tiny_stage,
    tiny_vae,
)
from .models.networks import InterpolationNetwork
from .models.stage import KeyFaceStage, build_network, load_bad_network
from .models.vae import AutoencoderKL, vae_state_dict_from_diffusers

BUNDLE_FORMAT = "keyface-live-bundle/1"
NATIVE_MANIFEST = "keyface.json"
OFFICIAL_FILES = {
    "keyframe": "keyframe.pt",
    "interpolation": "interpolation.pt",
    "bad": "interpolation_bad.pt",
    "vae_dir": "vae",
}
OFFICIAL_AUDIO = {"keyframe": ["wavlm", "beats"], "interpolation": ["wav2vec2", "beats"]}


@dataclass(frozen=True)
class SamplingDefaults:
    """How a bundle is sampled unless the caller overrides it."""

    keyframe_steps: int = 10
    interpolation_steps: int = 10
    keyframe_guidance: str = "audio_ref"  # or "none" (distilled)
    audio_scale: float = 5.0
    ref_scale: float = 2.0
    interpolation_guidance: str = "auto"  # or "none"
    autoguidance_scale: float = 2.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingDefaults:
        return cls(**data)


@dataclass
class ModelBundle:
    name: str
    keyframe: KeyFaceStage
    interpolation: KeyFaceStage
    bad: InterpolationNetwork | None
    vae: AutoencoderKL
    image_size: int
    audio: dict[str, Any] = field(default_factory=lambda: dict(OFFICIAL_AUDIO))
    """Which encoders feed each stage (``{"keyframe": [...], "interpolation": [...]}``) + options."""
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    identity_image: Path | None = None
    root: Path | None = None

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae.cfg.downsample_factor

    def to(self, device: torch.device | str) -> ModelBundle:
        for module in (self.keyframe, self.interpolation, self.bad, self.vae):
            if module is not None:
                module.to(device)
        return self

    def eval(self) -> ModelBundle:
        for module in (self.keyframe, self.interpolation, self.bad, self.vae):
            if module is not None:
                module.eval().requires_grad_(False)
        return self


def load_bundle(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    trust_pickle: bool = False,
) -> ModelBundle:
    """Load a native or official weights folder (detected by its files)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise WeightsError(f"{root}: weights folder not found")
    if (root / NATIVE_MANIFEST).is_file():
        bundle = _load_native(root, dtype)
    elif (root / OFFICIAL_FILES["keyframe"]).is_file():
        bundle = _load_official(root, dtype, trust_pickle)
    else:
        raise WeightsError(
            f"{root}: neither a KeyFace Live model ({NATIVE_MANIFEST}) nor the official release "
            f"({OFFICIAL_FILES['keyframe']}, {OFFICIAL_FILES['interpolation']}, …); "
            "see docs/weights.md for the expected layout"
        )
    return bundle.to(device).eval()


def _build_stage(config: StageConfig) -> KeyFaceStage:
    with torch.device("meta"):
        return KeyFaceStage(config)


def _load_native(root: Path, dtype: torch.dtype) -> ModelBundle:
    try:
        manifest = json.loads((root / NATIVE_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{root / NATIVE_MANIFEST}: unreadable manifest ({exc})") from exc
    if manifest.get("format") != BUNDLE_FORMAT:
        raise WeightsError(f"{root / NATIVE_MANIFEST}: unsupported format {manifest.get('format')!r}")
    stages = {}
    for kind in ("keyframe", "interpolation"):
        stage = _build_stage(StageConfig.from_dict(manifest[kind]))
        file = root / f"{kind}.safetensors"
        stage.load_file_state(read_state_dict(file), file, dtype)
        stages[kind] = stage
    bad = None
    bad_file = root / "interpolation_bad.safetensors"
    if bad_file.is_file():
        bad = load_bad_network(stages["interpolation"].config, read_state_dict(bad_file), bad_file, dtype)
    vae_cfg = VAEConfig.from_dict(manifest["vae"])
    with torch.device("meta"):
        vae = AutoencoderKL(vae_cfg)
    vae_file = root / "vae.safetensors"
    load_strict(vae, read_state_dict(vae_file), vae_file, lambda k: k, dtype)
    identity = manifest.get("identity")
    return ModelBundle(
        name=manifest.get("name", root.name),
        keyframe=stages["keyframe"],
        interpolation=stages["interpolation"],
        bad=bad,
        vae=vae,
        image_size=int(manifest["image_size"]),
        audio=manifest.get("audio", dict(OFFICIAL_AUDIO)),
        sampling=SamplingDefaults.from_dict(manifest.get("sampling", {})),
        identity_image=(root / identity) if identity else None,
        root=root,
    )


def _load_official(root: Path, dtype: torch.dtype, trust_pickle: bool) -> ModelBundle:
    files = {k: root / v for k, v in OFFICIAL_FILES.items()}
    for key in ("interpolation",):
        if not files[key].is_file():
            raise WeightsError(f"{files[key]}: missing from the official weights folder")
    kf_state = read_state_dict(files["keyframe"], trust_pickle)
    keyframe = _build_stage(keyframe_stage_full())
    keyframe.load_file_state(kf_state, files["keyframe"], dtype)
    interp_state = read_state_dict(files["interpolation"], trust_pickle)
    interpolation = _build_stage(interpolation_stage_full())
    interpolation.load_file_state(interp_state, files["interpolation"], dtype)
    bad = None
    if files["bad"].is_file():
        bad_state = read_state_dict(files["bad"], trust_pickle)
        bad = load_bad_network(interpolation.config, bad_state, files["bad"], dtype)
    with torch.device("meta"):
        vae = AutoencoderKL(VAEConfig())
    vae_state = {k: v for k, v in kf_state.items() if k.startswith("first_stage_model.decoder.")}
    vae_state = {k[len("first_stage_model.") :]: v for k, v in vae_state.items()}
    vae_state.update(_official_encoder_state(files["vae_dir"], kf_state, trust_pickle))
    load_strict(vae, vae_state, f"{files['keyframe']} + {files['vae_dir']}", lambda k: k, dtype)
    return ModelBundle(
        name="keyface-official",
        keyframe=keyframe,
        interpolation=interpolation,
        bad=bad,
        vae=vae,
        image_size=512,
        root=root,
    )


def _official_encoder_state(
    vae_dir: Path, kf_state: dict[str, torch.Tensor], trust_pickle: bool
) -> dict[str, torch.Tensor]:
    """VAE encoder: from the checkpoint if present, else the diffusers SVD VAE folder."""
    if any(k.startswith("first_stage_model.encoder.") for k in kf_state):
        return {k[len("first_stage_model.") :]: v for k, v in kf_state.items() if ".encoder." in k}
    candidates = sorted(vae_dir.glob("diffusion_pytorch_model*.safetensors")) + sorted(vae_dir.glob("*.bin"))
    if not candidates:
        raise WeightsError(
            f"{vae_dir}: the SVD VAE (diffusers format, diffusion_pytorch_model*.safetensors) "
            "is needed to encode identity images"
        )
    diffusers_state = read_state_dict(candidates[0], trust_pickle)
    mapped = vae_state_dict_from_diffusers(diffusers_state)
    return {k: v for k, v in mapped.items() if k.startswith("encoder.")}


# ------------------------------------------------------------------------------------------------
# Native bundles: random initialisation and saving (tests, training, the demo model)
# ------------------------------------------------------------------------------------------------


def random_bundle(
    keyframe: StageConfig | None = None,
    interpolation: StageConfig | None = None,
    vae: VAEConfig | None = None,
    seed: int = 0,
    with_bad: bool = True,
    audio: dict[str, Any] | None = None,
    sampling: SamplingDefaults | None = None,
    name: str = "random",
) -> ModelBundle:
    """A freshly initialised bundle (tiny fixture sizes unless configs are given).

    Output layers are re-initialised with small noise (not zero) so every code path carries
    signal, as in the golden fixtures.
    """
    keyframe = keyframe or tiny_stage("keyframe")
    interpolation = interpolation or tiny_stage("interpolation")
    vae_cfg = vae or tiny_vae()
    torch.manual_seed(seed)
    kf, ip = KeyFaceStage(keyframe), KeyFaceStage(interpolation)
    bad = build_network(interpolation) if with_bad else None
    model = AutoencoderKL(vae_cfg)
    for module in (kf, ip, bad, model):
        if module is not None:
            _refill_constants(module)
    if audio is None:
        audio = {
            "keyframe": ["logmel"],
            "interpolation": ["logmel"],
            "logmel": {"n_mels": keyframe.audio.audio_dim},
        }
    assert bad is None or isinstance(bad, InterpolationNetwork)
    return ModelBundle(
        name=name,
        keyframe=kf,
        interpolation=ip,
        bad=bad,
        vae=model,
        image_size=keyframe.latent_size * vae_cfg.downsample_factor,
        audio=audio,
        sampling=sampling or SamplingDefaults(),
    ).eval()


@torch.no_grad()
def _refill_constants(module: torch.nn.Module) -> None:
    for param in module.parameters():
        flat = param.flatten()
        if param.numel() == 1:
            param.normal_()
        elif bool((flat == flat[0]).all()):
            param.add_(torch.randn_like(param) * (0.05 if float(flat[0]) == 0.0 else 0.1))


def save_bundle(bundle: ModelBundle, path: str | Path, identity_image: Path | None = None) -> Path:
    """Write ``bundle`` as a native folder; returns the folder."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)

    def tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().cpu() for k, v in state.items()}

    save_file(tensors(bundle.keyframe.file_state_dict()), str(root / "keyframe.safetensors"))
    save_file(tensors(bundle.interpolation.file_state_dict()), str(root / "interpolation.safetensors"))
    if bundle.bad is not None:
        bad_state = {"model." + k: v for k, v in bundle.bad.state_dict().items()}
        save_file(tensors(bad_state), str(root / "interpolation_bad.safetensors"))
    save_file(tensors(bundle.vae.state_dict()), str(root / "vae.safetensors"))
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "name": bundle.name,
        "image_size": bundle.image_size,
        "keyframe": bundle.keyframe.config.to_dict(),
        "interpolation": bundle.interpolation.config.to_dict(),
        "vae": bundle.vae.cfg.to_dict(),
        "audio": bundle.audio,
        "sampling": bundle.sampling.__dict__,
    }
    source = identity_image or bundle.identity_image
    if source is not None:
        target = root / ("identity" + Path(source).suffix)
        if Path(source).resolve() != target.resolve():
            target.write_bytes(Path(source).read_bytes())
        manifest["identity"] = target.name
    (root / NATIVE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return root
