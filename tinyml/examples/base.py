"""What a bundled example provides, and how examples are looked up by name."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


def trained(model: torch.nn.Module, name: str, sources: list[Path], train: Callable[[], None],
            retrain: bool = False) -> torch.nn.Module:
    """`model` with the weights cached for `name`, or trained by `train()` and cached.

    The cache key is the content of `sources` (the files that define the model and its training)
    and the torch version, so editing either retrains once.
    """
    from tinyml.host import cache_dir

    content = b"".join(path.read_bytes() for path in sources) + torch.__version__.encode()
    cache = cache_dir().parent / "examples" / f"{name}-{hashlib.sha256(content).hexdigest()[:16]}.pt"
    if cache.exists() and not retrain:
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval()
    train()
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".tmp")
    torch.save(model.state_dict(), partial)
    partial.replace(cache)
    return model


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
