"""prune: magnitude pruning of Conv2d and Linear weights on a gradual schedule, with fine-tuning between steps.

Unstructured (the default, Han et al. "Deep Compression"): the weights of smallest magnitude are
set to exactly 0.0, either over all pruned layers at once (`scope = "global"`, one threshold) or
layer by layer (`scope = "layer"`); `layers` overrides the target of a module path (a parent path
covers every prunable module under it, the longest matching path wins). The target is reached on
Zhu and Gupta's polynomial schedule, s_t = s_f + (s_i - s_f)(1 - t/n)^3 for t = 1..n, with
`epochs_per_step` epochs of fine-tuning on `Context.train_data` after each step. The mask is
applied to the gradient before and to the weight after every optimizer step, so a pruned weight is
0.0 when the model is returned (a plain `nn.Module`) and stays 0 in int8: symmetric quantization
maps 0.0 to 0 whatever the channel's scale, and batch-norm folding multiplies it.

Structured (`mode = "filters"`): whole output channels of the lowest L1 or L2 norm are removed and
the layers that read them shrink to match (see `tinyml_plugins.prune_filters`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tinyml.errors import RecipeError
from tinyml.hookspecs import hookimpl
from tinyml.technique import Context, Technique

LayerKind = Literal["conv", "depthwise", "linear"]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
# Keep-masks (True = kept) by parameter name (`features.conv1.weight`), shaped like the parameter.
Masks = dict[str, torch.Tensor]


class PruneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["unstructured", "filters"] = Field(
        "unstructured", description="zero single weights, or remove whole output channels (filters)"
    )
    sparsity: Fraction = Field(
        0.8, description="final fraction of pruned weights (filters mode: of each layer's output channels)"
    )
    scope: Literal["global", "layer"] = Field(
        "global",
        description="one magnitude threshold over all pruned layers, or the target reached in each layer "
        "(filters mode: always each layer)",
    )
    layers: dict[str, Fraction] = Field(
        default_factory=dict, description="per-module-path sparsity overrides, e.g. {classifier = 0.5}"
    )
    types: list[LayerKind] = Field(
        default_factory=lambda: ["conv", "depthwise", "linear"], description="which kinds of layers are pruned"
    )
    norm: Literal["l1", "l2"] = Field("l1", description="filters mode: the norm that ranks output channels")
    initial_sparsity: Fraction = Field(0.0, description="sparsity of the schedule's starting point (s_i)")
    steps: int = Field(4, ge=1, description="pruning steps of the schedule (n)")
    epochs_per_step: int = Field(2, ge=0, description="epochs of fine-tuning after each pruning step")
    lr: float = Field(1e-3, gt=0.0, description="learning rate (Adam) of the fine-tuning")
    batch_size: int = Field(64, ge=1, description="fine-tuning batch size")
    seed: int = Field(0, description="seed of the fine-tuning's shuffling and of any randomness in the model")


class Prune(Technique):
    """Magnitude pruning (unstructured or whole filters) with gradual fine-tuning."""

    name = "prune"
    stage = "train"
    Options = PruneOptions
    reduces = ("flash",)

    def apply(self, model: nn.Module, context: Context) -> nn.Module:
        opts = self.options
        model = copy.deepcopy(model)
        candidates = prunable_modules(model, opts.types)
        if not candidates:
            raise RecipeError(
                f"Technique 'prune' finds nothing to prune: the model has no {describe_kinds(opts.types)} layer. "
                "Remove 'prune' from the recipe's techniques, or widen its `types` option "
                '(["conv", "depthwise", "linear"]).'
            )
        targets = layer_targets(candidates, opts.sparsity, opts.layers)
        train_data = context.require_train_data("prune")
        if opts.mode == "filters":
            from tinyml_plugins.prune_filters import prune_filters

            return prune_filters(model, candidates, targets, context, opts)
        groups = sparsity_groups(targets, opts.scope, opts.layers, candidates)

        def step_masks(t: int, previous: Masks) -> Masks:
            # Each group follows the schedule towards its own final sparsity.
            step = [(paths, scheduled(opts.initial_sparsity, final, t, opts.steps)) for paths, final in groups]
            return magnitude_masks(candidates, step, previous)

        run_schedule(model, train_data, opts, context, f"pruning to {opts.sparsity:.0%} sparsity", step_masks)
        return model.eval()


@hookimpl
def tinyml_techniques() -> list[type[Technique]]:
    return [Prune]


def layer_kind(module: nn.Module) -> LayerKind | None:
    """The kind of a prunable layer (a depthwise conv has one filter per input channel); None for any other module."""
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        return "depthwise" if depthwise else "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    return None


def describe_kinds(kinds: list[LayerKind]) -> str:
    names = {"conv": "Conv2d", "depthwise": "depthwise Conv2d", "linear": "Linear"}
    return " or ".join(names[k] for k in kinds) or "selected"


def prunable_modules(model: nn.Module, kinds: list[LayerKind]) -> dict[str, nn.Module]:
    """The modules whose weights are pruned, by module path, in model order."""
    return {path: m for path, m in model.named_modules() if path and layer_kind(m) in kinds}


def layer_targets(candidates: dict[str, nn.Module], sparsity: float, overrides: dict[str, float]) -> dict[str, float]:
    """Final sparsity of each prunable module: the override of its longest matching path, else `sparsity`.

    A key that names no prunable module (nor a parent of one) is a `RecipeError` listing the paths.
    """
    for key in overrides:
        if not any(_covers(key, path) for path in candidates):
            raise RecipeError(
                f"Technique 'prune' option layers: {key!r} names no prunable module of the model. The prunable "
                f"modules are: {', '.join(candidates)} (a parent path such as 'features' covers the modules under it)."
            )
    targets = {}
    for path in candidates:
        matching = [key for key in overrides if _covers(key, path)]
        targets[path] = overrides[max(matching, key=len)] if matching else sparsity
    return targets


def _covers(key: str, path: str) -> bool:
    return path == key or path.startswith(key + ".")


def sparsity_groups(
    targets: dict[str, float], scope: str, overrides: dict[str, float], candidates: dict[str, nn.Module]
) -> list[tuple[list[str], float]]:
    """Sets of modules that share one magnitude threshold, with their final sparsity.

    Globally, every module without an override is one group; an overridden module, and every
    module in layer scope, is a group of its own.
    """
    overridden = {path for path in candidates if any(_covers(key, path) for key in overrides)}
    if scope == "layer":
        return [([path], s) for path, s in targets.items()]
    shared = [path for path in targets if path not in overridden]
    groups = [([path], targets[path]) for path in targets if path in overridden]
    if shared:
        groups.insert(0, (shared, targets[shared[0]]))
    return groups


def scheduled(initial: float, final: float, step: int, steps: int) -> float:
    """Zhu and Gupta's polynomial schedule: s_t = s_f + (s_i - s_f)(1 - t/n)^3 (s_i capped at s_f)."""
    initial = min(initial, final)
    return final + (initial - final) * (1.0 - step / steps) ** 3


