"""Structured pruning for `prune` (mode = "filters"): whole output channels of a conv (or outputs of a
Linear) really removed.

The model is traced with torch.fx. From each ordinary conv (groups = 1) its output channels are
followed through the layers that keep channels apart (BatchNorm2d, depthwise convs, ReLU-like
activations with f(0) = 0, pooling, dropout) to the layers that read them: a conv (its input
channels shrink) or a flatten into a Linear (the columns of each removed channel's H x W positions
go). A Linear's outputs are followed the same way (through BatchNorm1d, activations, dropout) to the
Linear that reads them. A residual add joins the channels of both its inputs: walking back from it finds the other
convs that make them, and all are pruned together (one channel ranking over all their filters),
so both sides of the add lose the same channels. A conv whose channels reach a concatenation, the
model's output or anything else is left alone.

On the schedule the lowest-norm channels are masked: the filters and biases of the producing
convs, and the channel in every batch norm and depthwise conv on the way, are held at 0.0 during
fine-tuning, so the channel reads 0 where it is consumed. At the end the channels are removed: new, smaller modules
with copied slices, so the returned model computes what the masked one did.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from tinyml.errors import RecipeError
from tinyml.technique import Context
from tinyml_plugins.prune import Masks, PruneOptions, layer_kind, run_schedule, scheduled

# Modules and functions that act on each channel alone and map 0 to 0.
PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Tanh, nn.Hardswish, nn.SiLU, nn.GELU, nn.Dropout,
    nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
PASS_FUNCTIONS = (
    F.relu, F.relu6, F.leaky_relu, F.hardtanh, F.hardswish, F.silu, F.gelu, F.dropout, F.max_pool2d,
    F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.relu, torch.tanh,
)  # fmt: skip
PASS_METHODS = ("relu", "relu_", "tanh", "contiguous", "clone")
FLATTEN_FUNCTIONS = (torch.flatten,)
FLATTEN_METHODS = ("flatten", "view", "reshape")


class NotPrunable(Exception):
    """A conv's channels reach something that cannot lose channels (a concatenation, the output, ...)."""


@dataclass
class ChannelGroup:
    """Channels that are removed together, and every module that makes, carries or reads them.

    `producers` are the convs whose output channels they are (several when a residual add joins
    them); `members` keep one channel per channel (BatchNorm2d, depthwise Conv2d); `convs` read
    them as input channels; `linears` read them flattened, `spatial` columns per channel.
    """

    channels: int
    producers: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    convs: list[str] = field(default_factory=list)
    linears: list[tuple[str, int]] = field(default_factory=list)


