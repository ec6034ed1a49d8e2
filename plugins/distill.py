"""distill: Hinton's knowledge distillation of the model (the student) from a teacher, with optional feature matching.

The student trains on the training data (`Context.train_data`) against a loss that mixes the hard
labels with the teacher's outputs softened by a temperature T (Hinton, Vinyals and Dean, 2015):

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)
           + feature_weight * sum over `features` of MSE(adapter(student layer), teacher layer)

The teacher is `teacher = "teacher.py:make_teacher"` with `teacher_weights = "teacher.pt"` (a
state_dict; paths relative to the recipe). A teacher factory without weights is trained here
first, on the same data, for `teacher_epochs`; without `teacher` the teacher is a copy of the
incoming model trained further for `teacher_epochs` with nothing held (self-distillation). Feature
matching (FitNets' hints) passes a student layer's output through a 1x1 adapter (a 1x1 Conv2d for
NCHW features, a Linear for flat ones), trained with the student and then dropped, to the teacher
layer's width.

It composes in recipe order: after `prune` the student's exact zeros (its Conv2d and Linear
weights that are 0.0) stay zero, with the mask applied to the gradient before and to the weight
after every step, as `prune` does; a whole-filter-pruned student is just a smaller model;
`quantize-int8` with `qat_epochs` then fine-tunes the distilled student for int8.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from tinyml.errors import RecipeError
from tinyml.hookspecs import hookimpl
from tinyml.technique import Advance, Context, Technique
from tinyml_plugins.prune import Masks, apply_masks, output_loss, prunable_modules, seeded

Logits = Callable[[torch.Tensor], torch.Tensor]
OPTION = "Technique 'distill' option"


class DistillOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    teacher: str | None = Field(
        None, description='the teacher\'s "FILE.py:FUNCTION" (default: a copy of the model, trained further)'
    )
    teacher_weights: str | None = Field(
        None, description="the teacher's state_dict (torch.save); without it the teacher is trained first"
    )
    teacher_epochs: int = Field(20, ge=0, description="epochs of training a teacher that has no weights")
    temperature: float = Field(4.0, gt=0.0, description="T: the softmax temperature of the soft targets")
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.9, description="weight of the soft (teacher) loss; 1 - alpha weighs the hard labels"
    )
    epochs: int = Field(20, ge=1, description="epochs of distillation")
    lr: float = Field(3e-3, gt=0.0, description="learning rate (Adam, cosine decay over the epochs)")
    batch_size: int = Field(64, ge=1, description="batch size")
    seed: int = Field(0, description="seed of the shuffling, the adapters and any randomness in the models")
    features: dict[str, str] = Field(
        default_factory=dict, description="feature matching: student module path = teacher module path"
    )
    feature_weight: float = Field(1.0, ge=0.0, description="weight of the feature-matching loss")

    @model_validator(mode="after")
    def _teacher_file(self) -> DistillOptions:
        if self.teacher is not None and (":" not in self.teacher or not self.teacher.rsplit(":", 1)[1]):
            raise ValueError(f"`teacher` must be FILE.py:FUNCTION, got {self.teacher!r}")
        if self.teacher_weights is not None and self.teacher is None:
            raise ValueError("`teacher_weights` belongs with `teacher` (FILE.py:FUNCTION)")
        return self


class Distill(Technique):
    """Knowledge distillation from a teacher model (Hinton), with optional 1x1-adapted feature matching."""

    name = "distill"
    stage = "train"
    Options = DistillOptions
    path_options = ("teacher", "teacher_weights")

    def apply(self, model: nn.Module, context: Context) -> nn.Module:
        opts = self.options
        x, y = context.require_train_data("distill")
        data = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
        student = copy.deepcopy(model)
        teacher, untrained = self.teacher(student)
        check_outputs(student, teacher, data[0][:2])  # before any training, so a wrong teacher costs nothing
        if untrained:
            with context.progress(untrained, total=opts.teacher_epochs * batches(len(x), opts.batch_size)) as advance:
                train_teacher(teacher, data, opts, advance)
        with seeded(opts.seed):
            matcher = FeatureMatcher(student, teacher, opts.features, data[0][:2])
        masks = zero_masks(student)
        description = f"distilling (T = {opts.temperature:g}, alpha = {opts.alpha:g})"
        try:
            with context.progress(description, total=opts.epochs * batches(len(x), opts.batch_size)) as advance:
                distill(student, teacher, matcher, masks, data, opts, advance)
        finally:
            matcher.remove()
        return student.eval()

    def teacher(self, student: nn.Module) -> tuple[nn.Module, str | None]:
        """The teacher, and what training it still needs (a description for the progress bar), if any.

        A teacher given with weights is ready; one without, or a copy of the student, is trained first.
        """
        opts = self.options
        if opts.teacher is not None:
            from tinyml.recipe import load_factory

            file, function = opts.teacher.rsplit(":", 1)
            with seeded(opts.seed):  # a teacher to train starts from the same initialization every run
                teacher = load_factory(
                    Path(file), function, _path(opts.teacher_weights), f"{OPTION} teacher", f"{OPTION} teacher_weights"
                )
            if opts.teacher_weights is not None:
                return teacher.eval(), None
            untrained = f"training the teacher {Path(file).name}:{function}"
        else:
            teacher, untrained = copy.deepcopy(student), "training the teacher (a copy of the model)"
        if opts.teacher_epochs == 0:
            raise RecipeError(
                f"{OPTION} teacher_epochs is 0, but the teacher has no weights to start from: set `teacher_weights` "
                "to its trained state_dict, or give the teacher epochs of training."
            )
        return teacher, untrained


@hookimpl
def tinyml_techniques() -> list[type[Technique]]:
    return [Distill]


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def batches(samples: int, batch_size: int) -> int:
    return (samples + batch_size - 1) // batch_size


def logits_of(model: nn.Module) -> Logits:
    """How to read logits from the model's output: its log when it ends in Softmax, else the output itself."""
    loss = output_loss(model)
    if loss is F.cross_entropy or loss is F.nll_loss:  # logits, or log-probabilities (logits up to a constant)
        return lambda out: first(out).flatten(1)
    return lambda out: torch.log(first(out).flatten(1) + 1e-9)


