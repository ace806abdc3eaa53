"""TensorRT backend: runs engines built by ``keyface build-engines`` on torch CUDA tensors.

Inputs and outputs are torch tensors on the GPU whose addresses go straight to the execution
context (``set_tensor_address`` + ``execute_async_v3`` on torch's current stream): no host copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import BackendError
from .graph_backend import GraphBackend
from .manifest import ExportManifest, GraphRecord
from .trt_cache import GpuInfo, default_cache_dir, plan_for, require_tensorrt


def torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.bool: torch.bool,
    }
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]


class TrtRunner:
    """One deserialized engine and its execution context."""

    def __init__(self, trt: Any, engine_file: Path, record: GraphRecord, device: torch.device) -> None:
        self.record = record
        self.device = device
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(engine_file.read_bytes())
        if self.engine is None:
            raise BackendError(f"{engine_file}: TensorRT could not load this engine (rebuild it)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.dtypes = {n: torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.output = record.outputs[0].name

    def __call__(self, feed: dict[str, torch.Tensor], out_shape: tuple[int, ...]) -> torch.Tensor:
        alive = []
        for name, value in feed.items():
            tensor = value.detach().to(self.device, self.dtypes[name]).contiguous()
            alive.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        out = torch.empty(out_shape, dtype=self.dtypes[self.output], device=self.device)
        self.context.set_tensor_address(self.output, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError(f"TensorRT failed to run {self.record.name} (shapes {[t.shape for t in alive]})")
        return out.float()


class TrtBackend(GraphBackend):
    """Engines for the graphs of one export folder, from the engine cache."""

    name = "trt"

    def __init__(self, folder: str | Path, cache_dir: str | Path | None = None, device: str | None = None):
        self.trt = require_tensorrt()
        self.device = torch.device(device or "cuda")
        self.gpu = GpuInfo.current(self.device.index or 0)
        self.folder = Path(folder)
        self.cache = Path(cache_dir) if cache_dir else default_cache_dir()
        self.manifest = ExportManifest.load(self.folder)
        self._runners: dict[str, TrtRunner] = {}

    def describe(self) -> str:
        return f"trt ({self.trt.__version__}, {self.gpu.name}; profile {self.manifest.profile.key})"

    def engine_file(self, name: str) -> Path:
        record = self.manifest.graph(name)
        plan = plan_for(record, self.folder, self.manifest.profile.key)
        path = plan.engine_path(self.cache, self.gpu, self.trt.__version__)
        if not path.is_file():
            raise BackendError(
                f"no TensorRT engine for {name} (GPU {self.gpu.name}, TensorRT {self.trt.__version__}, "
                f"profile {self.manifest.profile.name}) in {self.cache}; build it with "
                f"`keyface build-engines --weights DIR --profile {self.manifest.profile.name}`"
            )
        return path

    def runner(self, name: str) -> TrtRunner:
        if name not in self._runners:
            self._runners[name] = TrtRunner(self.trt, self.engine_file(name), self.manifest.graph(name), self.device)
        return self._runners[name]
