"""``keyface render``: an MP4 of the avatar speaking an audio file (the full KeyFace schedule)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from engine.audio.base import SAMPLES_PER_FRAME
from engine.audio.resample import load_audio
from engine.emotion import Emotion, emotion_track, parse_emotion
from engine.errors import InputError
from engine.media import load_image, write_mp4
from engine.pipeline.audio_inputs import compute_features, load_precomputed
from engine.pipeline.offline import OfflineRenderer, RenderSettings, identity_latent

from .common import add_model_options, check_step_counts, load_model

EPILOG = """examples:
  keyface render --audio speech.wav --out out.mp4
  keyface render --image face.png --audio speech.wav --out out.mp4 --emotion happy
  keyface render --audio speech.wav --out out.mp4 --emotion neutral --emotion happy --emotion sad
  keyface render --audio speech.wav --audio-emb speech_wavlm_emb.safetensors --weights ~/keyface

The video has exactly round(audio seconds x 25) frames at 25 fps; see docs/rendering.md for how
a video ends and how emotions ramp."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="render an MP4 of the avatar speaking an audio file",
        description="Render a talking-avatar MP4 from an identity image and speech audio.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image", help="identity image (default: the model's own identity)")
    p.add_argument("--audio", required=True, help="speech audio (WAV, MP3, FLAC, … any rate)")
    p.add_argument("--out", required=True, help="output .mp4 path")
    p.add_argument(
        "--audio-emb",
        help="precomputed embeddings (.safetensors): ours (keys keyframe/interpolation) or the "
        "reference's <name>_{wavlm,beats,wav2vec2}_emb.safetensors",
    )
    emo = p.add_argument_group("emotion")
    emo.add_argument(
        "--emotion",
        action="append",
        metavar="NAME|V,A",
        help="emotion preset (happy, sad, calm, …) or 'valence,arousal'; repeat for a transition over the video",
    )
    emo.add_argument("--valence", type=float, help="valence in [-1, 1]")
    emo.add_argument("--arousal", type=float, help="arousal in [-1, 1]")
    emo.add_argument("--accentuate", action="store_true", help="exaggerate the emotion (×1.5)")
    smp = p.add_argument_group("sampling")
    smp.add_argument("--steps", type=int, help="sampling steps for both stages")
    smp.add_argument("--keyframe-steps", type=int, help="keyframe sampling steps")
    smp.add_argument("--interpolation-steps", type=int, help="interpolation sampling steps")
    smp.add_argument("--seed", type=int, default=23, help="random seed (default: 23)")
    add_model_options(p)
    p.set_defaults(func=run)


def emotions_from_args(args: argparse.Namespace) -> list[Emotion]:
    if args.valence is not None or args.arousal is not None:
        if args.emotion:
            raise InputError("give either --emotion or --valence/--arousal, not both")
        states = [Emotion(args.valence or 0.0, args.arousal or 0.0)]
    else:
        states = [parse_emotion(s) for s in (args.emotion or ["neutral"])]
    return [s.accentuated() for s in states] if args.accentuate else states


def run(args: argparse.Namespace) -> int:
    states = emotions_from_args(args)
    check_step_counts(args, ("steps", "keyframe_steps", "interpolation_steps"))
    wave = load_audio(args.audio)
    num_frames = round(len(wave) / SAMPLES_PER_FRAME)
    bundle, autocast = load_model(args)
    image_path = args.image or bundle.identity_image
    if image_path is None:
        raise InputError("this model has no default identity: pass --image face.png")
    identity = identity_latent(bundle, load_image(image_path))
    if args.audio_emb:
        kf_audio, ip_audio = load_precomputed(args.audio_emb, bundle)
    else:
        kf_audio, ip_audio = compute_features(bundle, wave)
    emotions = emotion_track(states, num_frames)
    settings = RenderSettings(
        keyframe_steps=args.keyframe_steps or args.steps,
        interpolation_steps=args.interpolation_steps or args.steps,
        seed=args.seed,
        autocast=autocast,
        backend=args.backend,
    )
    with torch.inference_mode():
        renderer = OfflineRenderer(bundle, identity, kf_audio, ip_audio, emotions, num_frames, settings)
        with tqdm(total=renderer.total_steps(), unit="step", desc="rendering") as bar:
            renderer.progress = bar.update
            written = write_mp4(args.out, renderer.frames(), audio=wave)
    print(f"wrote {Path(args.out)}: {written} frames, {len(wave) / 16000:.2f} s")
    return 0