def polynomial_schedule(initial: float, final: float, steps: int) -> list[float]:
    """The sparsity after each of the `steps` pruning steps, ending at `final`."""
    return [scheduled(initial, final, t, steps) for t in range(1, steps + 1)]


def magnitude_masks(candidates: dict[str, nn.Module], targets: list[tuple[list[str], float]], previous: Masks) -> Masks:
    """Keep-masks (True = kept) pruning round(s * size) weights of smallest magnitude in each group.

    Weights pruned before rank first, so the masks only grow; ties break by position (stable sort),
    so the result is deterministic.
    """
    masks: Masks = {}
    for paths, fraction in targets:
        scores = []
        for path in paths:
            score = candidates[path].weight.detach().abs().flatten().double()
            if f"{path}.weight" in previous:
                score = torch.where(previous[f"{path}.weight"].flatten(), score, torch.full_like(score, -1.0))
            scores.append(score)
        flat = torch.cat(scores)
        count = int(round(fraction * flat.numel()))
        keep = torch.ones(flat.numel(), dtype=torch.bool)
        keep[torch.sort(flat, stable=True).indices[:count]] = False
        offset = 0
        for path in paths:
            weight = candidates[path].weight
            masks[f"{path}.weight"] = keep[offset : offset + weight.numel()].reshape(weight.shape)
            offset += weight.numel()
    return masks


