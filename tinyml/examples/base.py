"""What a bundled example provides, and how examples are looked up by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tinyml.errors import TinymlError


@dataclass
class Example:
    """A trained float model with calibration and held-out validation data (NCHW float32, int labels)."""

    name: str
    model: torch.nn.Module
    calibration: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray

    @property
    def example_input(self) -> torch.Tensor:
        return torch.from_numpy(self.calibration[:1])


def _registry() -> dict[str, Callable[..., Example]]:
    from tinyml.examples import digits, mlp

    return {"digits": digits.load, "mlp": mlp.load}


def list_examples() -> list[str]:
    return sorted(_registry())


def get_example(name: str, **kwargs) -> Example:
    """Build (train if needed) the example called `name`."""
    registry = _registry()
    if name not in registry:
        raise TinymlError(f"Unknown example '{name}'. Available examples: {', '.join(sorted(registry))}.")
    return registry[name](**kwargs)
