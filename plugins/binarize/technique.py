"""The `binarize` technique: the model's inner conv and linear layers made binary and fine-tuned.

XNOR-Net (Rastegari et al., 2016): a binary layer multiplies the sign of its input by the sign of
its weights times a scale per output channel (the mean absolute weight); in training the signs
pass gradients straight through where |x| <= 1 (Courbariaux et al., 2016). Each binary layer's
input is compared with a threshold per channel, started at the channel's mean over the training
data (so a ReLU before it does not leave every sign +1) and learned with the weights unless
`learn_threshold` is off. The first and last conv/linear layers stay int8, the layers around the
binary ones (batch norm, pooling, ReLU) stay as they are. After training each binary layer's
weight becomes scale * sign and its input the `tinyml_binarize::sign` op, which export keeps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from tinyml.errors import RecipeError
from tinyml.technique import Context, Technique
from tinyml_plugins.binarize.sign import sign

MIN_INPUT_CHANNELS = 4  # fewer channels packed to a 32-bit word would take more bytes than int8
SEED = 0


class BinarizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(15, ge=1, le=1000, description="epochs of fine-tuning with binary layers")
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate of the fine-tuning")
    batch_size: int = Field(64, ge=1, description="training batch size")
    learn_threshold: bool = Field(
        True, description="learn each binary layer's input threshold per channel (else keep the channel mean)"
    )
    layers: list[str] | None = Field(
        None,
        description="module paths of the conv/linear layers to binarize (default: every one but the first and the "
        "last with groups 1 and at least 4 input channels)",
    )


def ste_sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, else -1; the gradient passes straight through where |x| <= 1."""
    soft = torch.clamp(x, -1.0, 1.0)
    return soft + (torch.where(x >= 0, 1.0, -1.0) - soft).detach()


class BinaryLayer:
    """What binary conv and linear layers share: a threshold per input channel, binary input and weights."""

    threshold: nn.Parameter
    weight: nn.Parameter
    frozen: bool

    def _init_binary(self, in_channels: int, learn_threshold: bool) -> None:
        self.threshold = nn.Parameter(torch.zeros(in_channels), requires_grad=learn_threshold)
        self.frozen = False

    def binary_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return ste_sign(x - self.threshold.reshape(1, -1, *([1] * (x.dim() - 2))))
        return sign(x, self.threshold)

    def binary_weight(self) -> torch.Tensor:
        """scale * sign(weight), the scale per output channel; after `freeze` the weight itself."""
        if self.frozen:
            return self.weight
        scale = self.weight.abs().mean(dim=tuple(range(1, self.weight.dim())), keepdim=True)
        return scale * ste_sign(self.weight)

    def freeze(self) -> None:
        """Make the weight scale * sign for good, so the model exports with it as a parameter."""
        with torch.no_grad():
            self.weight.copy_(self.binary_weight())
        self.frozen = True


class BinaryConv2d(BinaryLayer, nn.Conv2d):
    """A Conv2d on the sign of its input (minus a threshold) with binary weights."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, learn_threshold: bool) -> BinaryConv2d:
        layer = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
        )
        layer.load_state_dict(conv.state_dict())
        layer._init_binary(conv.in_channels, learn_threshold)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.binary_input(x), self.binary_weight(), self.bias)


class BinaryLinear(BinaryLayer, nn.Linear):
    """A Linear on the sign of its input (minus a threshold) with binary weights."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, learn_threshold: bool) -> BinaryLinear:
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        layer.load_state_dict(linear.state_dict())
        layer._init_binary(linear.in_features, learn_threshold)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.binary_input(x), self.binary_weight(), self.bias)


