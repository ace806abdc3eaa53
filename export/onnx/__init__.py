"""ONNX export of KeyFace model bundles (``keyface export onnx``); see docs/export.md."""

from .exporter import ExportError, export_bundle, export_graph
from .graphs import DEFAULT_GROUPS, GROUPS, GraphBuilder, GraphSpec

__all__ = ["DEFAULT_GROUPS", "GROUPS", "ExportError", "GraphBuilder", "GraphSpec", "export_bundle", "export_graph"]
