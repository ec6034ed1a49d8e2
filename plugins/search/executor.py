"""Where trials run: one interface, local processes by default or Ray tasks on a cluster.

`Executor.map` runs `function` on each task and returns the results in the tasks' order, so a
search asks, runs and tells in the same order whichever executor runs it, and the same seed gives
the same trials.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

from tinyml.errors import TinymlError


class Executor(Protocol):
    """Runs trials; `close` frees the workers."""

    name: str

    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """`workers` processes on this machine (spawned, so the search's own threads are not copied)."""

    name = "local"

    def __init__(self, workers: int) -> None:
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
        return list(self._pool.map(function, tasks))

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class RayExecutor:
    """Each trial a Ray task of one CPU, on the cluster `ray.init()` finds (or a local one it starts)."""

    name = "ray"

    def __init__(self, workers: int) -> None:
        try:
            import ray
        except ImportError as err:
            raise TinymlError(
                "The search's executor is 'ray' but Ray is not installed: pip install 'tinyml[ray]', or use "
                "executor = 'local'."
            ) from err
        self._ray = ray
        if not ray.is_initialized():
            ray.init(num_cpus=None if ray.util.client.ray.is_connected() else workers, include_dashboard=False,
                     log_to_driver=False)  # fmt: skip
            self._started = True
        else:
            self._started = False

    def map(self, function: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
        remote = self._ray.remote(num_cpus=1)(function)
        return self._ray.get([remote.remote(task) for task in tasks])

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_executor(name: str, workers: int) -> Executor:
    """The executor called `name` ("local" or "ray"); the name is checked with the settings."""
    if name == "ray":
        return RayExecutor(workers)
    if name == "local":
        return LocalExecutor(workers)
    raise TinymlError(f"Unknown executor {name!r}: use 'local' or 'ray'.")
