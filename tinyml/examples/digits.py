"""A small CNN for scikit-learn's 8x8 handwritten digits, trained in seconds on a CPU.

The data ship with scikit-learn, so nothing is downloaded. The split and the training are seeded,
and the trained weights are cached (keyed by this file's content), so a second run skips training.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinyml.examples.base import Example, trained
from tinyml.progress import progress_bar

SEED = 0
EPOCHS = 40
BATCH = 64


class DigitsNet(nn.Module):
    """conv-bn-relu, max pool, conv-bn-relu, conv-relu, flatten, linear: 8x8x1 -> 10 logits.

    Submodules are named, so the compiled layers read `features.conv1`, `features.pool1`, ...,
    `classifier` (with `features.bn1` and `features.relu1` fused into `features.conv1`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(1, 16, 3, padding=1, bias=False),
                bn1=nn.BatchNorm2d(16),
                relu1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(16, 32, 3, padding=1, bias=False),
                bn2=nn.BatchNorm2d(32),
                relu2=nn.ReLU(),
                conv3=nn.Conv2d(32, 32, 3, padding=1, stride=2),
                relu3=nn.ReLU(),
            )
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def make_model() -> nn.Module:
    """The untrained digits CNN."""
    return DigitsNet()


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): images as (N, 1, 8, 8) float32 in [0, 1], a 25% held-out split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    return x_train, y_train, x_test, y_test


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = EPOCHS, label: str = "training digits CNN"
) -> nn.Module:
    """Adam with a cosine schedule, seeded; shows a progress bar."""
    torch.manual_seed(SEED)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    with progress_bar(label, total=epochs) as advance:
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), BATCH):
                idx = order[i : i + BATCH]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
            sched.step()
            advance(1)
    return model.eval()


def load(retrain: bool = False) -> Example:
    """The trained digits example (trained on first use, then cached)."""
    x_train, y_train, x_test, y_test = load_data()
    torch.manual_seed(SEED)
    model = make_model()
    model = trained(model, "digits", [Path(__file__)], lambda: train(model, x_train, y_train), retrain)
    rng = np.random.default_rng(SEED)
    calibration = x_train[rng.choice(len(x_train), size=min(256, len(x_train)), replace=False)]
    return Example("digits", model, calibration, x_test, y_test, x_train, y_train)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())
