"""Any torchvision classification net or timm model as a frozen backbone, with no per-net
table: the feature is what feeds the final classifier, and shared mode splits the graph at
its last global pooling (torch.fx for torchvision; timm's own forward_features / head)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import fx, nn

from pipeline.errors import BackboneUnavailable

POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
POOL_FUNCTIONS = (nn.functional.adaptive_avg_pool2d, nn.functional.adaptive_max_pool2d)
SPATIAL_DIMS = ({2, 3}, {-2, -1})  # x.mean([2, 3]): MnasNet's and ShuffleNet's global pooling


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """A net built only to be looked at (its modules, its pretrained cfg): on the meta device,
    without memory or weight init; on the CPU for the few nets that compute with real values
    while they are built (RegNet's widths, timm's hybrid ViTs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # GoogLeNet's, Inception's init notices
        try:
            with torch.device("meta"):
                return build()
        except (RuntimeError, NotImplementedError):
            return build()


def is_transformer(model: nn.Module) -> bool:
    """Any attention layer (nn.MultiheadAttention, timm's Attention, Swin's
    ShiftedWindowAttentionV2...): its tokens mix the whole image, so no shared mode."""
    return any("Attention" in type(module).__name__ for module in model.modules())


@torch.inference_mode()
def output_shape(module: nn.Module, size: int) -> torch.Size:
    """What `module` makes of one size x size image: the feature's width, the trunk's map side."""
    weight = next(module.parameters())
    return module(torch.zeros(1, 3, size, size, device=weight.device, dtype=weight.dtype)).shape


def penultimate_net(model: nn.Module, name: str) -> fx.GraphModule:
    """`model` up to what feeds its final Linear classifier: [B, 3, S, S] -> [B, D]."""
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    last = get_graph_node_names(model, suppress_diff_warning=True)[1][-1]
    if not isinstance(_submodule(model, last), nn.Linear):
        raise BackboneUnavailable(
            f"{name}: its last layer ({last}) is not a Linear classifier, so it has no "
            "penultimate feature to take; choose another --backbone"
        )
    traced = create_feature_extractor(model.eval(), [last], suppress_diff_warning=True)
    classifier = _output(traced.graph).args[0][last]
    return _pruned(fx.GraphModule(traced, _copy(traced.graph, classifier.args[0])[0]))


def fx_shared_parts(
    net: fx.GraphModule, name: str
) -> tuple[fx.GraphModule, int, fx.GraphModule, bool]:
    """(trunk, pool, head, averaged) of a `penultimate_net`, split at its last global
    pooling: the trunk ends with the map that pooling takes, the head takes [N, C, pool,
    pool] cells instead. pool is the pooling's own output side (AlexNet 6, VGG 7: what their
    FC layers expect), 1 for a global pooling (the caller then pools to the map's side);
    averaged: that pooling is a plain mean of the cells."""
    feature = _output(net.graph).args[0]
    pool = _last_pool(net, feature, name)
    trunk = _pruned(fx.GraphModule(net, _copy(net.graph, pool.args[0])[0]))
    graph, nodes = _copy(net.graph, feature)
    image = next(iter(graph.nodes))
    with graph.inserting_before(image):
        cells = graph.placeholder("cells")
    nodes[pool].replace_input_with(nodes[pool.args[0]], cells)
    head = fx.GraphModule(net, graph)
    graph.eliminate_dead_code()
    if image.users:
        raise BackboneUnavailable(
            f"{name}: its layers after the global pooling use more than the pooled map, so it "
            "cannot be split for --mode shared; use --mode crop"
        )
    graph.erase_node(image)
    side = _pool_side(net, pool, name)
    return trunk, side, _pruned(head), side == 1 and _is_average(net, pool)


class MethodOf(nn.Module):
    """One method of a net as a module of its own (a trunk or a head that the net exposes as
    a method, not as a layer): `forward(x)` is `model.<method>(x, **options)`."""

    def __init__(self, model: nn.Module, method: str, **options):
        super().__init__()
        self.model, self.method, self.options = model, method, options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(x, **self.options)


def timm_shared_parts(model: nn.Module) -> tuple[nn.Module, int, nn.Module, bool]:
    """(trunk, pool, head, averaged) of a timm CNN: its own halves, the head's global pooling
    on the roi cells (pool 1: pooled to the map's side by the caller); averaged when that
    pooling is timm's plain "avg"."""
    pools = [m for m in model.modules() if type(m).__name__ == "SelectAdaptivePool2d"]
    averaged = bool(pools) and getattr(pools[-1], "pool_type", "") == "avg"
    trunk, head = (
        MethodOf(model, "forward_features"),
        MethodOf(model, "forward_head", pre_logits=True),
    )
    return trunk, 1, head, averaged


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:  # the last node is a function (a flatten, a mean), not a layer
        return None


def _output(graph: fx.Graph) -> fx.Node:
    return next(node for node in reversed(graph.nodes) if node.op == "output")


def _copy(graph: fx.Graph, output: fx.Node) -> tuple[fx.Graph, dict[fx.Node, fx.Node]]:
    """A copy of `graph` returning `output`, and the map from its nodes to the copy's."""
    copy, nodes = fx.Graph(), {}
    copy.graph_copy(graph, nodes)
    copy.output(nodes[output])
    return copy, nodes


def _pruned(module: fx.GraphModule) -> fx.GraphModule:
    """`module` without the nodes and layers its output does not need, recompiled."""
    module.graph.eliminate_dead_code()
    module.graph.lint()
    module.delete_all_unused_submodules()
    module.recompile()
    return module


def _last_pool(net: fx.GraphModule, feature: fx.Node, name: str) -> fx.Node:
    """The global pooling nearest the feature (or the feature itself) on its path from the
    image: a squeeze-excite block's pooling comes earlier, inside the trunk."""
    ancestors, todo = {feature}, [feature]
    while todo:
        for node in todo.pop().all_input_nodes:
            if node not in ancestors:
                ancestors.add(node)
                todo.append(node)
    pools = [node for node in net.graph.nodes if node in ancestors and _is_pool(net, node)]
    if not pools:
        raise BackboneUnavailable(
            f"{name}: no global pooling before its classifier, so it has no --mode shared; "
            "use --mode crop"
        )
    return pools[-1]


def _is_pool(net: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(net.get_submodule(node.target), POOL_MODULES)
    if node.op == "call_function":
        return node.target in POOL_FUNCTIONS
    return node.op == "call_method" and node.target == "mean" and _mean_dims(node) in SPATIAL_DIMS


def _is_average(net: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(net.get_submodule(node.target), nn.AdaptiveAvgPool2d)
    return node.target in (nn.functional.adaptive_avg_pool2d, "mean")


def _mean_dims(node: fx.Node) -> set | None:
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    return set(dims) if isinstance(dims, (list, tuple)) else None


def _pool_side(net: fx.GraphModule, node: fx.Node, name: str) -> int:
    """The side of the pooling's square output (1 for a spatial mean)."""
    if node.op == "call_module":
        size = net.get_submodule(node.target).output_size
    elif node.op == "call_function":
        size = node.kwargs.get("output_size", node.args[1] if len(node.args) > 1 else None)
    else:
        size = 1
    sides = set(size) if isinstance(size, (list, tuple)) else {size}
    if len(sides) != 1 or not isinstance(side := sides.pop(), int):
        raise BackboneUnavailable(
            f"{name}: its global pooling's output ({size}) is not square; use --mode crop"
        )
    return side
