"""KeyFace Live streaming server: WebRTC out (aiortc), TTS audio in over websockets, web client."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("keyface-live")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
