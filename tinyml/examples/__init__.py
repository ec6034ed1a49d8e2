"""Bundled examples: a model, its data and a training loop, ready for `tinyml compile --example NAME`."""

from __future__ import annotations

from tinyml.examples.base import Example, get_example, list_examples

__all__ = ["Example", "get_example", "list_examples"]
