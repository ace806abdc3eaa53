"""Graph clean-up after export: identity removal, common-subexpression merging, dead-code removal.

Pure ``onnx`` (no extra dependency) and weight-agnostic, so it works on graphs whose weights live
in external data. When ``onnxsim`` is installed and the graph fits in one protobuf, it runs too.
"""

from __future__ import annotations

import onnx

NONDETERMINISTIC = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Multinomial", "Bernoulli", "Dropout")
PROTOBUF_LIMIT = 2**31 - 1


def _has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for n in graph.node for a in n.attribute)


def _rename_inputs(node: onnx.NodeProto, mapping: dict[str, str]) -> None:
    for i, name in enumerate(node.input):
        if name in mapping:
            node.input[i] = mapping[name]


def remove_identities(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    mapping: dict[str, str] = {}
    keep = []
    for node in graph.node:
        _rename_inputs(node, mapping)
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and node.output[0] not in outputs:
            mapping[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def merge_common(graph: onnx.GraphProto) -> None:
    """Merge nodes with the same op, inputs and attributes (graph must be topologically sorted)."""
    outputs = {o.name for o in graph.output}
    seen: dict[tuple, list[str]] = {}
    mapping: dict[str, str] = {}
    keep = []
    for node in graph.node:
        _rename_inputs(node, mapping)
        key = (node.domain, node.op_type, tuple(node.input), len(node.output),
               tuple(a.SerializeToString(deterministic=True) for a in node.attribute))
        mergeable = node.op_type not in NONDETERMINISTIC and not (set(node.output) & outputs)
        if mergeable and key in seen:
            mapping.update(zip(node.output, seen[key], strict=True))
            continue
        if mergeable:
            seen[key] = list(node.output)
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def remove_dead(graph: onnx.GraphProto) -> None:
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output if o):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    used = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)
    value_info = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(value_info)


def simplify(model: onnx.ModelProto, use_onnxsim: bool = False) -> onnx.ModelProto:
    """Simplify in place (returns the possibly new model)."""
    graph = model.graph
    if not _has_subgraphs(graph):
        remove_identities(graph)
        merge_common(graph)
        remove_dead(graph)
    if use_onnxsim and model.ByteSize() < PROTOBUF_LIMIT and not _external(model):
        try:
            import onnxsim
        except ImportError:
            return model
        simplified, ok = onnxsim.simplify(model)
        if ok:
            return simplified
    return model


def _external(model: onnx.ModelProto) -> bool:
    return any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
