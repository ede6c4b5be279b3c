"""Rich progress bars shared by the CLI and the demo."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(console: Console) -> Progress:
    """A rich progress bar with count, images/s, elapsed time and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def tracked(progress: Progress, description: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that drives a new task of ``progress``."""
    task = progress.add_task(description, total=None, rate="")

    def update(done: int, total: int) -> None:
        elapsed = progress.tasks[task].elapsed or 0.0
        rate = f"{done / elapsed:.1f} img/s" if elapsed > 0 else ""
        progress.update(task, completed=done, total=total, rate=rate)

    return update
