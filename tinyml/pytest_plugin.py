"""A pytest plugin (loaded through the `pytest11` entry point) for testing compiled models.

    def test_compiled_model_agrees_with_labels(tinyml_model):
        model = tinyml_model("build/digits")
        data = np.load("build/digits/validation.npz")  # held-out digits, kept by the build
        predictions = model(model.quantize(nchw_to_graph(data["x"]))).argmax(axis=1)
        assert (predictions == data["y"]).mean() > 0.9

The `tinyml_model` fixture returns a loader: give it a build folder made by `tinyml compile` and
it returns the model's generated C, compiled for the host and callable on an int8 batch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tinyml.host import HostModel


@pytest.fixture
def tinyml_model() -> Callable[[str | Path], HostModel]:
    """A loader: ``tinyml_model(build_dir)`` -> the compiled model, run through its C on the host."""
    from tinyml.host import load_model

    def load(build_dir: str | Path) -> HostModel:
        return load_model(Path(build_dir))

    return load
