"""Progress bars for long work (training, calibration, search), quiet when output is not a terminal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """`with progress_bar("calibrating", total=n) as advance: advance(1)`; drawn on stderr.

    ``advance(n, note="...")`` also shows `note` after the bar (e.g. the best result so far).
    """
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
    )  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, note="")

        def advance(n: int = 1, note: str | None = None) -> None:
            progress.update(task, advance=n, **({} if note is None else {"note": note}))

        yield advance
