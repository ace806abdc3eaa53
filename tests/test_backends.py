"""The backend interface: selection, profiles, the PyTorch backend and the renderer hook."""

from __future__ import annotations

import pytest
import torch

from engine.backends import BackendError, default_backend_name, load_backend
from engine.backends.profiles import BUILTIN, Profile, parse_profile
from engine.backends.torch_backend import TorchBackend
from engine.bundle import random_bundle
from engine.models.conditioning import Conditioning
from engine.pipeline.offline import OfflineRenderer, RenderSettings
from engine.sampling.guiders import AudioRefGuider, AutoGuider, PlainGuider


@pytest.fixture(scope="module")
def bundle():
    return random_bundle(seed=5)


def test_profiles_parse_and_key():
    assert parse_profile(None) == BUILTIN["default"]
    p = parse_profile("cuda-fp16:clips=1/4/8,latent=32,dynamic_spatial=true")
    assert (p.dtype, p.clips, p.latent, p.dynamic_spatial) == ("fp16", (1, 4, 8), 32, True)
    assert p.key != parse_profile("cuda-fp16").key and p.key.startswith("cuda-fp16-")
    assert Profile.from_dict(p.to_dict()) == p
    for bad, message in (("nope", "unknown profile"), ("default:frames", "bad profile override"),
                         ("default:clips=4/2/1", "min <= opt <= max"), ("default:dtype=int8", "dtype must"),
                         ("default:opset=13", "opset must be 17"), ("default:clips=a", "bad profile override")):
        with pytest.raises(BackendError, match=message):
            parse_profile(bad)


def test_backend_selection(bundle, monkeypatch):
    monkeypatch.delenv("KEYFACE_BACKEND", raising=False)
    assert default_backend_name() == "torch"
    monkeypatch.setenv("KEYFACE_BACKEND", "ort")
    assert default_backend_name() == "ort"
    assert isinstance(load_backend("torch", bundle), TorchBackend)
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        load_backend("tpu", bundle)
    with pytest.raises(BackendError, match="CUDA graphs need the model on a CUDA GPU"):
        TorchBackend(bundle, cuda_graphs=True)


def test_torch_backend_is_the_renderer_default(bundle):
    backend = TorchBackend(bundle)
    s = bundle.sampling
    kf = backend.keyframe_guider(s)
    assert isinstance(kf, AudioRefGuider) and kf.network is bundle.keyframe
    assert (kf.audio_scale, kf.ref_scale, kf.num_frames) == (s.audio_scale, s.ref_scale, 14)
    ip = backend.interpolation_guider(s, max_clips_per_call=2)
    assert isinstance(ip, AutoGuider) and ip.bad is bundle.bad and ip.max_clips_per_call == 2
    from dataclasses import replace

    plain = replace(s, keyframe_guidance="none", interpolation_guidance="none")
    assert isinstance(backend.keyframe_guider(plain), PlainGuider)
    assert isinstance(backend.interpolation_guider(plain), PlainGuider)
    assert backend.network("bad") is bundle.bad
    z = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(backend.decode(z), bundle.vae.decode(z, frames_per_call=1))


def test_renderer_hook(bundle, monkeypatch):
    """No backend: the renderer's own PyTorch path (unchanged); a backend: its guiders and decoder."""
    monkeypatch.delenv("KEYFACE_BACKEND", raising=False)
    n = 14
    args = (torch.zeros(1, 4, 16, 16), torch.zeros(n, 2, 48), torch.zeros(n, 2, 48), torch.zeros(n, 2), n)
    assert OfflineRenderer(bundle, *args).backend is None
    backend = TorchBackend(bundle)
    renderer = OfflineRenderer(bundle, *args, backend=backend)
    assert isinstance(renderer._keyframe_guider(), AudioRefGuider)
    ip = renderer._interpolation_guider()
    assert isinstance(ip, AutoGuider) and ip.max_clips_per_call == renderer.settings.segments_per_call
    latents = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(renderer.decode(latents), OfflineRenderer(bundle, *args).decode(latents))
    monkeypatch.setenv("KEYFACE_BACKEND", "tpu")
    with pytest.raises(BackendError, match="unknown backend"):
        OfflineRenderer(bundle, *args)
    assert OfflineRenderer(bundle, *args, RenderSettings(backend="torch")).backend is None


def test_graph_guider_splits_batches_by_the_profile():
    from engine.backends.graph_calls import GraphGuider
    from engine.backends.manifest import GraphRecord, TensorInfo

    record = GraphRecord(
        "keyframe_guided", "f.onnx",
        [TensorInfo("x", ("rows", 4, 2, 2)), TensorInfo("sigma", ("rows",)), TensorInfo("concat", ("clips", 4, 2, 2)),
         TensorInfo("crossattn", ("clips", 3, 8)), TensorInfo("vector", ("rows", 2)), TensorInfo("guidance", (2,))],
        [TensorInfo("denoised", ("rows", 4, 2, 2))], {"clips": (1, 1, 2), "rows": (3, 3, 6)},
    )
    calls = []

    class Runner:
        def __init__(self):
            self.record = record

        def __call__(self, feed, out_shape):
            calls.append({k: tuple(v.shape) for k, v in feed.items()})
            return feed["x"] * feed["guidance"][0]

    x = torch.randn(15, 4, 2, 2)
    cond = Conditioning(torch.randn(5, 4, 2, 2), torch.randn(5, 3, 8), torch.randn(15, 2))
    out = GraphGuider(Runner(), 3, (2.0, 1.0))(x, torch.ones(15), cond)
    assert torch.equal(out, 2 * x)
    assert [c["concat"][0] for c in calls] == [2, 2, 1] and calls[0]["vector"] == (6, 2)
