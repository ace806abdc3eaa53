"""Export a model bundle's graphs to ONNX, check them, and write the manifest.

Each graph is traced with PyTorch's TorchScript-based exporter (``dynamo=False``: it needs only
``onnx``), simplified (:mod:`.simplify`), stored with external data when its weights exceed the
2 GB protobuf limit (or when asked), and validated with ``onnx.checker``.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import onnx
import torch
from tqdm import tqdm

from engine.backends.manifest import ExportManifest, GraphRecord, module_hash
from engine.backends.profiles import Profile
from engine.bundle import ModelBundle
from engine.errors import KeyFaceError

from .graphs import GROUPS, GraphBuilder, GraphSpec, select_graphs
from .simplify import PROTOBUF_LIMIT, simplify

ExternalData = Literal["auto", "always", "never"]
OPTIONAL = set(GROUPS["audio"]) - {"audio_logmel"}
"""Graphs whose failure is recorded as skipped instead of stopping the export."""


class ExportError(KeyFaceError):
    """A graph could not be exported or failed validation."""


def versions(opset: int) -> dict[str, str]:
    from keyface import __version__

    out = {
        "keyface": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "opset": str(opset),
        "python": platform.python_version(),
    }
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return out


def _consolidate(model: onnx.ModelProto, tmp: Path, data_name: str) -> None:
    """Move per-tensor external files (as the exporter writes them) into one ``data_name`` file."""
    with open(tmp / data_name, "wb") as sink:
        for init in model.graph.initializer:
            if init.data_location != onnx.TensorProto.EXTERNAL:
                continue
            entries = {e.key: e.value for e in init.external_data}
            source = tmp / entries["location"]
            offset, length = int(entries.get("offset", 0)), entries.get("length")
            with open(source, "rb") as fh:
                fh.seek(offset)
                blob = fh.read(int(length) if length is not None else -1)
            start = sink.tell()
            sink.write(blob)
            del init.external_data[:]
            for key, value in (("location", data_name), ("offset", str(start)), ("length", str(len(blob)))):
                entry = init.external_data.add()
                entry.key, entry.value = key, value
    for item in tmp.iterdir():
        if item.name not in (data_name,) and item.suffix != ".onnx":
            item.unlink()


def export_graph(spec: GraphSpec, folder: Path, opset: int, external_data: ExternalData = "auto",
                 use_onnxsim: bool = False) -> GraphRecord:
    """Export one graph into ``folder`` and return its manifest record."""
    tmp = folder / f".tmp-{spec.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    onnx_name, data_name = f"{spec.name}.onnx", f"{spec.name}.onnx.data"
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            spec.module.eval(), spec.example_inputs(), str(tmp / onnx_name), dynamo=False,
            opset_version=opset, input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs], dynamic_axes=spec.dynamic_axes(),
            do_constant_folding=True,
        )
    traced = time.perf_counter() - start
    model = onnx.load(str(tmp / onnx_name), load_external_data=False)
    nodes_before = len(model.graph.node)
    model = simplify(model, use_onnxsim)
    external = any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    if external and external_data == "never":
        raise ExportError(f"{spec.name}: weights exceed 2 GB; external data is required")
    if external:
        _consolidate(model, tmp, data_name)
        onnx.save(model, str(tmp / onnx_name))
    elif external_data == "always" or model.ByteSize() >= PROTOBUF_LIMIT:
        onnx.save(model, str(tmp / onnx_name), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=data_name, size_threshold=1024)
        external = True
    else:
        onnx.save(model, str(tmp / onnx_name))
    for name in (onnx_name, data_name):
        target = folder / name
        if target.exists():
            target.unlink()
        if (tmp / name).exists():
            os.replace(tmp / name, target)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        onnx.checker.check_model(str(folder / onnx_name))
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{spec.name}: exported graph failed onnx.checker: {exc}") from exc
    size = (folder / onnx_name).stat().st_size
    if external:
        size += (folder / data_name).stat().st_size
    info = dict(spec.info)
    info.update(nodes=len(model.graph.node), nodes_before_simplify=nodes_before, bytes=size,
                trace_seconds=round(traced, 2), seconds=round(time.perf_counter() - start, 2))
    return GraphRecord(
        name=spec.name, file=onnx_name, inputs=spec.inputs, outputs=spec.outputs, dims=spec.dims,
        dtype=spec.dtype, source_hash=spec.source_hash, external_data=data_name if external else None,
        info=info,
    )


def export_bundle(
    bundle: ModelBundle,
    out: str | Path,
    profile: Profile,
    graphs: Iterable[str] | None = None,
    external_data: ExternalData = "auto",
    use_onnxsim: bool = False,
    progress: bool = True,
) -> ExportManifest:
    """Export the selected graphs (default: UNets, VAE and audio) of ``bundle`` into ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    builder = GraphBuilder(bundle, profile)
    factories = builder.available()
    try:
        names = select_graphs(list(graphs) if graphs else None, list(factories))
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    manifest = ExportManifest(profile=profile, model=_model_info(bundle, builder), versions=versions(profile.opset))
    _keep_previous(manifest, folder, builder)
    bar = tqdm(names, unit="graph", desc="export", disable=not progress, file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        try:
            spec = factories[name]()
            manifest.graphs[name] = export_graph(spec, folder, profile.opset, external_data, use_onnxsim)
            manifest.skipped.pop(name, None)
            manifest.model["hashes"].update(builder.hashes._cache)
        except Exception as exc:
            if name not in OPTIONAL:
                raise ExportError(f"exporting {name} failed: {exc}") from exc
            manifest.skipped[name] = f"{type(exc).__name__}: {exc}"
        manifest.save(folder)
    manifest.save(folder)
    return manifest


def _keep_previous(manifest: ExportManifest, folder: Path, builder: GraphBuilder) -> None:
    """Carry over graphs of an earlier export into the same folder (same profile and weights)."""
    try:
        old = ExportManifest.load(folder)
    except KeyFaceError:
        return
    if old.profile.key != manifest.profile.key:
        return
    hashes = old.model.get("hashes", {})
    if any(builder.hashes(name) != value for name, value in hashes.items()):
        return
    manifest.model["hashes"].update(hashes)
    manifest.graphs.update({k: g for k, g in old.graphs.items() if (folder / g.file).is_file()})
    manifest.skipped.update(old.skipped)


def _model_info(bundle: ModelBundle, builder: GraphBuilder) -> dict:
    return {
        "name": bundle.name,
        "image_size": bundle.image_size,
        "latent_size": builder.latent,
        "vae_factor": bundle.vae.cfg.downsample_factor,
        "sampling": dict(bundle.sampling.__dict__),
        "hashes": {},
        "audio": bundle.audio,
    }


def bundle_fingerprint(bundle: ModelBundle) -> str:
    """Short hash of all networks of a bundle (used to name cached exports)."""
    from engine.backends.manifest import combined_hash

    parts = [module_hash(m) for m in (bundle.keyframe, bundle.interpolation, bundle.bad, bundle.vae)]
    return combined_hash(*parts, repr(sorted(bundle.sampling.__dict__.items())), repr(bundle.audio))[:16]