def trace(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """The model as an fx graph with shapes (`node.meta["tensor_meta"]`); a RecipeError when it cannot be traced."""
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        traced = torch.fx.symbolic_trace(model)
        was_training = model.training
        ShapeProp(traced.eval()).propagate(example)
        traced.train(was_training)
    except Exception as err:
        raise RecipeError(
            "Technique 'prune' with mode = 'filters' traces the model with torch.fx to find which layers read "
            f"which channels, and tracing failed: {type(err).__name__}: {' '.join(str(err).split())}. Use "
            "mode = 'unstructured', or make the model's forward traceable (no Python control flow on tensor values)."
        ) from err
    return traced


def channel_groups(model: nn.Module, example: torch.Tensor, producers: list[str]) -> dict[str, ChannelGroup]:
    """The channel groups whose channels can be removed, by their first producer, in model order.

    Only groups all of whose producers are in `producers` are returned.
    """
    tracer = _GroupTracer(trace(model, example))
    groups: dict[str, ChannelGroup] = {}
    claimed: set[str] = set()
    for node in tracer.graph.nodes:
        if node.op != "call_module" or node.target not in producers or node.target in claimed:
            continue
        if not tracer.is_mixer(node):
            continue
        try:
            group = tracer.group_of(node)
        except NotPrunable:
            claimed.add(node.target)
            continue
        claimed.update(group.producers)
        if set(group.producers) <= set(producers):
            groups[node.target] = group
    return groups


class _GroupTracer:
    """Flood fill over an fx graph: every value that carries the same channels as a conv's output."""

    def __init__(self, traced: torch.fx.GraphModule) -> None:
        self.traced = traced
        self.graph = traced.graph
        self.calls: dict[str, int] = {}
        for node in self.graph.nodes:
            if node.op == "call_module":
                self.calls[node.target] = self.calls.get(node.target, 0) + 1

    def module(self, node: torch.fx.Node) -> nn.Module | None:
        return self.traced.get_submodule(node.target) if node.op == "call_module" else None

    def once(self, node: torch.fx.Node) -> bool:
        return self.calls[node.target] == 1

    def is_mixer(self, node: torch.fx.Node) -> bool:
        """An ordinary conv (groups = 1) or a Linear, called once: it makes channels and reads them."""
        m = self.module(node)
        return (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)) and self.once(node)

    def rank(self, node: torch.fx.Node) -> int | None:
        meta = node.meta.get("tensor_meta")
        return len(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def is_member(self, node: torch.fx.Node) -> bool:
        """A batch norm or a depthwise conv (multiplier 1) called once: one channel in, the same one out."""
        m = self.module(node)
        depthwise = isinstance(m, nn.Conv2d) and layer_kind(m) == "depthwise" and m.out_channels == m.in_channels
        return (isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) or depthwise) and self.once(node)

    def is_pass(self, node: torch.fx.Node) -> bool:
        """A channel-wise function mapping 0 to 0 (activation, pooling, dropout), on its first argument."""
        if node.op == "call_module":
            return isinstance(self.module(node), PASS_MODULES)
        if node.op == "call_function":
            return node.target in PASS_FUNCTIONS
        return node.op == "call_method" and node.target in PASS_METHODS

    def is_add(self, node: torch.fx.Node) -> bool:
        """An elementwise sum of two feature maps of the same shape (a residual connection)."""
        if node.op != "call_function" or node.target not in (operator.add, operator.iadd, torch.add):
            return False
        args = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        shapes = [a.meta.get("tensor_meta") for a in args]
        return (
            len(args) == 2
            and all(s is not None and len(s.shape) == 4 for s in shapes)
            and (shapes[0].shape == shapes[1].shape)
        )

    def group_of(self, conv: torch.fx.Node) -> ChannelGroup:
        """The group of `conv`'s output channels; NotPrunable when they reach something that cannot lose them."""
        if self.rank(conv) not in (2, 4):
            raise NotPrunable(conv.target)  # a Linear over the last axis of a feature map
        layer = self.module(conv)
        group = ChannelGroup(layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels)
        seen: set[torch.fx.Node] = set()
        todo = [conv]
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            todo.extend(self._backward(node, group))
            todo.extend(self._forward(node, group))
        order = {n.target: i for i, n in enumerate(self.graph.nodes) if n.op == "call_module"}
        for names in (group.producers, group.members, group.convs):
            names.sort(key=order.__getitem__)
        return group

    def _backward(self, node: torch.fx.Node, group: ChannelGroup) -> list[torch.fx.Node]:
        """Where `node`'s channels come from: a producing conv ends the walk, an add joins both its inputs."""
        if self.is_mixer(node):
            group.producers.append(node.target)
            return []
        if self.is_member(node):
            group.members.append(node.target)
            return [node.args[0]]
        if self.is_pass(node):
            return [node.args[0]]
        if self.is_add(node):
            return list(node.args[:2])
        raise NotPrunable(str(node.target))

    def _forward(self, node: torch.fx.Node, group: ChannelGroup) -> list[torch.fx.Node]:
        """The users of `node` that carry its channels on; readers (convs, flatten into linear) are recorded."""
        carried = []
        for user in node.users:
            if self.is_mixer(user) and isinstance(self.module(user), nn.Conv2d):
                group.convs.append(user.target)
            elif self.is_mixer(user) and self.rank(node) == 2:
                group.linears.append((user.target, 1))
            elif _is_flatten(self, user):
                self._flattened(user, group)
            elif self.is_member(user) or self.is_add(user) or (self.is_pass(user) and user.args[0] is node):
                carried.append(user)
            else:
                raise NotPrunable(str(user.target))
        return carried

    def _flattened(self, node: torch.fx.Node, group: ChannelGroup) -> None:
        """After a flatten every reader must be a Linear (called once) that loses H*W columns per channel."""
        shape = node.args[0].meta["tensor_meta"].shape
        spatial = int(shape[2] * shape[3])
        for user in node.users:
            m = self.module(user)
            if isinstance(m, nn.Linear) and self.once(user):
                group.linears.append((user.target, spatial))
            elif isinstance(m, nn.Dropout | nn.Identity):
                self._flattened(user, group)
            else:
                raise NotPrunable(str(user.target))


