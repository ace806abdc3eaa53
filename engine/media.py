"""Media files: reading identity images and writing H.264 MP4s with the audio muxed (PyAV)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .audio.base import SAMPLE_RATE
from .errors import InputError

FPS = 25


def load_image(path: str | Path) -> torch.Tensor:
    """RGB image → float (3, H, W) in [0, 1]."""
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise InputError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def write_mp4(
    path: str | Path,
    frames: Iterable[torch.Tensor | np.ndarray],
    audio: np.ndarray | None = None,
    fps: int = FPS,
    sample_rate: int = SAMPLE_RATE,
    crf: int = 18,
) -> int:
    """Write uint8 (H, W, 3) frames as H.264 (yuv420p) plus mono float audio as AAC.

    Returns the number of video frames written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": "veryfast"}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        for frame in frames:
            arr = frame.numpy() if isinstance(frame, torch.Tensor) else frame
            if count == 0:
                video.height, video.width = arr.shape[0] - arr.shape[0] % 2, arr.shape[1] - arr.shape[1] % 2
            arr = np.array(arr[: video.height, : video.width], copy=True, order="C")
            vf = av.VideoFrame.from_ndarray(arr, format="rgb24")
            vf.pts = count
            vf.time_base = Fraction(1, fps)
            container.mux(video.encode(vf))
            count += 1
        container.mux(video.encode(None))
        if audio_stream is not None and audio is not None:
            _write_audio(container, audio_stream, audio, sample_rate)
    return count


def _write_audio(container, stream, audio: np.ndarray, sample_rate: int, chunk: int = 1024) -> None:
    samples = np.clip(audio.astype(np.float32), -1.0, 1.0)
    for start in range(0, len(samples), chunk):
        part = samples[None, start : start + chunk]
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout="mono")
        af.sample_rate = sample_rate
        af.pts = start
        af.time_base = Fraction(1, sample_rate)
        container.mux(stream.encode(af))
    container.mux(stream.encode(None))
