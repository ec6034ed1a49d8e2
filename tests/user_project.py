"""A user's project folder as tests need it: a model file (optionally with a helper module), weights, data, a recipe."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import numpy as np
import torch

MODEL_FILE = """
import torch
from torch import nn


def make_model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )
"""

# a model in two files, as users write them: the blocks in one module, the network in another
HELPER_FILE = """
from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))
"""

TWO_FILE_MODEL = """
from torch import nn

from blocks import ConvBlock


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(ConvBlock(1, 4), nn.MaxPool2d(2), ConvBlock(4, 8))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 3))

    def forward(self, x):
        return self.classifier(self.features(x))


def make_model():
    return Net()
"""

RECIPE = """
[model]
factory = "net.py:make_model"
weights = "net.pt"

[data]
calibration = "calib.npz"
validation = "val.npz"

[[techniques]]
name = "quantize-int8"
"""


def write_user_project(folder: Path, two_files: bool = False, recipe: bool = True) -> Path:
    """Fill `folder` with net.py (and blocks.py), trained-looking weights net.pt, calib.npz, val.npz, tinyml.toml."""
    folder.mkdir(parents=True, exist_ok=True)
    source = TWO_FILE_MODEL if two_files else MODEL_FILE
    (folder / "net.py").write_text(source)
    if two_files:
        (folder / "blocks.py").write_text(HELPER_FILE)
    namespace: dict = {}
    if two_files:
        exec(HELPER_FILE, namespace)
        source = source.replace("from blocks import ConvBlock", "")
    exec(source, namespace)
    torch.manual_seed(0)
    model = namespace["make_model"]()
    torch.save(model.state_dict(), folder / "net.pt")
    rng = np.random.default_rng(0)
    np.savez(folder / "calib.npz", x=rng.normal(size=(64, 1, 8, 8)).astype(np.float32))
    np.savez(folder / "val.npz", x=rng.normal(size=(20, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 3, 20))
    if recipe:
        (folder / "tinyml.toml").write_text(textwrap.dedent(RECIPE))
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every file, link and folder under `folder` with a digest of its content, to show nothing changed."""
    result = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            result[rel] = "link:" + str(path.readlink())
        elif path.is_dir():
            result[rel] = "dir"
        else:
            result[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result
