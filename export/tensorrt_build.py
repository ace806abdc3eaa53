"""Build TensorRT engines from an ONNX export (``keyface build-engines``).

Networks are strongly typed (precision comes from the exported graph: fp16/bf16 profiles carry
fp16/bf16 weights; fp8 needs Q/DQ nodes), one optimization profile per engine spans the export
profile's min/opt/max batch, and one timing cache per GPU and TensorRT version speeds up rebuilds.
Engines land in the cache described in :mod:`engine.backends.trt_cache`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engine.backends.base import BackendError
from engine.backends.trt_cache import (
    BuildPlan,
    GpuInfo,
    plans,
    require_tensorrt,
    timing_cache_path,
)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def network_flags(trt: Any) -> int:
    """Strongly typed network (explicit in TensorRT 10.x, the only mode in 11.x)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_engine(plan: BuildPlan, cache: Path, gpu: GpuInfo, trt: Any,
                 log: Callable[[str], None] = print) -> Path:
    """Build (or find) the engine of ``plan``; returns its path in the cache."""
    path = plan.engine_path(cache, gpu, trt.__version__)
    if path.is_file():
        return path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(plan.onnx_file):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {plan.onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(plan.workspace_gb * (1 << 30)))
    timing_file = timing_cache_path(cache, gpu, trt.__version__)
    timing = config.create_timing_cache(timing_file.read_bytes() if timing_file.is_file() else b"")
    config.set_timing_cache(timing, False)
    if plan.shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in plan.shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    log(f"building {plan.graph} ({plan.precision}{', fp8' if plan.fp8 else ''}) for {gpu.name}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build {plan.graph} (see the log above)")
    _atomic_write(timing_file, bytes(config.get_timing_cache().serialize()))
    _atomic_write(path, bytes(serialized))
    return path


def build_engines(export_dir: Path, cache: Path, graphs: list[str] | None = None, fp8: bool = False,
                  workspace_gb: float = 8.0, progress: bool = True) -> list[Path]:
    """Build every engine of an export folder that the cache does not hold yet."""
    trt = require_tensorrt()
    gpu = GpuInfo.current()
    todo = plans(Path(export_dir), graphs, fp8, workspace_gb)
    bar = tqdm(todo, unit="engine", desc="build-engines", disable=not progress, file=sys.stderr)
    return [build_engine(plan, Path(cache), gpu, trt, log=bar.write) for plan in bar]
