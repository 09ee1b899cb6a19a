"""The graphs around the frozen net's exported parts, built node by node: the crop and
normalisation before the net, the pooled cells of shared mode, a head after it; joined with
the parts into the graphs extract runs on a CPU (pipeline/features/graph_path.py) and those
of an export (docs/deploy.md lists their inputs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

OPSET = 20  # the exported parts' (pipeline/features/onnx_runtime.py): compose needs one
IR_VERSION = 9
FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, outputs, arrays: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
    initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def _tensor(name: str, shape: Sequence, elem: int = FLOAT):
    return helper.make_tensor_value_info(name, elem, list(shape))


def _first_zeros(prefix: str, rows: str) -> list:
    """Nodes giving `{prefix}index`: int64 zeros, one per row of `rows` (RoiAlign's batch
    index: every box is on the one image)."""
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    return [
        helper.make_node("Shape", [rows], [f"{prefix}rows"], start=0, end=1),
        helper.make_node("ConstantOfShape", [f"{prefix}rows"], [f"{prefix}index"], value=zero),
    ]


def _normalise(prefix: str, source: str, out: str) -> list:
    return [
        helper.make_node("Sub", [source, f"{prefix}mean"], [f"{prefix}centred"]),
        helper.make_node("Div", [f"{prefix}centred", f"{prefix}std"], [out]),
    ]


def _pixel_stats(prefix: str, mean: Sequence[float], std: Sequence[float]) -> dict:
    """ImageNet mean and std on the 0..255 scale, shaped to broadcast over [B, 3, H, W]."""
    shape = (1, 3, 1, 1)
    return {
        f"{prefix}mean": (np.asarray(mean, np.float32) * 255).reshape(shape),
        f"{prefix}std": (np.asarray(std, np.float32) * 255).reshape(shape),
    }


def crop_prep(size: int, mean, std) -> onnx.ModelProto:
    """image [1, 3, H, W] (RGB, 0..255) and boxes [N, 4] (x0, y0, x1, y1 in pixels) -> the
    normalised patches [N, 3, size, size]: the image normalised once, then RoiAlign with
    adaptive sampling, the box filter of torchvision's roi_align (the torch runtime's crop
    in pipeline/features/backbone.py). Its weights sum to one inside the image, so cutting
    after normalising gives the same patches, to float rounding, for a tenth of the work."""
    p = "crop/"
    nodes = [
        *_first_zeros(p, "boxes"),
        *_normalise(p, "image", f"{p}normalised"),
        helper.make_node(
            "RoiAlign",
            [f"{p}normalised", "boxes", f"{p}index"],
            ["x"],
            mode="avg",
            output_height=size,
            output_width=size,
            sampling_ratio=0,
            spatial_scale=1.0,
            coordinate_transformation_mode="half_pixel",
        ),  # fmt: skip
    ]
    inputs = [_tensor("image", [1, 3, "height", "width"]), _tensor("boxes", ["patches", 4])]
    return _model(nodes, inputs, [_tensor("x", ["patches", 3, size, size])],
                  _pixel_stats(p, mean, std), "crop")  # fmt: skip


def trunk_prep(mean, std) -> onnx.ModelProto:
    """image [1, 3, h, w] (RGB, 0..255, resized to one scale) -> normalised."""
    p = "trunk/"
    inputs = [_tensor("image", [1, 3, "height", "width"])]
    return _model(_normalise(p, "image", "x"), inputs, [_tensor("x", [1, 3, "height", "width"])],
                  _pixel_stats(p, mean, std), "trunk")  # fmt: skip


def roi_cells(pool: int, cell: float, samples: int, averaged: bool) -> onnx.ModelProto:
    """fmap [1, C, h, w] and rois [N, 4] (in the resized image's pixels) -> each patch's
    cells [N, C, pool, pool] by RoiAlign, or, when the net's head averages them, their
    mean [N, C, 1, 1] as one MatMul of separable sample weights (shared mode in
    pipeline/features/backbone.py; the arithmetic of pipeline/features/roi_mean.py, so that
    a sample on the map's very edge counts as it does in the cache)."""
    p = "cells/"
    if averaged:
        nodes, arrays = _mean_of_cells(p, pool * samples, cell)
    else:
        nodes, arrays = _first_zeros(p, "rois"), {}
        nodes.append(
            helper.make_node(
                "RoiAlign",
                ["fmap", "rois", f"{p}index"],
                ["x"],
                mode="avg",
                output_height=pool,
                output_width=pool,
                sampling_ratio=samples,
                spatial_scale=1.0 / cell,
                coordinate_transformation_mode="half_pixel",
            )  # fmt: skip
        )
    inputs = [_tensor("fmap", [1, "channels", "height", "width"]), _tensor("rois", ["patches", 4])]
    return _model(nodes, inputs, [_tensor("x", ["patches", "channels", None, None])], arrays,
                  "cells")  # fmt: skip


def _mean_of_cells(p: str, points: int, cell: float) -> tuple[list, dict]:
    """Nodes giving "x" [N, C, 1, 1]: per roi, the weights of its `points` x `points`
    bilinear samples on the map's rows and columns (their product is the sample grid's),
    then one MatMul of those weights with the map's cells."""
    offsets = (np.arange(points, dtype=np.float32) + np.float32(0.5)) / np.float32(points)
    arrays = {
        f"{p}scale": np.array([1.0 / cell], np.float32),
        f"{p}half": np.array([0.5], np.float32),
        f"{p}offsets": offsets.reshape(1, points, 1),
        f"{p}ends": np.array([2, 3], np.int64),
        f"{p}one": np.array(1.0, np.float32),
        f"{p}zero": np.array(0.0, np.float32),
        f"{p}points": np.array(points, np.float32),
        f"{p}last": np.array([-1], np.int64),
        f"{p}axes": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Mul", ["rois", f"{p}scale"], [f"{p}scaled"]),
        helper.make_node("Sub", [f"{p}scaled", f"{p}half"], [f"{p}box"]),  # aligned
        helper.make_node("Shape", ["fmap"], [f"{p}shape"]),
    ]
    for axis, name in ((0, "x"), (1, "y")):  # box columns: x0, y0, x1, y1
        nodes += _axis_weights(f"{p}{name}/", p, axis, axis + 2)
    nodes += [
        helper.make_node("Unsqueeze", [f"{p}y/weights", f"{p}last"], [f"{p}rows"]),
        helper.make_node("Unsqueeze", [f"{p}x/weights", f"{p}axes"], [f"{p}columns"]),
        helper.make_node("Mul", [f"{p}rows", f"{p}columns"], [f"{p}grid"]),  # [N, h, w]
        helper.make_node("Shape", ["rois"], [f"{p}count"], start=0, end=1),
        helper.make_node("Concat", [f"{p}count", f"{p}last"], [f"{p}gridshape"], axis=0),
        helper.make_node("Reshape", [f"{p}grid", f"{p}gridshape"], [f"{p}weights"]),
        helper.make_node("Shape", ["fmap"], [f"{p}channels"], start=1, end=2),
        helper.make_node("Concat", [f"{p}channels", f"{p}last"], [f"{p}mapshape"], axis=0),
        helper.make_node("Reshape", ["fmap", f"{p}mapshape"], [f"{p}cells"]),  # [C, h*w]
        helper.make_node("Transpose", [f"{p}cells"], [f"{p}cellsT"], perm=[1, 0]),
        helper.make_node("MatMul", [f"{p}weights", f"{p}cellsT"], [f"{p}means"]),  # [N, C]
        helper.make_node("Unsqueeze", [f"{p}means", f"{p}ends"], ["x"]),
    ]
    return nodes, arrays


def _axis_weights(q: str, p: str, start: int, end: int) -> list:
    """Nodes giving `{q}weights` [N, size]: roi_mean.axis_weights of the box columns
    `start` and `end` on the map axis of that size (fmap's dim 3 for x, 2 for y)."""
    dim = 3 if start == 0 else 2

    def constant(name: str, value) -> object:
        array = numpy_helper.from_array(np.array(value, np.int64), name)
        return helper.make_node("Constant", [], [name], value=array)

    def column(index: int, out: str) -> list:
        return [constant(f"{q}at{index}", [index]),
                helper.make_node("Gather", [f"{p}box", f"{q}at{index}"], [out], axis=1)]  # fmt: skip

    return [
        constant(f"{q}dim", dim),
        *column(start, f"{q}start"),  # [N, 1]
        *column(end, f"{q}end"),
        helper.make_node("Sub", [f"{q}end", f"{q}start"], [f"{q}span"]),
        helper.make_node("Unsqueeze", [f"{q}span", f"{p}last"], [f"{q}span3"]),  # [N, 1, 1]
        helper.make_node("Unsqueeze", [f"{q}start", f"{p}last"], [f"{q}start3"]),
        helper.make_node("Mul", [f"{p}offsets", f"{q}span3"], [f"{q}step"]),
        helper.make_node("Add", [f"{q}start3", f"{q}step"], [f"{q}position"]),  # [N, P, 1]
        helper.make_node("Gather", [f"{p}shape", f"{q}dim"], [f"{q}sizei"]),
        helper.make_node("Cast", [f"{q}sizei"], [f"{q}size"], to=FLOAT),
        helper.make_node("Sub", [f"{q}size", f"{p}one"], [f"{q}edge"]),
        helper.make_node("Neg", [f"{p}one"], [f"{q}minus"]),
        helper.make_node("GreaterOrEqual", [f"{q}position", f"{q}minus"], [f"{q}after"]),
        helper.make_node("LessOrEqual", [f"{q}position", f"{q}size"], [f"{q}before"]),
        helper.make_node("And", [f"{q}after", f"{q}before"], [f"{q}insideb"]),
        helper.make_node("Cast", [f"{q}insideb"], [f"{q}inside"], to=FLOAT),
        helper.make_node("Max", [f"{q}position", f"{p}zero"], [f"{q}clamped"]),
        helper.make_node("Floor", [f"{q}clamped"], [f"{q}floor"]),
        helper.make_node("Min", [f"{q}floor", f"{q}edge"], [f"{q}low"]),
        helper.make_node("GreaterOrEqual", [f"{q}low", f"{q}edge"], [f"{q}atedge"]),
        helper.make_node("Sub", [f"{q}clamped", f"{q}low"], [f"{q}fraction"]),
        helper.make_node("Where", [f"{q}atedge", f"{p}zero", f"{q}fraction"], [f"{q}high"]),
        helper.make_node("Sub", [f"{p}one", f"{q}high"], [f"{q}lowweight"]),
        helper.make_node("Add", [f"{q}low", f"{p}one"], [f"{q}next"]),
        helper.make_node("Min", [f"{q}next", f"{q}edge"], [f"{q}upper"]),
        helper.make_node("Range", [f"{p}zero", f"{q}size", f"{p}one"], [f"{q}cellsat"]),
        helper.make_node("Equal", [f"{q}low", f"{q}cellsat"], [f"{q}islow"]),  # [N, P, size]
        helper.make_node("Equal", [f"{q}upper", f"{q}cellsat"], [f"{q}ishigh"]),
        helper.make_node("Where", [f"{q}islow", f"{q}lowweight", f"{p}zero"], [f"{q}a"]),
        helper.make_node("Where", [f"{q}ishigh", f"{q}high", f"{p}zero"], [f"{q}b"]),
        helper.make_node("Add", [f"{q}a", f"{q}b"], [f"{q}bilinear"]),
        helper.make_node("Mul", [f"{q}bilinear", f"{q}inside"], [f"{q}counted"]),
        helper.make_node("ReduceSum", [f"{q}counted", f"{p}axes"], [f"{q}summed"], keepdims=0),
        helper.make_node("Div", [f"{q}summed", f"{p}points"], [f"{q}weights"]),
    ]


def head_graph(dense: dict, dim: int) -> onnx.ModelProto:
    """features [N, D] -> margins [N, columns]: the features rounded to float16 as the cache
    stores them (the head was trained on those), standardised, then the head's dense layers
    with ReLU between them. `dense`: a head's `dense_layers()`."""
    p = "head/"
    arrays = {
        f"{p}mean": np.asarray(dense["mean"], np.float32),
        f"{p}scale": np.asarray(dense["scale"], np.float32),
    }
    nodes = [
        helper.make_node("Cast", ["features"], [f"{p}half"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", [f"{p}half"], [f"{p}stored"], to=FLOAT),
        helper.make_node("Sub", [f"{p}stored", f"{p}mean"], [f"{p}centred"]),
        helper.make_node("Div", [f"{p}centred", f"{p}scale"], [f"{p}in0"]),
    ]
    layers = dense["layers"]
    for i, (weight, bias) in enumerate(layers):
        arrays[f"{p}w{i}"] = np.asarray(weight, np.float32)
        arrays[f"{p}b{i}"] = np.asarray(bias, np.float32)
        last = i == len(layers) - 1
        out = "margins" if last else f"{p}dense{i}"
        nodes.append(helper.make_node("Gemm", [f"{p}in{i}", f"{p}w{i}", f"{p}b{i}"], [out],
                                      transB=1))  # fmt: skip
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"{p}in{i + 1}"]))
    columns = np.asarray(layers[-1][1]).shape[0]
    return _model(nodes, [_tensor("features", ["patches", dim])],
                  [_tensor("margins", ["patches", columns])], arrays, "head")  # fmt: skip


def chain(*models: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """The models joined output to input in order (each one's only output feeds the next
    one's first input); every model's inner names get its own prefix from `names`, the
    first one's inputs and the last one's outputs keep theirs."""
    joined = None
    for model, name in zip(models, names, strict=True):
        model = _same_versions(model)
        renamed = compose.add_prefix(model, f"{name}/", rename_inputs=False, rename_outputs=False)
        inner = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
        renamed = _prefix_io(renamed, f"{name}/", inner - _ends(models, model))
        if joined is None:
            joined = renamed
            continue
        feed = joined.graph.output[0].name
        joined = compose.merge_models(joined, renamed, io_map=[(feed, renamed.graph.input[0].name)])
    return joined


def _ends(models, model) -> set[str]:
    """The names that stay as they are: the first model's inputs, the last one's outputs."""
    keep = set()
    if model is models[0]:
        keep |= {i.name for i in model.graph.input}
    if model is models[-1]:
        keep |= {o.name for o in model.graph.output}
    return keep


def _prefix_io(model: onnx.ModelProto, prefix: str, names: set[str]) -> onnx.ModelProto:
    """Inputs and outputs in `names` renamed with the prefix (the joins in between)."""
    mapping = {n: prefix + n for n in names}
    graph = model.graph
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = mapping.get(value.name, value.name)
    return model


def _same_versions(model: onnx.ModelProto) -> onnx.ModelProto:
    """compose joins only models of one IR version and opset."""
    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", OPSET) != OPSET:
        model = onnx.version_converter.convert_version(model, OPSET)
    model.ir_version = IR_VERSION
    return model
