"""Training a candidate: the short run that estimates its accuracy, and the full run of the chosen one.

`run_trial` (the short run) and `run_finalist` (the full run of one of the most accurate on one
cross-validation fold) are what an executor runs, in another process or on a Ray worker: they take plain
data, use one thread and a fixed seed, so the same candidate gets the same score wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyml_plugins.search.space import Architecture, build_model

BATCH = 64
LEARNING_RATE = 1e-2


@dataclass(frozen=True)
class TrialTask:
    """One candidate to train and score: plain values, so it pickles to a process or a Ray worker."""

    number: int
    architecture: dict[str, Any]
    epochs: int
    seed: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def resize(x: np.ndarray, resolution: int) -> np.ndarray:
    """Images (N, C, H, W) resized to `resolution` x `resolution` (bilinear), float32."""
    import torch

    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    with torch.no_grad():
        out = torch.nn.functional.interpolate(
            torch.from_numpy(x), size=(resolution, resolution), mode="bilinear", align_corners=False
        )
    return out.numpy().astype(np.float32)


def train(
    arch: Architecture,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    seed: int,
    advance: Callable[[int], None] | None = None,
) -> Any:
    """The candidate trained on (x, y) resized to its resolution; seeded."""
    import torch

    torch.manual_seed(seed)
    return fit(build_model(arch), resize(x, arch.resolution), y, epochs, seed, advance)


def fit(
    model: Any, x: np.ndarray, y: np.ndarray, epochs: int, seed: int, advance: Callable[[int], None] | None = None
) -> Any:
    """`model` trained with Adam and a cosine schedule on (x, y), batches drawn with `seed`."""
    import torch
    from torch import nn

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), BATCH):
            idx = order[i : i + BATCH]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
        if advance is not None:
            advance(1)
    return model.eval()


def accuracy(model: Any, arch: Architecture, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        predicted = model(torch.from_numpy(resize(x, arch.resolution))).argmax(1).numpy()
    return float((predicted == y).mean())


def validation_loss(model: Any, arch: Architecture, x: np.ndarray, y: np.ndarray) -> float:
    import torch
    from torch import nn

    with torch.no_grad():
        logits = model(torch.from_numpy(resize(x, arch.resolution)))
    return float(nn.functional.cross_entropy(logits, torch.from_numpy(y)))


def run_trial(task: TrialTask) -> float:
    """The candidate's accuracy on the search's validation split after a short training (one thread)."""
    import torch

    torch.set_num_threads(1)
    arch = Architecture.from_dict(task.architecture)
    model = train(arch, task.x_train, task.y_train, task.epochs, task.seed)
    return accuracy(model, arch, task.x_val, task.y_val)


def run_finalist(task: TrialTask) -> tuple[float, float]:
    """A finalist's (accuracy, cross-entropy) on the task's held-out fold after the full training (one thread)."""
    import torch

    torch.set_num_threads(1)
    arch = Architecture.from_dict(task.architecture)
    model = train(arch, task.x_train, task.y_train, task.epochs, task.seed)
    return accuracy(model, arch, task.x_val, task.y_val), validation_loss(model, arch, task.x_val, task.y_val)