def _is_flatten(tracer: _GroupTracer, node: torch.fx.Node) -> bool:
    """A flatten (module or function), view or reshape of (N, C, H, W) into (N, C*H*W)."""
    m = tracer.module(node)
    if isinstance(m, nn.Flatten) and m.start_dim == 1:
        return True
    is_call = (node.op == "call_function" and node.target in FLATTEN_FUNCTIONS) or (
        node.op == "call_method" and node.target in FLATTEN_METHODS
    )
    if not is_call or "tensor_meta" not in node.meta or "tensor_meta" not in node.args[0].meta:
        return False
    shape_in, shape_out = node.args[0].meta["tensor_meta"].shape, node.meta["tensor_meta"].shape
    return len(shape_in) == 4 and len(shape_out) == 2 and shape_out[1] == int(np.prod(shape_in[1:]))


def filter_norms(model: nn.Module, producers: list[str], norm: str) -> torch.Tensor:
    """L1 or L2 norm of each output channel, over the filters of every producer of the channel."""
    weight = torch.cat([model.get_submodule(p).weight.detach().flatten(1).double() for p in producers], dim=1)
    return weight.abs().sum(1) if norm == "l1" else weight.pow(2).sum(1).sqrt()


def choose_channels(norms: torch.Tensor, count: int, previous: torch.Tensor | None) -> torch.Tensor:
    """Keep-mask of the channels: the `count` of lowest norm removed, channels removed before first (stable)."""
    score = norms.clone()
    if previous is not None:
        score[~previous] = -1.0
    keep = torch.ones(len(norms), dtype=torch.bool)
    keep[torch.sort(score, stable=True).indices[:count]] = False
    return keep


def channel_masks(model: nn.Module, group: ChannelGroup, keep: torch.Tensor) -> Masks:
    """Masks of every parameter that carries the group's channels: producers and members, weight and bias."""
    masks = {}
    for name in (*group.producers, *group.members):
        module = model.get_submodule(name)
        for role in ("weight", "bias"):
            param = getattr(module, role, None)
            if param is not None:
                shape = (-1,) + (1,) * (param.dim() - 1)
                masks[f"{name}.{role}"] = keep.reshape(shape).expand_as(param).clone()
    return masks


def remove_channels(model: nn.Module, groups: dict[str, ChannelGroup], keeps: dict[str, torch.Tensor]) -> nn.Module:
    """Replace every module of the groups by a smaller copy without the removed channels (in place)."""
    out_keep: dict[str, torch.Tensor] = {}
    in_keep: dict[str, torch.Tensor] = {}
    for name, keep in keeps.items():
        group = groups[name]
        index = torch.nonzero(keep).flatten()
        for producer in group.producers:
            out_keep[producer] = index
        for member in group.members:
            out_keep[member] = in_keep[member] = index
        for conv in group.convs:
            in_keep[conv] = index
        for linear, spatial in group.linears:
            in_keep[linear] = (index[:, None] * spatial + torch.arange(spatial)).flatten()
    for name in {**out_keep, **in_keep}:
        module = model.get_submodule(name)
        smaller = _slice(module, out_keep.get(name), in_keep.get(name))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, smaller)
    return model


