"""The search space: microcontroller blocks (full, depthwise-separable, inverted residual) as models.

A candidate (`Architecture`) is an input resolution, a width multiplier and, per stage, a depth, a
block type, a kernel size and an expansion. `SearchSpace` lists the values each may take (the
recipe's ``[space]`` table); `suggest` draws one through an Optuna trial and `build_model` makes
the PyTorch module: a 3x3 stem, the stages, a global average pool and a linear classifier.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, PositiveInt

if TYPE_CHECKING:
    import optuna
    from torch import nn

Block = Literal["conv", "ds", "ir"]
BLOCK_NAMES = {"conv": "full convolution", "ds": "depthwise-separable", "ir": "inverted residual"}


class StageSpec(BaseModel):
    """One stage: its output channels at width 1.0 and the stride of its first block."""

    model_config = ConfigDict(extra="forbid")

    channels: PositiveInt
    stride: Literal[1, 2] = 1


class SearchSpace(BaseModel):
    """The values the search may choose; every list must hold at least one value."""

    model_config = ConfigDict(extra="forbid")

    resolutions: list[PositiveInt] = [8, 12, 16]  # input side in pixels; data are resized to it
    widths: list[pydantic.PositiveFloat] = [0.5, 0.75, 1.0]  # multiplies every stage's channels
    stem_channels: PositiveInt = 8  # at width 1.0
    stages: list[StageSpec] = [
        StageSpec(channels=16, stride=1),
        StageSpec(channels=24, stride=2),
        StageSpec(channels=32, stride=2),
    ]
    depths: list[pydantic.NonNegativeInt] = [1, 2]  # blocks per stage (0 skips a stage)
    blocks: list[Block] = ["conv", "ds", "ir"]
    kernels: list[Literal[3, 5]] = [3, 5]
    expansions: list[Literal[1, 3, 6]] = [1, 3, 6]  # inverted residual only

    @pydantic.model_validator(mode="after")
    def _resolution_survives_strides(self) -> SearchSpace:
        factor = 1
        for stage in self.stages:
            factor *= stage.stride
        small = [r for r in self.resolutions if r < factor]
        if small:
            raise ValueError(
                f"resolutions {small} are smaller than the stages' total stride {factor}: the feature map would "
                "vanish before the classifier"
            )
        return self

    def empty_fields(self) -> list[str]:
        """The lists that hold no value (each makes the space empty)."""
        return [name for name in ("resolutions", "widths", "stages", "depths", "blocks", "kernels", "expansions")
                if not getattr(self, name)]  # fmt: skip

    def size(self) -> int:
        """How many distinct candidates the space holds (expansion counted for inverted residuals only)."""
        per_block = len(self.kernels) * sum(len(self.expansions) if b == "ir" else 1 for b in set(self.blocks))
        per_stage = sum(per_block if d > 0 else 1 for d in set(self.depths))
        return len(set(self.resolutions)) * len(set(self.widths)) * per_stage ** len(self.stages)


@dataclass(frozen=True)
class StageChoice:
    depth: int
    block: str
    kernel: int
    expansion: int


@dataclass(frozen=True)
class Architecture:
    """One candidate; `as_dict` is what a written model factory stores."""

    resolution: int
    width: float
    stem_channels: int
    stages: tuple[tuple[int, int], ...]  # (channels at width 1.0, stride)
    choices: tuple[StageChoice, ...]
    in_channels: int = 1
    classes: int = 10

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        return cls(
            resolution=int(data["resolution"]),
            width=float(data["width"]),
            stem_channels=int(data["stem_channels"]),
            stages=tuple((int(c), int(s)) for c, s in data["stages"]),
            choices=tuple(StageChoice(**c) for c in data["choices"]),
            in_channels=int(data.get("in_channels", 1)),
            classes=int(data.get("classes", 10)),
        )

    def label(self) -> str:
        """A short name, e.g. ``r12 w0.75 ir3k5e6x2 ds3x1 -``."""
        parts = [f"r{self.resolution}", f"w{self.width:g}"]
        for c in self.choices:
            if c.depth == 0:
                parts.append("-")
            elif c.block == "ir":
                parts.append(f"ir k{c.kernel}e{c.expansion}x{c.depth}")
            else:
                parts.append(f"{c.block} k{c.kernel}x{c.depth}")
        return " ".join(parts)


def scaled(channels: int, width: float) -> int:
    """Channels at a width multiplier, rounded to a multiple of 4 (at least 4)."""
    return max(4, int(round(channels * width / 4)) * 4)


def from_params(params: dict[str, Any], space: SearchSpace, in_channels: int, classes: int) -> Architecture:
    """The architecture an Optuna trial's parameters name."""
    choices = []
    for i in range(len(space.stages)):
        block = params[f"stage{i}_block"]
        choices.append(
            StageChoice(
                depth=int(params[f"stage{i}_depth"]),
                block=block,
                kernel=int(params[f"stage{i}_kernel"]),
                expansion=int(params[f"stage{i}_expansion"]) if block == "ir" else 1,
            )
        )
    return Architecture(
        resolution=int(params["resolution"]),
        width=float(params["width"]),
        stem_channels=space.stem_channels,
        stages=tuple((s.channels, s.stride) for s in space.stages),
        choices=tuple(choices),
        in_channels=in_channels,
        classes=classes,
    )


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Draw every parameter of a candidate through `trial` (the same names in every trial)."""
    params: dict[str, Any] = {
        "resolution": trial.suggest_categorical("resolution", space.resolutions),
        "width": trial.suggest_categorical("width", space.widths),
    }
    for i in range(len(space.stages)):
        params[f"stage{i}_depth"] = trial.suggest_categorical(f"stage{i}_depth", space.depths)
        params[f"stage{i}_block"] = trial.suggest_categorical(f"stage{i}_block", space.blocks)
        params[f"stage{i}_kernel"] = trial.suggest_categorical(f"stage{i}_kernel", space.kernels)
        params[f"stage{i}_expansion"] = trial.suggest_categorical(f"stage{i}_expansion", space.expansions)
    return params


def smallest_candidates(space: SearchSpace, in_channels: int, classes: int) -> list[Architecture]:
    """The candidates that may need the least RAM: lowest resolution and width, fewest blocks, each block
    type at its smallest kernel and expansion (which is smallest depends on the planner, so all are tried)."""
    depth = min(space.depths)
    found = []
    for block, kernel in itertools.product(sorted(set(space.blocks)), sorted(set(space.kernels))[:1]):
        params = {"resolution": min(space.resolutions), "width": min(space.widths)}
        for i in range(len(space.stages)):
            params.update({f"stage{i}_depth": depth, f"stage{i}_block": block, f"stage{i}_kernel": kernel,
                           f"stage{i}_expansion": min(space.expansions)})  # fmt: skip
        found.append(from_params(params, space, in_channels, classes))
    return found


def build_model(arch: Architecture) -> nn.Module:
    """The PyTorch module of `arch` (untrained); layer names read ``stem``, ``stages.1.0.depthwise``, ..."""
    from collections import OrderedDict

    from torch import nn

    def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int, relu: bool) -> nn.Sequential:
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(cout),
        )
        if relu:
            layers["relu"] = nn.ReLU6()
        return nn.Sequential(layers)

    class DepthwiseSeparable(nn.Module):
        """kxk depthwise, then 1x1 pointwise; ReLU6 after each."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
            super().__init__()
            self.depthwise = conv_bn(cin, cin, kernel, stride, cin, relu=True)
            self.pointwise = conv_bn(cin, cout, 1, 1, 1, relu=True)

        def forward(self, x):
            return self.pointwise(self.depthwise(x))

    class InvertedResidual(nn.Module):
        """1x1 expansion (when > 1), kxk depthwise, linear 1x1 projection; the input added when shapes allow."""

        def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
            super().__init__()
            hidden = cin * expansion
            self.expand = conv_bn(cin, hidden, 1, 1, 1, relu=True) if expansion > 1 else nn.Identity()
            self.depthwise = conv_bn(hidden, hidden, kernel, stride, hidden, relu=True)
            self.project = conv_bn(hidden, cout, 1, 1, 1, relu=False)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.project(self.depthwise(self.expand(x)))
            return x + y if self.residual else y

    class Candidate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            channels = scaled(arch.stem_channels, arch.width)
            self.stem = conv_bn(arch.in_channels, channels, 3, 1, 1, relu=True)
            stages = []
            for (base, stride), choice in zip(arch.stages, arch.choices, strict=True):
                blocks = []
                cout = scaled(base, arch.width)
                for b in range(choice.depth):
                    s = stride if b == 0 else 1
                    if choice.block == "ir":
                        blocks.append(InvertedResidual(channels, cout, choice.kernel, s, choice.expansion))
                    elif choice.block == "conv":  # a full kxk convolution: more weights (flash) per byte of RAM
                        blocks.append(conv_bn(channels, cout, choice.kernel, s, 1, relu=True))
                    else:
                        blocks.append(DepthwiseSeparable(channels, cout, choice.kernel, s))
                    channels = cout
                stages.append(nn.Sequential(*blocks))
            self.stages = nn.Sequential(*stages)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.classifier = nn.Linear(channels, arch.classes)

        def forward(self, x):
            return self.classifier(self.flatten(self.pool(self.stages(self.stem(x)))))

    return Candidate()