def first(out: torch.Tensor | tuple | list) -> torch.Tensor:
    """A model's first output (the one a label indexes)."""
    return out[0] if isinstance(out, list | tuple) else out


def check_outputs(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> None:
    """The teacher must run on the student's inputs and score the same classes; else a `RecipeError`."""
    outputs = {}
    for role, model in (("student", student), ("teacher", teacher)):
        try:
            with torch.no_grad():
                outputs[role] = first(model.eval()(x))
        except Exception as err:
            raise RecipeError(
                f"Technique 'distill': the {role} fails on the training inputs ({list(x.shape[1:])} per sample): "
                f"{type(err).__name__}: {' '.join(str(err).split())}. The teacher must take the student's inputs."
            ) from err
    got, want = list(outputs["teacher"].shape[1:]), list(outputs["student"].shape[1:])
    if got != want:
        raise RecipeError(
            f"Technique 'distill': the teacher's output is shaped {got} per sample ({int(np.prod(got))} classes) but "
            f"the student's is {want} ({int(np.prod(want))} classes): a teacher must score the same classes as the "
            "student. Check the `teacher` factory and its `teacher_weights`."
        )


def zero_masks(model: nn.Module) -> Masks:
    """Keep-masks of the Conv2d and Linear weights that hold exact zeros (a pruned model's), by parameter name."""
    masks = {}
    for path, module in prunable_modules(model, ["conv", "depthwise", "linear"]).items():
        kept = module.weight.detach() != 0
        if not bool(kept.all()):
            masks[f"{path}.weight"] = kept
    return masks


class FeatureMatcher(nn.Module):
    """Records the chosen layers' outputs of both models (forward hooks) and scores them through 1x1 adapters."""

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: dict[str, str], x: torch.Tensor) -> None:
        super().__init__()
        self.pairs = dict(pairs)
        self.seen: dict[tuple[str, str], torch.Tensor] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        student_modules, teacher_modules = dict(student.named_modules()), dict(teacher.named_modules())
        for path, role, modules in [(s, "student", student_modules) for s in pairs] + [
            (t, "teacher", teacher_modules) for t in pairs.values()
        ]:
            if path not in modules or not path:
                listed = ", ".join(p for p in modules if p)
                raise RecipeError(
                    f"{OPTION} features: {path!r} names no module of the {role}. The {role}'s module paths are: "
                    f"{listed}."
                )
            self.handles.append(modules[path].register_forward_hook(self._recorder(role, path)))
        self.adapters = nn.ModuleDict()
        try:
            with torch.no_grad():
                student.eval()(x)
                teacher.eval()(x)
            for s, t in self.pairs.items():
                self.adapters[_key(s)] = adapter(s, self.seen["student", s], t, self.seen["teacher", t])
        except RecipeError:
            self.remove()
            raise
        self.seen.clear()

    def _recorder(self, role: str, path: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if not isinstance(out, torch.Tensor):
                raise RecipeError(
                    f"{OPTION} features: the {role}'s module {path!r} returns {type(out).__name__}, not one tensor; "
                    "choose a layer with a single output."
                )
            self.seen[role, path] = out

        return record

    def remove(self) -> None:
        """Take the hooks off both models, which are then as they were."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def loss(self) -> torch.Tensor:
        """Mean squared error of every adapted student feature against its teacher feature, summed."""
        total = torch.zeros(())
        for s, t in self.pairs.items():
            total = total + F.mse_loss(self.adapters[_key(s)](self.seen["student", s]), self.seen["teacher", t])
        self.seen.clear()
        return total


def _key(path: str) -> str:
    return path.replace(".", "_")


def adapter(student_path: str, s: torch.Tensor, teacher_path: str, t: torch.Tensor) -> nn.Module:
    """A 1x1 Conv2d (NCHW features of the same height and width) or a Linear (flat features) from student to teacher."""
    if s.dim() == t.dim() == 4 and s.shape[2:] == t.shape[2:]:
        return nn.Conv2d(s.shape[1], t.shape[1], 1)
    if s.dim() == t.dim() == 2:
        return nn.Linear(s.shape[1], t.shape[1])
    raise RecipeError(
        f"{OPTION} features: the student's {student_path!r} gives {list(s.shape[1:])} per sample and the teacher's "
        f"{teacher_path!r} {list(t.shape[1:])}; a 1x1 adapter matches channels only, so pair layers whose features "
        "are both flat or both NCHW with the same height and width."
    )


def distill(
    student: nn.Module,
    teacher: nn.Module,
    matcher: FeatureMatcher,
    masks: Masks,
    data: tuple[torch.Tensor, torch.Tensor],
    opts: DistillOptions,
    advance: Advance,
) -> None:
    """Train `student` in place on the distillation loss (module docstring), the masked weights held at zero."""
    x, y = data
    student_logits, teacher_logits = logits_of(student), logits_of(teacher)
    params = dict(student.named_parameters())
    optimizer = torch.optim.Adam([*student.parameters(), *matcher.parameters()], lr=opts.lr)
    temperature = opts.temperature
    teacher.eval()
    with torch.no_grad():  # the teacher is fixed and the data are not augmented: its soft targets are computed once
        soft_targets = torch.cat(
            [F.softmax(teacher_logits(teacher(x[i : i + opts.batch_size])) / temperature, dim=1)
             for i in range(0, len(x), opts.batch_size)]
        )  # fmt: skip
    matcher.seen.clear()
    student.train()
    for idx in shuffled_batches(len(x), optimizer, opts.epochs, opts):
        if matcher.pairs:  # the teacher's features of this batch
            with torch.no_grad():
                teacher(x[idx])
        out = student_logits(student(x[idx]))
        loss = distillation_loss(out, soft_targets[idx], y[idx], temperature, opts.alpha)
        if matcher.pairs:
            loss = loss + opts.feature_weight * matcher.loss()
        optimizer.zero_grad()
        loss.backward()
        for name, mask in masks.items():  # a pruned weight gets no gradient, and is zeroed again after
            if params[name].grad is not None:
                params[name].grad.masked_fill_(~mask, 0.0)
        optimizer.step()
        apply_masks(params, masks)
        advance(1)
    student.eval()


def shuffled_batches(
    samples: int, optimizer: torch.optim.Optimizer, epochs: int, opts: DistillOptions
) -> Iterator[torch.Tensor]:
    """Indices of each batch, shuffled each epoch by a generator of `opts.seed`; the learning rate decays on a
    cosine over the epochs; torch's global generator is seeded meanwhile (dropout), so a run is repeatable."""
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    generator = torch.Generator().manual_seed(opts.seed)
    with seeded(opts.seed):
        for _ in range(epochs):
            order = torch.randperm(samples, generator=generator)
            for i in range(0, samples, opts.batch_size):
                yield order[i : i + opts.batch_size]
            schedule.step()


def distillation_loss(
    student_logits: torch.Tensor, soft_targets: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """alpha * T^2 * KL(soft targets || softmax(student / T)) + (1 - alpha) * CE(student, labels).

    The T^2 keeps the soft term's gradients on the scale of the hard term's whatever T is (Hinton et al.).
    """
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), soft_targets, reduction="batchmean")
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def train_teacher(
    teacher: nn.Module, data: tuple[torch.Tensor, torch.Tensor], opts: DistillOptions, advance: Advance
) -> None:
    """Cross-entropy on the labels (Adam, cosine decay, the technique's batch size and seed), every weight free."""
    x, y = data
    logits = logits_of(teacher)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=opts.lr)
    teacher.train()
    for idx in shuffled_batches(len(x), optimizer, opts.teacher_epochs, opts):
        optimizer.zero_grad()
        F.cross_entropy(logits(teacher(x[idx])), y[idx]).backward()
        optimizer.step()
        advance(1)
    teacher.eval()