def apply_masks(params: dict[str, nn.Parameter], masks: Masks) -> None:
    """Set every pruned value to +0.0."""
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].masked_fill_(~mask, 0.0)


def run_schedule(
    model: nn.Module,
    train_data: tuple[np.ndarray, np.ndarray],
    opts: PruneOptions,
    context: Context,
    description: str,
    step_masks: Callable[[int, Masks], Masks],
) -> Masks:
    """Prune with `step_masks(t, previous)` at steps t = 1..n, fine-tuning after each; the last masks."""
    tuner = FineTuner(model, train_data, opts)
    masks: Masks = {}
    total = opts.steps * max(1, opts.epochs_per_step * tuner.batches_per_epoch)
    with context.progress(description, total=total) as advance:
        for t in range(1, opts.steps + 1):
            masks = step_masks(t, masks)
            apply_masks(tuner.params, masks)
            if opts.epochs_per_step:
                tuner.run(opts.epochs_per_step, masks, advance)
            else:
                advance(1)
    return masks


class FineTuner:
    """Adam on the model's training loss, shuffled with its own seeded generator, masks held after each step."""

    def __init__(
        self,
        model: nn.Module,
        train_data: tuple[np.ndarray, np.ndarray],
        opts: PruneOptions,
    ) -> None:
        self.model = model
        self.params = dict(model.named_parameters())
        self.x = torch.from_numpy(np.asarray(train_data[0], np.float32))
        self.y = torch.from_numpy(np.asarray(train_data[1], np.int64))
        self.batch = opts.batch_size
        self.seed = opts.seed
        self.generator = torch.Generator().manual_seed(opts.seed)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
        self.loss = output_loss(model)

    @property
    def batches_per_epoch(self) -> int:
        return (len(self.x) + self.batch - 1) // self.batch

    def run(self, epochs: int, masks: Masks, advance: Callable[[int], None]) -> None:
        """Train `epochs` epochs; pruned weights get no gradient and are zeroed again after each step."""
        self.model.train()
        with seeded(self.seed):
            for _ in range(epochs):
                order = torch.randperm(len(self.x), generator=self.generator)
                for i in range(0, len(self.x), self.batch):
                    idx = order[i : i + self.batch]
                    self.optimizer.zero_grad()
                    out = self.model(self.x[idx])
                    if isinstance(out, list | tuple):
                        out = out[0]
                    self.loss(out.flatten(1), self.y[idx]).backward()
                    for name, mask in masks.items():
                        grad = self.params[name].grad
                        if grad is not None:
                            grad.masked_fill_(~mask, 0.0)
                    self.optimizer.step()
                    apply_masks(self.params, masks)
                    advance(1)
        self.model.eval()


def output_loss(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy on logits; on a model that ends in Softmax (or LogSoftmax), the NLL of its output."""
    leaves = [m for m in model.modules() if not list(m.children())]
    last = leaves[-1] if leaves else None
    if isinstance(last, nn.Softmax):
        return lambda out, y: nn.functional.nll_loss(torch.log(out + 1e-9), y)
    if isinstance(last, nn.LogSoftmax):
        return nn.functional.nll_loss
    return nn.functional.cross_entropy


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global generator seeded for the block (dropout), and restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def sparsity(module: nn.Module) -> float:
    """Fraction of exactly-zero weights of a Conv2d or Linear."""
    weight = module.weight.detach()
    return float((weight == 0).sum()) / weight.numel()