def _slice(module: nn.Module, out_index: torch.Tensor | None, in_index: torch.Tensor | None) -> nn.Module:
    """A copy of a Conv2d, BatchNorm2d or Linear keeping output channels `out_index` and inputs `in_index`."""
    with torch.no_grad():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            new = type(module)(len(out_index), module.eps, module.momentum, module.affine, module.track_running_stats)
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(module, name, None) is not None:
                    getattr(new, name).copy_(getattr(module, name)[out_index])
            if module.num_batches_tracked is not None:
                new.num_batches_tracked.copy_(module.num_batches_tracked)
            return new.train(module.training)
        weight = module.weight
        if out_index is not None:
            weight = weight[out_index]
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1
        if in_index is not None and not depthwise:
            weight = weight[:, in_index]
        bias = module.bias
        if bias is not None and out_index is not None:
            bias = bias[out_index]
        if isinstance(module, nn.Linear):
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        else:
            in_channels = len(out_index) if depthwise else weight.shape[1]
            new = nn.Conv2d(
                in_channels, weight.shape[0], module.kernel_size, module.stride, module.padding, module.dilation,
                groups=in_channels if depthwise else 1, bias=bias is not None, padding_mode=module.padding_mode,
            )  # fmt: skip
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
        return new.to(module.weight.dtype).train(module.training)


def prune_filters(
    model: nn.Module, candidates: dict[str, nn.Module], targets: dict[str, float], context: Context, opts: PruneOptions
) -> nn.Module:
    """Remove `targets[conv]` of each removable conv's output channels on the schedule, fine-tuning between."""
    example = context.example_input
    train_data = context.train_data
    if example is None:
        example = torch.from_numpy(np.asarray(train_data[0][:1], np.float32))
    producers = [
        p for p, m in candidates.items() if layer_kind(m) == "linear" or (layer_kind(m) == "conv" and m.groups == 1)
    ]
    groups = channel_groups(model, example, producers)
    # Channels joined by residual adds are removed together, by the smallest target among their producers.
    fractions = {name: min(targets[p] for p in group.producers) for name, group in groups.items()}
    counts = {name: round(fractions[name] * group.channels) for name, group in groups.items()}
    for name, count in counts.items():
        if count >= groups[name].channels:
            layers = " and ".join(repr(p) for p in groups[name].producers)
            raise RecipeError(
                f"Technique 'prune' with mode = 'filters' would remove every one of the {groups[name].channels} "
                f"output channels of {layers} (sparsity {fractions[name]} rounds to {count}). Lower its "
                f'sparsity, e.g. layers = {{ "{name}" = 0.5 }}.'
            )
    groups = {name: group for name, group in groups.items() if counts[name] > 0}
    if not groups:
        raise RecipeError(
            "Technique 'prune' with mode = 'filters' finds no conv or linear layer whose outputs can be removed at "
            f"this sparsity: the layers ({', '.join(producers) or 'none'}) feed a concatenation or the model's output, "
            "or would lose no channel. Use mode = 'unstructured' or raise the sparsity."
        )
    keeps: dict[str, torch.Tensor] = {}

    def step_masks(t: int, previous: Masks) -> Masks:
        masks: Masks = {}
        for name, group in groups.items():
            fraction = scheduled(opts.initial_sparsity, fractions[name], t, opts.steps)
            norms = filter_norms(model, group.producers, opts.norm)
            keeps[name] = choose_channels(norms, round(fraction * group.channels), keeps.get(name))
            masks.update(channel_masks(model, group, keeps[name]))
        return masks

    run_schedule(model, train_data, opts, context, f"removing {opts.sparsity:.0%} of the filters", step_masks)
    return remove_channels(model, groups, keeps).eval()
