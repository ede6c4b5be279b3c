"""``xraydebug demo``: the whole loop on synthetic data, one command."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from xraydebug.data.synth import SynthConfig, synthesize

from xraydebug.data.inspect import inspect_dataset, summarize_counts


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``quick`` is the one the test suite runs."""

    n_train: int
    n_test: int
    size: int

    @classmethod
    def create(cls, quick: bool) -> DemoConfig:
        return cls(n_train=120, n_test=60, size=256) if quick else cls(600, 300, 512)


def run_demo(out: Path | str = "demo-run", quick: bool = False, console: Console | None = None):
    """Synthesise data under ``out/data`` and run every stage that exists on it."""
    console = console or Console()
    out = Path(out)
    config = DemoConfig.create(quick)
    data = out / "data"
    start = time.perf_counter()
    if data.exists():
        shutil.rmtree(data)
    console.rule("1. synthetic COVIDx-style data with a planted text shortcut")
    synthesize(data, SynthConfig(n_train=config.n_train, n_test=config.n_test, size=config.size))
    console.rule("2. inspect")
    result = inspect_dataset(data, out / "inspect.csv")
    console.print(summarize_counts(result.table).to_string())
    console.print(
        f"Demo finished in {time.perf_counter() - start:.0f} s. Data: {data}; "
        f"inspection: {result.csv_path}."
    )
    return result
