"""What live sessions share: the loaded model, its (possibly batched) networks, caches."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterator

import torch

from ..audio.streaming import StreamingExtractor
from ..bundle import ModelBundle
from ..pipeline.audio_inputs import encoder_for
from ..pipeline.offline import decode_frames, identity_latent
from ..sampling.denoiser import NetworkFn
from .timeline import FeatureRows


class LiveEngine:
    """One loaded model serving any number of sessions.

    ``networks`` maps ``keyframe`` / ``interpolation`` / ``bad`` to the callables the guiders use;
    by default the bundle's own modules, replaceable by batched or compiled backends.
    """

    def __init__(self, bundle: ModelBundle, networks: dict[str, NetworkFn] | None = None,
                 identity_cache_size: int = 64) -> None:
        self.bundle = bundle
        self.device = bundle.keyframe.audio_projection.linear.weight.device
        self.dtype = bundle.keyframe.dtype
        if networks is None:
            networks = {"keyframe": bundle.keyframe.network, "interpolation": bundle.interpolation.network}
            if bundle.bad is not None:
                networks["bad"] = bundle.bad
        self.networks = networks
        self.recipe = {"keyframe": bundle.audio["keyframe"], "interpolation": bundle.audio["interpolation"]}
        self._encoders = {name: encoder_for(bundle, name) for name in self._encoder_names()}
        self.identity_cache_size = max(1, identity_cache_size)
        self._identity_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._silence: FeatureRows | None = None

    def _encoder_names(self) -> list[str]:
        return sorted(set(self.recipe["keyframe"]) | set(self.recipe["interpolation"]))

    def make_feature_streams(self) -> dict[str, object]:
        """Fresh streaming extractors, one per encoder (a new utterance starts from silence)."""
        streams: dict[str, object] = {}
        for name, encoder in self._encoders.items():
            stream = getattr(encoder, "stream", None)
            streams[name] = stream() if callable(stream) else StreamingExtractor(encoder)
        return streams

    def silence_rows(self) -> FeatureRows:
        """Features of a silent frame (what idle frames are conditioned on)."""
        if self._silence is None:
            zeros = torch.zeros(5 * 640)
            parts = {name: enc.encode(zeros)[2:3] for name, enc in self._encoders.items()}
            kf = torch.cat([parts[n] for n in self.recipe["keyframe"]], dim=-1)
            ip = torch.cat([parts[n] for n in self.recipe["interpolation"]], dim=-1)
            self._silence = (kf, ip)
        return self._silence

    @torch.no_grad()
    def identity_latent(self, image: torch.Tensor) -> torch.Tensor:
        """Stored-space identity latent of an RGB image, encoded once per distinct image.

        The cache keeps the ``identity_cache_size`` most recently used faces (sessions hold their
        own latent, so an evicted face only costs a re-encode when it is uploaded again)."""
        key = hashlib.sha1(image.float().cpu().numpy().tobytes()).hexdigest()
        cache = self._identity_cache
        if key in cache:
            cache.move_to_end(key)
        else:
            cache[key] = identity_latent(self.bundle, image).to(self.device)
            while len(cache) > self.identity_cache_size:
                cache.popitem(last=False)
        return cache[key]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Stored-space latents → float RGB (n, H, W, 3) in [0, 1]; one frame per decoder clip."""
        return decode_frames(self.bundle, latents)

    @contextlib.contextmanager
    def timer(self, stats, stage: str) -> Iterator[Timing]:
        """Time a stage (no autograd) into ``stats.per_stage_seconds``."""
        timing = Timing()
        start = time.perf_counter()
        with torch.no_grad():
            yield timing
        timing.seconds = time.perf_counter() - start
        stats.per_stage_seconds[stage] += timing.seconds


class Timing:
    seconds: float = 0.0
