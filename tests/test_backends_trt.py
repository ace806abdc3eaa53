"""TensorRT: build plans, cache keys and the builder call path (with a stand-in ``tensorrt`` module),
plus real engine builds when TensorRT and a GPU are present (skipped otherwise, with the reason)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from engine.backends import BackendError, load_backend
from engine.backends.manifest import ExportManifest, GraphRecord, TensorInfo
from engine.backends.profiles import Profile
from engine.backends.trt_cache import GpuInfo, has_qdq, plan_for, plans, timing_cache_path
from export.tensorrt_build import build_engine, network_flags

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
if not HAVE_TRT:
    TRT_SKIP = "TensorRT is not installed (pip install tensorrt-cu12, on a machine with an NVIDIA GPU)"
elif not torch.cuda.is_available():
    TRT_SKIP = "tensorrt is installed but no CUDA GPU is available"
else:
    TRT_SKIP = ""
GPU = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))


def _identity_graph(path: Path, qdq: bool = False) -> None:
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    if qdq:
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", 4])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])] if qdq else [],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


def _record(name: str = "keyframe_guided", file: str = "g.onnx") -> GraphRecord:
    return GraphRecord(
        name=name, file=file,
        inputs=[TensorInfo("x", ("rows", 4, 64, 64)), TensorInfo("sigma", ("rows",)),
                TensorInfo("crossattn", ("clips", 14, 1024)), TensorInfo("guidance", (2,))],
        outputs=[TensorInfo("denoised", ("rows", 4, 64, 64))],
        dims={"clips": (1, 2, 4), "rows": (14, 28, 56)}, dtype="fp16", source_hash="abc",
    )


def test_plan_has_one_profile_over_the_dynamic_inputs(tmp_path):
    _identity_graph(tmp_path / "g.onnx")
    plan = plan_for(_record(), tmp_path, "cuda-fp16-123")
    assert set(plan.shapes) == {"x", "sigma", "crossattn"}  # guidance is static
    assert plan.shapes["x"] == ((14, 4, 64, 64), (28, 4, 64, 64), (56, 4, 64, 64))
    assert plan.shapes["crossattn"] == ((1, 14, 1024), (2, 14, 1024), (4, 14, 1024))
    assert plan.precision == "fp16" and not plan.fp8


def test_cache_key_covers_gpu_version_weights_and_profile(tmp_path):
    _identity_graph(tmp_path / "g.onnx")
    plan = plan_for(_record(), tmp_path, "cuda-fp16-123")
    key = plan.key(GPU, "10.13.0")
    assert len(key) == 20 and key == plan.key(GPU, "10.13.0")
    others = [
        plan.key(GpuInfo("NVIDIA H200", (9, 0)), "10.13.0"),
        plan.key(GPU, "11.4.0"),
        plan_for(_record(), tmp_path, "cuda-fp16-456").key(GPU, "10.13.0"),
    ]
    changed = GraphRecord(**{**_record().__dict__, "source_hash": "other-weights"})
    others.append(plan_for(changed, tmp_path, "cuda-fp16-123").key(GPU, "10.13.0"))
    assert len({key, *others}) == 5
    path = plan.engine_path(tmp_path, GPU, "10.13.0")
    assert path.parent == tmp_path / "trt" / "nvidia-h100-80gb-hbm3-sm90" / "trt-10.13.0"
    assert path.name == f"keyframe_guided-{key}.plan"
    assert timing_cache_path(tmp_path, GPU, "10.13.0").parent == path.parent


def test_fp8_needs_quantize_dequantize_nodes(tmp_path):
    _identity_graph(tmp_path / "g.onnx")
    _identity_graph(tmp_path / "q.onnx", qdq=True)
    assert not has_qdq(tmp_path / "g.onnx") and has_qdq(tmp_path / "q.onnx")
    with pytest.raises(BackendError, match="fp8 needs an explicitly quantized graph"):
        plan_for(_record(), tmp_path, "p", fp8=True)
    assert plan_for(_record(file="q.onnx"), tmp_path, "p", fp8=True).fp8


def test_plans_for_an_export_folder(tmp_path):
    _identity_graph(tmp_path / "g.onnx")
    manifest = ExportManifest(Profile(), {"hashes": {}}, {}, {"keyframe_guided": _record()})
    manifest.save(tmp_path)
    (only,) = plans(tmp_path)
    assert only.graph == "keyframe_guided" and only.profile_key == Profile().key


class _FakeTrt:
    """Records the builder calls ``build_engine`` makes (the API surface of TensorRT 10/11)."""

    __version__ = "10.99.0"

    def __init__(self, strongly_typed: bool = True) -> None:
        self.calls: list[tuple] = []
        flags = {"STRONGLY_TYPED": 2} if strongly_typed else {}
        self.NetworkDefinitionCreationFlag = SimpleNamespace(**flags)
        self.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        fake = self

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("set_shape", name, lo, opt, hi))

        class Cache:
            def serialize(self):
                return b"timing"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("workspace", size))

            def create_timing_cache(self, data):
                fake.calls.append(("timing_in", data))
                return Cache()

            def set_timing_cache(self, cache, ignore_mismatch):
                fake.calls.append(("set_timing_cache", ignore_mismatch))

            def add_optimization_profile(self, profile):
                fake.calls.append(("add_profile",))

            def get_timing_cache(self):
                return Cache()

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network", flags))
                return "network"

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"engine-bytes"

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                fake.calls.append(("parse", Path(path).name))
                return True

        self.Builder, self.OnnxParser = Builder, OnnxParser


def test_build_engine_call_path_with_a_stand_in(tmp_path):
    _identity_graph(tmp_path / "g.onnx")
    plan = plan_for(_record(), tmp_path, "cuda-fp16-123", workspace_gb=2)
    trt = _FakeTrt()
    path = build_engine(plan, tmp_path / "cache", GPU, trt, log=lambda msg: None)
    assert path == plan.engine_path(tmp_path / "cache", GPU, trt.__version__)
    assert path.read_bytes() == b"engine-bytes"
    assert timing_cache_path(tmp_path / "cache", GPU, trt.__version__).read_bytes() == b"timing"
    assert ("network", 1 << 2) in trt.calls and ("parse", "g.onnx") in trt.calls
    assert ("workspace", 2 << 30) in trt.calls and ("timing_in", b"") in trt.calls
    assert ("set_shape", "x", (14, 4, 64, 64), (28, 4, 64, 64), (56, 4, 64, 64)) in trt.calls
    trt.calls.clear()
    assert build_engine(plan, tmp_path / "cache", GPU, trt, log=lambda msg: None) == path
    assert trt.calls == []  # cached: no rebuild
    assert network_flags(_FakeTrt(strongly_typed=False)) == 0


def test_trt_backend_says_what_to_install(tmp_path):
    if HAVE_TRT:
        pytest.skip("tensorrt is installed here")
    from engine.bundle import random_bundle

    with pytest.raises(BackendError, match="pip install tensorrt"):
        load_backend("trt", random_bundle(), onnx_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # failed before exporting anything


@pytest.mark.skipif(bool(TRT_SKIP), reason=TRT_SKIP)
def test_trt_engines_match_torch(tmp_path):
    from engine.backends.trt_backend import TrtBackend
    from engine.bundle import random_bundle
    from export.onnx import export_bundle
    from export.tensorrt_build import build_engines

    bundle = random_bundle()
    export_bundle(bundle, tmp_path / "onnx", Profile(), ["keyframe_guided", "vae_decoder"], progress=False)
    paths = build_engines(tmp_path / "onnx", tmp_path / "cache", progress=False)
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    backend = TrtBackend(tmp_path / "onnx", tmp_path / "cache")
    bundle.to("cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    from engine.models.conditioning import Conditioning

    x = torch.randn(14, 4, 16, 16, device="cuda", generator=g)
    sigma = torch.full((14,), 2.0, device="cuda")
    cond = Conditioning(torch.randn(1, 4, 16, 16, device="cuda", generator=g),
                        torch.randn(1, 14, 64, device="cuda", generator=g),
                        torch.randn(14, 32, device="cuda", generator=g))
    from engine.backends.torch_backend import TorchBackend

    with torch.no_grad():
        ref = TorchBackend(bundle).keyframe_guider(bundle.sampling)(x, sigma, cond)
        out = backend.keyframe_guider(bundle.sampling)(x, sigma, cond)
        assert float((out - ref).abs().max()) < 1e-2
        z = torch.randn(2, 4, 16, 16, device="cuda", generator=g)
        assert float((backend.decode(z) - bundle.vae.decode(z)).abs().max()) < 1e-2
    info = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert info["profile"]["name"] == "default"
