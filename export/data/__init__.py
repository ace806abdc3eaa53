"""Synthetic talking-face data for training the demo avatar (docs/synthetic-data.md)."""

from __future__ import annotations

from .clip import Clip, ClipConfig, Segment, clip_seed, generate_clip, identity_seed
from .dataset import SynthDataset, generate_dataset
from .face import FaceRenderer
from .identity import Identity
from .measure import FaceMeasurer, Measurement, measure_frames, non_mouth_mask, psnr
from .params import PARAM_NAMES, FaceParams
from .speech import Phone, Voice, synthesize

__all__ = [
    "PARAM_NAMES", "Clip", "ClipConfig", "FaceMeasurer", "FaceParams", "FaceRenderer", "Identity", "Measurement",
    "Phone", "Segment", "SynthDataset", "Voice", "clip_seed", "generate_clip", "generate_dataset",
    "identity_seed", "measure_frames", "non_mouth_mask", "psnr", "synthesize",
]