def _weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _refusal(module: nn.Module) -> str:
    """Why a layer cannot be binary, or ''."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"a grouped or depthwise convolution (groups={module.groups})"
        if tuple(module.dilation) != (1, 1):
            return f"a dilated convolution (dilation={tuple(module.dilation)})"
        if not isinstance(module.padding, tuple):
            return f"a convolution with padding={module.padding!r} (give the padding as numbers)"
    channels = module.in_channels if isinstance(module, nn.Conv2d) else module.in_features
    if channels < MIN_INPUT_CHANNELS:
        return f"a layer with {channels} inputs per position (binary layers need at least {MIN_INPUT_CHANNELS})"
    return ""


class Binarize(Technique):
    """Binary (XNOR) inner layers, fine-tuned with a straight-through estimator; first and last layers int8."""

    name = "binarize"
    stage = "train"
    Options = BinarizeOptions
    reduces = ("flash",)

    def choose_layers(self, model: nn.Module) -> list[str]:
        """The module paths to binarize; a RecipeError naming the layer when the `layers` option cannot be met."""
        weighted = _weighted_layers(model)
        if len(weighted) < 3:
            raise RecipeError(
                f"Technique 'binarize' keeps the first and the last conv/linear layers int8 and binarizes the ones "
                f"between, but the model has {len(weighted)} ({', '.join(p for p, _ in weighted) or 'none'}); it "
                "needs at least 3."
            )
        inner = dict(weighted[1:-1])
        if self.options.layers is None:
            chosen = [path for path, module in inner.items() if not _refusal(module)]
            if not chosen:
                raise RecipeError(
                    "Technique 'binarize' found no layer it can binarize between the first and the last: "
                    + "; ".join(f"`{p}` is {_refusal(m)}" for p, m in inner.items())
                    + "."
                )
            return chosen
        ends = {weighted[0][0], weighted[-1][0]}
        for path in self.options.layers:
            if path in ends:
                raise RecipeError(
                    f"technique 'binarize' option `layers` names `{path}`, the model's first or last conv/linear "
                    "layer, which stays int8 (binary first and last layers lose too much accuracy); its inner "
                    f"layers are: {', '.join(inner) or 'none'}."
                )
            if path not in inner:
                raise RecipeError(
                    f"technique 'binarize' option `layers` names `{path}`, which is no conv/linear layer of the "
                    f"model; the layers it can binarize are among: {', '.join(inner) or 'none'}."
                )
            if _refusal(inner[path]):
                raise RecipeError(
                    f"technique 'binarize' option `layers` names `{path}`, which is {_refusal(inner[path])} and "
                    "cannot be binary; leave it out."
                )
        return list(self.options.layers)

    def apply(self, model: nn.Module, context: Context) -> nn.Module:
        x, y = context.require_train_data(self.name)
        chosen = self.choose_layers(model)
        binary = [_replace(model, path, self.options.learn_threshold) for path in chosen]
        xt, yt = torch.from_numpy(np.asarray(x, dtype=np.float32)), torch.from_numpy(np.asarray(y, dtype=np.int64))
        _start_thresholds(model, binary, xt[:512])
        _train(model, xt, yt, self.options, context)
        model.eval()
        for layer in binary:
            layer.freeze()
        return model


def _replace(model: nn.Module, path: str, learn_threshold: bool) -> BinaryLayer:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    module = getattr(parent, attr)
    if isinstance(module, nn.Conv2d):
        layer: BinaryLayer = BinaryConv2d.from_conv(module, learn_threshold)
    else:
        layer = BinaryLinear.from_linear(module, learn_threshold)
    setattr(parent, attr, layer)
    return layer


@torch.no_grad()
def _start_thresholds(model: nn.Module, layers: list[BinaryLayer], x: torch.Tensor) -> None:
    """Each layer's threshold: its input's mean per channel, layer after layer (each sees the binary ones before)."""
    model.eval()
    for layer in layers:
        seen: list[torch.Tensor] = []
        handle = layer.register_forward_pre_hook(lambda _module, args, seen=seen: seen.append(args[0]))
        model(x)
        handle.remove()
        inputs = seen[0]
        dims = [d for d in range(inputs.dim()) if d != 1]
        layer.threshold.data = inputs.mean(dim=dims).to(torch.float32)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: BinarizeOptions, context: Context) -> None:
    torch.manual_seed(SEED)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=options.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, options.epochs)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    with context.progress("binarize: fine-tuning the binary layers", total=options.epochs) as advance:
        for _ in range(options.epochs):
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), options.batch_size):
                batch = order[start : start + options.batch_size]
                opt.zero_grad()
                F.cross_entropy(model(x[batch]), y[batch]).backward()
                opt.step()
            sched.step()
            advance(1)
