"""Structured pruning for `prune` (mode = "filters"): whole output channels of a conv really removed.

The model is traced with torch.fx. From each ordinary conv (groups = 1) its output channels are
followed through the layers that keep channels apart (BatchNorm2d, depthwise convs, ReLU-like
activations with f(0) = 0, pooling, dropout) to the layers that read them: a conv (its input
channels shrink) or a flatten into a Linear (the columns of each removed channel's H x W positions
go). A conv whose channels reach an add, a concatenation, the model's output or anything else is
left alone, so both sides of a residual add keep their channels.

On the schedule the lowest-norm channels are masked: the conv's filter and bias, and the channel
in every batch norm and depthwise conv on the way, are held at 0.0 during fine-tuning, so the
channel reads 0 where it is consumed. At the end the channels are removed: new, smaller modules
with copied slices, so the returned model computes what the masked one did.
"""

from __future__ import annotations

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
    """A conv's channels reach something that cannot lose channels (an add, the output, ...)."""


@dataclass
class ChannelPath:
    """A conv's output channels and every module they pass through or are read by.

    `members` keep one channel per producer channel (BatchNorm2d, depthwise Conv2d); `convs` read
    them as input channels; `linears` read them flattened, `spatial` columns per channel.
    """

    producer: str
    channels: int
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


def channel_paths(model: nn.Module, example: torch.Tensor, producers: list[str]) -> dict[str, ChannelPath]:
    """The channel path of every conv in `producers` whose channels can be removed, by module path."""
    traced = trace(model, example)
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    paths = {}
    for node in traced.graph.nodes:
        if node.op != "call_module" or node.target not in producers or calls[node.target] != 1:
            continue
        module = traced.get_submodule(node.target)
        path = ChannelPath(node.target, module.out_channels)
        try:
            _follow(traced, node, path, calls)
        except NotPrunable:
            continue
        paths[node.target] = path
    return paths


def _follow(traced: torch.fx.GraphModule, node: torch.fx.Node, path: ChannelPath, calls: dict[str, int]) -> None:
    """Add to `path` every module `node`'s channels reach; NotPrunable when one cannot lose channels."""
    for user in node.users:
        if user.op == "call_module":
            module = traced.get_submodule(user.target)
            shared = calls[user.target] != 1
            if isinstance(module, PASS_MODULES):
                _follow(traced, user, path, calls)
            elif isinstance(module, nn.BatchNorm2d) and not shared:
                path.members.append(user.target)
                _follow(traced, user, path, calls)
            elif layer_kind(module) == "depthwise" and module.out_channels == module.in_channels and not shared:
                path.members.append(user.target)
                _follow(traced, user, path, calls)
            elif isinstance(module, nn.Conv2d) and module.groups == 1 and not shared:
                path.convs.append(user.target)
            elif isinstance(module, nn.Flatten) and module.start_dim == 1:
                _flattened(traced, user, path, calls)
            else:
                raise NotPrunable(user.target)
        elif user.op == "call_function" and user.target in PASS_FUNCTIONS and user.args[0] is node:
            _follow(traced, user, path, calls)
        elif user.op == "call_method" and user.target in PASS_METHODS:
            _follow(traced, user, path, calls)
        elif _is_flatten(user):
            _flattened(traced, user, path, calls)
        else:
            raise NotPrunable(str(user.target))


def _is_flatten(node: torch.fx.Node) -> bool:
    """A flatten, view or reshape of (N, C, H, W) into (N, C*H*W)."""
    is_call = (node.op == "call_function" and node.target in FLATTEN_FUNCTIONS) or (
        node.op == "call_method" and node.target in FLATTEN_METHODS
    )
    if not is_call or "tensor_meta" not in node.meta or "tensor_meta" not in node.args[0].meta:
        return False
    shape_in, shape_out = node.args[0].meta["tensor_meta"].shape, node.meta["tensor_meta"].shape
    return len(shape_in) == 4 and len(shape_out) == 2 and shape_out[1] == int(np.prod(shape_in[1:]))


def _flattened(traced: torch.fx.GraphModule, node: torch.fx.Node, path: ChannelPath, calls: dict[str, int]) -> None:
    """After a flatten every reader must be a Linear (used once) that loses H*W columns per channel."""
    shape = node.args[0].meta["tensor_meta"].shape
    spatial = int(shape[2] * shape[3])
    for user in node.users:
        if user.op == "call_module" and isinstance(traced.get_submodule(user.target), nn.Linear):
            if calls[user.target] != 1:
                raise NotPrunable(user.target)
            path.linears.append((user.target, spatial))
        elif user.op == "call_module" and isinstance(traced.get_submodule(user.target), nn.Dropout | nn.Identity):
            _flattened(traced, user, path, calls)
        else:
            raise NotPrunable(str(user.target))


