"""The ``xraydebug`` command line: a thin Typer layer over the library functions.

Each command parses its options, calls one library function and prints a short summary. Usage
and data errors print one red line and exit 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from xraydebug.errors import XrayDebugError

app = typer.Typer(
    name="xraydebug",
    help="Find and fix shortcut bugs (burned-in text) in chest X-ray classifiers.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold patient identifiers
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)

DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed (results are deterministic per seed).")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]
BatchOpt = Annotated[int | None, typer.Option(help="Images per batch (default: per command).")]


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one clear line and exit code 1 (traceback with ``--debug``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (XrayDebugError, ValueError, FileNotFoundError, NotImplementedError) as exc:
            if kwargs.get("debug"):
                raise
            raise _fail(str(exc)) from None

    return wrapper


def progress_bar() -> Progress:
    """A rich progress bar with count, rate-friendly ETA and elapsed time."""
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


def _tracked(progress: Progress, description: str) -> Callable[[int, int], None]:
    task = progress.add_task(description, total=None, rate="")

    def update(done: int, total: int) -> None:
        elapsed = progress.tasks[task].elapsed or 0.0
        rate = f"{done / elapsed:.1f} img/s" if elapsed > 0 else ""
        progress.update(task, completed=done, total=total, rate=rate)

    return update


@app.command()
@handle_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (must be new or empty).")],
    n_train: Annotated[int, typer.Option(help="Training images.")] = 600,
    n_test: Annotated[int, typer.Option(help="Test images.")] = 300,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 512,
    seed: SeedOpt = 0,
    shortcut: Annotated[
        float, typer.Option(help="Train P(text | COVID-19); P(text | other) = 1 - shortcut.")
    ] = 0.9,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty OUT.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Write a synthetic COVIDx-style set with a planted text shortcut.

    Example: [bold]xraydebug synth demo-data/ --n-train 600 --n-test 300[/]
    """
    from xraydebug.data.synth import SynthConfig, synthesize

    config = SynthConfig(n_train=n_train, n_test=n_test, size=size, seed=seed, shortcut=shortcut)
    with progress_bar() as progress:
        summary = synthesize(out, config, progress=_tracked(progress, "synth"), overwrite=overwrite)
    table = Table(title="Synthetic images (with burned-in text)")
    table.add_column("split")
    for label in config.classes:
        table.add_column(label, justify="right")
    for split, per_label in summary.counts.items():
        cells = [
            f"{per_label.get(c, {}).get('n', 0)} ({per_label.get(c, {}).get('with_text', 0)})"
            for c in config.classes
        ]
        table.add_row(split, *cells)
    console.print(table)
    console.print(
        f"Wrote {n_train + n_test} images to [bold]{out}[/] in {summary.seconds:.1f} s: "
        f"label files {out}/train.txt and {out}/test.txt, ground truth {out}/ground_truth.json. "
        f"In train, text marks {shortcut:.0%} of COVID-19 images and {1 - shortcut:.0%} of the "
        "others; in test it is independent of the class."
    )


@app.command("inspect")
@handle_errors
def inspect_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path, typer.Option(help="CSV with one row per image.")] = Path("inspect.csv"),
    manifest: Annotated[
        Path | None, typer.Option(help="CSV manifest: path,label[,split,patient_id,source].")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Detect the layout, read every image and list counts and problems.

    Example: [bold]xraydebug inspect covidx/ --out inspect.csv[/]
    """
    from xraydebug.data.inspect import inspect_dataset, summarize_counts

    with progress_bar() as progress:
        result = inspect_dataset(data, out, manifest, progress=_tracked(progress, "reading"))
    table = result.table
    ok = table[table["status"] != "error"]
    counts = summarize_counts(table)
    grid = Table(title=f"{data} ({result.index.layout} layout): readable images")
    grid.add_column("split")
    for column in counts.columns:
        grid.add_column(str(column), justify="right")
    for split, row in counts.iterrows():
        grid.add_row(str(split), *(str(v) for v in row))
    console.print(grid)
    if ok["source"].astype(bool).any():
        by_source = ok.groupby(["split", "source", "label"]).size()
        src = Table(title="Images per split x source x class")
        for name in ("split", "source", "class", "n"):
            src.add_column(name)
        for (split, source, label), n in by_source.items():
            src.add_row(split, source, label, str(n))
        console.print(src)
    if not ok.empty:
        patients = ok["patient_id"].replace("", None).dropna().nunique()
        sizes = Counter(f"{h}x{w}" for h, w in zip(ok["height"], ok["width"], strict=True))
        console.print(
            f"patients: {patients}; formats: {dict(Counter(ok['format'].dropna()))}; "
            f"bit depths: {dict(Counter(int(b) for b in ok['bit_depth'].dropna()))}; "
            f"sizes (most common): {dict(sizes.most_common(3))}"
        )
    problems = result.problems
    for _, row in problems.iterrows():
        style = "red" if row["status"] == "error" else "yellow"
        console.print(
            f"[{style}]{row['status']}[/] {row['path']}: {row['message']}", highlight=False
        )
    for message in result.dataset_problems:
        console.print(f"[yellow]warning[/] {message}", highlight=False)
    n_err = int((table["status"] == "error").sum())
    n_warn = int((table["status"] == "warning").sum())
    console.print(
        f"{result.n_ok} readable image(s), {n_err} error(s), {n_warn} warning(s). "
        f"Per-image results: [bold]{result.csv_path}[/]."
    )
    if result.n_ok == 0:
        raise _fail(f"{data}: no readable images")


def _not_implemented(name: str) -> None:
    raise _fail(f"'{name}' is not implemented yet")


@app.command()
def train(debug: DebugOpt = False) -> None:
    """Train a COVID-Net-style classifier (not implemented yet)."""
    _not_implemented("train")


@app.command()
def evaluate(debug: DebugOpt = False) -> None:
    """Evaluate a checkpoint: per-class, per-source metrics with CIs (not implemented yet)."""
    _not_implemented("evaluate")


@app.command()
def scan(debug: DebugOpt = False) -> None:
    """Explain every image with iGOS++ and flag reliance on text (not implemented yet)."""
    _not_implemented("scan")


@app.command()
def clean(debug: DebugOpt = False) -> None:
    """Inpaint detected text into a new, cleaned dataset (not implemented yet)."""
    _not_implemented("clean")


@app.command()
def retrain(debug: DebugOpt = False) -> None:
    """Retrain on cleaned data and compare before/after (not implemented yet)."""
    _not_implemented("retrain")


@app.command()
def report(debug: DebugOpt = False) -> None:
    """Rebuild the HTML audit report of a run folder (not implemented yet)."""
    _not_implemented("report")


@app.command()
@handle_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path(
        "demo-run"
    ),
    quick: Annotated[bool, typer.Option(help="Smaller data, about 3 minutes.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Run the whole loop on synthetic data (grows as the commands land)."""
    from xraydebug.demo import run_demo

    run_demo(out=out, quick=quick, console=console)


def main() -> None:
    app()
