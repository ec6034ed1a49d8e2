"""LeNet-300-100's shape for scikit-learn's 8x8 digits: a 64-300-100-10 fully connected network.

The model Deep Compression (Han, Mao and Dally) prunes 40x: `tinyml compile --example mlp` with
prune, quantize-int8, share-weights and huffman shows it on the device (`bench/compression.py`).
Same data, split and training loop as the digits CNN; inputs are the 64 pixels as a flat vector.
The trained weights are cached (keyed by this file and `digits.py`), so a second run skips training.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tinyml.examples import digits
from tinyml.examples.base import Example, trained

EPOCHS = 40


def make_model() -> nn.Module:
    """The untrained 64-300-100-10 MLP; layers `fc1`, `fc2`, `fc3`."""
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(64, 300),
            relu1=nn.ReLU(),
            fc2=nn.Linear(300, 100),
            relu2=nn.ReLU(),
            fc3=nn.Linear(100, 10),
        )
    )


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): the digits split, images flattened to (N, 64) float32 in [0, 1]."""
    x_train, y_train, x_test, y_test = digits.load_data()
    return x_train.reshape(len(x_train), -1), y_train, x_test.reshape(len(x_test), -1), y_test


def load(retrain: bool = False) -> Example:
    """The trained MLP example (trained on first use, then cached)."""
    x_train, y_train, x_test, y_test = load_data()
    torch.manual_seed(digits.SEED)
    model = make_model()
    model = trained(
        model, "mlp", [Path(__file__), Path(digits.__file__)],
        lambda: digits.train(model, x_train, y_train, EPOCHS, label="training digits MLP"), retrain,
    )  # fmt: skip
    rng = np.random.default_rng(digits.SEED)
    calibration = x_train[rng.choice(len(x_train), size=min(256, len(x_train)), replace=False)]
    return Example("mlp", model, calibration, x_test, y_test, x_train, y_train)