def filter_norms(model: nn.Module, producer: str, norm: str) -> torch.Tensor:
    """L1 or L2 norm of each output channel's filter."""
    weight = model.get_submodule(producer).weight.detach().flatten(1).double()
    return weight.abs().sum(1) if norm == "l1" else weight.pow(2).sum(1).sqrt()


def choose_channels(norms: torch.Tensor, count: int, previous: torch.Tensor | None) -> torch.Tensor:
    """Keep-mask of the channels: the `count` of lowest norm removed, channels removed before first (stable)."""
    score = norms.clone()
    if previous is not None:
        score[~previous] = -1.0
    keep = torch.ones(len(norms), dtype=torch.bool)
    keep[torch.sort(score, stable=True).indices[:count]] = False
    return keep


def channel_masks(model: nn.Module, path: ChannelPath, keep: torch.Tensor) -> Masks:
    """Masks of every parameter that carries `path`'s channels: producer and members, weight and bias."""
    masks = {}
    for name in (path.producer, *path.members):
        module = model.get_submodule(name)
        for role in ("weight", "bias"):
            param = getattr(module, role, None)
            if param is not None:
                shape = (-1,) + (1,) * (param.dim() - 1)
                masks[f"{name}.{role}"] = keep.reshape(shape).expand_as(param).clone()
    return masks


def remove_channels(model: nn.Module, paths: dict[str, ChannelPath], keeps: dict[str, torch.Tensor]) -> nn.Module:
    """Replace every module on the paths by a smaller copy without the removed channels (in place)."""
    out_keep: dict[str, torch.Tensor] = {}
    in_keep: dict[str, torch.Tensor] = {}
    for producer, keep in keeps.items():
        path = paths[producer]
        index = torch.nonzero(keep).flatten()
        out_keep[producer] = index
        for name in path.members:
            out_keep[name] = in_keep[name] = index
        for name in path.convs:
            in_keep[name] = index
        for name, spatial in path.linears:
            in_keep[name] = (index[:, None] * spatial + torch.arange(spatial)).flatten()
    for name in {**out_keep, **in_keep}:
        module = model.get_submodule(name)
        smaller = _slice(module, out_keep.get(name), in_keep.get(name))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, smaller)
    return model


def _slice(module: nn.Module, out_index: torch.Tensor | None, in_index: torch.Tensor | None) -> nn.Module:
    """A copy of a Conv2d, BatchNorm2d or Linear keeping output channels `out_index` and inputs `in_index`."""
    with torch.no_grad():
        if isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(len(out_index), module.eps, module.momentum, module.affine, module.track_running_stats)
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
    producers = [p for p, m in candidates.items() if layer_kind(m) == "conv" and m.groups == 1]
    paths = channel_paths(model, example, producers)
    counts = {p: round(targets[p] * path.channels) for p, path in paths.items()}
    for producer, count in counts.items():
        if count >= paths[producer].channels:
            raise RecipeError(
                f"Technique 'prune' with mode = 'filters' would remove every one of the {paths[producer].channels} "
                f"output channels of {producer!r} (sparsity {targets[producer]} rounds to {count}). Lower its "
                f'sparsity, e.g. layers = {{ "{producer}" = 0.5 }}.'
            )
    paths = {p: path for p, path in paths.items() if counts[p] > 0}
    if not paths:
        raise RecipeError(
            "Technique 'prune' with mode = 'filters' finds no conv whose output channels can be removed at this "
            f"sparsity: the convs ({', '.join(producers) or 'none'}) feed an add, a concatenation or the model's "
            "output, or would lose no channel. Use mode = 'unstructured' or raise the sparsity."
        )
    keeps: dict[str, torch.Tensor] = {}

    def step_masks(t: int, previous: Masks) -> Masks:
        masks: Masks = {}
        for producer, path in paths.items():
            fraction = scheduled(opts.initial_sparsity, targets[producer], t, opts.steps)
            norms = filter_norms(model, producer, opts.norm)
            keeps[producer] = choose_channels(norms, round(fraction * path.channels), keeps.get(producer))
            masks.update(channel_masks(model, path, keeps[producer]))
        return masks

    run_schedule(model, train_data, opts, context, f"removing {opts.sparsity:.0%} of the filters", step_masks)
    return remove_channels(model, paths, keeps).eval()
