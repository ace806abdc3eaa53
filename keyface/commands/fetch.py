"""``keyface fetch``: download the official KeyFace release into a weights folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.errors import KeyFaceError

DOWNLOADS = (
    # (hub repo, files or None for a snapshot, subfolder in the weights folder)
    (
        "toninio19/keyface",
        [
            "keyframe.pt",
            "interpolation.pt",
            "interpolation_bad.pt",
            "WavLM-Base+.pt",
            "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt",
        ],
        "",
    ),
    (
        "stabilityai/stable-video-diffusion-img2vid",
        ["vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors"],
        "",
    ),
    ("facebook/wav2vec2-base-960h", None, "wav2vec2-base-960h"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch",
        help="download the official KeyFace weights (needs internet)",
        description="Download the official KeyFace release (keyframe, interpolation and "
        "autoguidance models, WavLM Base+, BEATs, wav2vec2, the SVD VAE) into DIR, laid out as "
        "docs/weights.md describes. Needs huggingface_hub and internet access; some repositories "
        "require accepting their licence on huggingface.co and `huggingface-cli login` first.",
    )
    p.add_argument("--out", default="weights", help="target folder (default: ./weights)")
    p.add_argument("--dry-run", action="store_true", help="list what would be downloaded")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.dry_run:
        for repo, files, sub in DOWNLOADS:
            target = out / sub if sub else out
            for name in files or ["(whole repository)"]:
                print(f"{repo}: {name} -> {target}")
        return 0
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise KeyFaceError("fetch needs huggingface_hub: pip install 'keyface-live[fetch]'") from None
    for repo, files, sub in DOWNLOADS:
        target = out / sub if sub else out
        try:
            if files is None:
                snapshot_download(repo, local_dir=target)
            else:
                for name in files:
                    hf_hub_download(repo, name, local_dir=target)
        except Exception as exc:  # network, auth, missing file: report, never a traceback
            raise KeyFaceError(f"downloading {repo} failed: {exc}") from exc
    print(f"weights ready in {out}; use --weights {out}")
    return 0
