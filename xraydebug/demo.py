"""``xraydebug demo``: the whole loop on synthetic data, one command, sized for 2 CPU cores.

synth -> inspect -> train -> evaluate (test split, where text is independent of the class) ->
scan (iGOS++ + text detection + flags on a sample of test images) -> clean (detected boxes + Telea
inpainting over every image, into a new dataset) -> retrain (same recipe) with before/after
precision and recall -> the HTML audit report. Reruns reuse what is finished.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from xraydebug.audit.report import build_report
from xraydebug.audit.retrain import RetrainConfig, RetrainResult, print_before_after, retrain
from xraydebug.data.inspect import inspect_dataset, summarize_counts
from xraydebug.data.synth import SynthConfig, synthesize
from xraydebug.models.evaluate import EvalResult, EvaluateConfig, evaluate, print_metrics
from xraydebug.models.train import TrainConfig, checkpoint_is_current, train
from xraydebug.progress import progress_bar, tracked
from xraydebug.stages.clean import CleanConfig, CleanResult, clean_dataset
from xraydebug.stages.scan import ScanConfig, scan

_COVID = "COVID-19"  # the class the planted shortcut pushes toward


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``quick`` is the about-3-minute version the test suite runs.

    Films are 256 px (the ``small`` model's input size). Text is found by ``text_detector``
    (``auto``: native-resolution proposals verified on zoomed crops), on every film.
    """

    n_train: int = 480
    n_test: int = 240
    size: int = 256
    epochs: int | None = None  # None: the small recipe's
    scan_images: int = 16
    mask_size: int = 28
    iterations: int | None = None  # None: the scan's default preset's
    ig_steps: int | None = None
    text_detector: str = "auto"
    n_boot: int = 1000
    seed: int = 0

    @classmethod
    def create(cls, quick: bool, seed: int = 0) -> DemoConfig:
        if quick:
            return cls(
                n_train=120,
                n_test=60,
                epochs=12,
                scan_images=6,
                iterations=5,
                n_boot=200,
                seed=seed,
            )
        return cls(seed=seed)

    def scan_config(self, device: str) -> ScanConfig:
        """The scan of a sample of the test split, with bf16 text networks where native."""
        options = {
            "mask_size": self.mask_size,
            "iterations": self.iterations,
            "ig_steps": self.ig_steps,
            "seed": self.seed,
            "split": "test",
            "limit": self.scan_images,
            "detector": self.text_detector,
            "precision": "auto",
            "device": device,
        }
        return ScanConfig.from_options(options)

    def clean_config(self, scan_dir: str, device: str) -> CleanConfig:
        """Cleaning every film with the scan's boxes (detection where it has none)."""
        options = {"scan": scan_dir, "detector": self.text_detector, "precision": "auto"}
        return CleanConfig.from_options({**options, "device": device})

    def train_config(self, device: str) -> TrainConfig:
        return TrainConfig(arch="small", epochs=self.epochs, seed=self.seed, device=device)


def _synth(data: Path, config: DemoConfig, console: Console) -> bool:
    """Write the synthetic set unless the same one is there; True if it was (re)written."""
    synth_config = SynthConfig(
        n_train=config.n_train, n_test=config.n_test, size=config.size, seed=config.seed
    )
    previous = data / "ground_truth.json"
    if previous.exists() and json.loads(previous.read_text()).get("_config") == json.loads(
        json.dumps(asdict(synth_config))
    ):
        console.print(f"reusing {data}")
        return False
    synthesize(data, synth_config, overwrite=True)
    return True


def run_demo(
    out: Path | str = "demo-run",
    *,
    quick: bool = False,
    console: Console | None = None,
    seed: int = 0,
    device: str = "auto",
    config: DemoConfig | None = None,
) -> dict[str, Any]:
    """Run the whole loop on fresh synthetic data under ``out``; return a summary.

    ``config`` overrides the sizes chosen by ``quick``. Reruns reuse the synthetic data, the
    models, a finished scan and a finished cleaning instead of redoing them.
    """
    console = console or Console()
    paths = _DemoPaths.under(Path(out))
    config = config or DemoConfig.create(quick, seed)
    start = time.perf_counter()
    _step_synth(paths, config, console=console)
    _step_inspect(paths, console=console)
    _step_train(paths, config, device=device, console=console)
    evaluation = _step_evaluate(paths, config, device=device, console=console)
    scanned = _step_scan(paths, config, device=device, console=console)
    cleaned = _step_clean(paths, config, device=device, console=console)
    result = _step_retrain(paths, config, device=device, console=console)
    console.rule("8/8 audit report")
    seconds = time.perf_counter() - start
    summary = _summary(paths, evaluation, scanned, cleaned, result, seconds=seconds)
    _print_closing(summary, result, seconds=seconds, console=console)
    return summary


@dataclass(frozen=True)
class _DemoPaths:
    """Where each step of the demo reads and writes, under the run folder ``out``."""

    out: Path
    data: Path
    clean_dir: Path
    scan_dir: Path
    retrain_dir: Path
    model_path: Path

    @classmethod
    def under(cls, out: Path) -> _DemoPaths:
        return cls(
            out=out,
            data=out / "data",
            clean_dir=out / "data-clean",
            scan_dir=out / "scan",
            retrain_dir=out / "retrain",
            model_path=out / "models" / "covidnet.pt",
        )


@dataclass(frozen=True)
class _ScanCounts:
    """The scanned test films (status ok), the flagged ones and how many of those carry text."""

    ok: pd.DataFrame
    flagged: pd.DataFrame
    flagged_with_text: int


def _step_synth(paths: _DemoPaths, config: DemoConfig, *, console: Console) -> None:
    """1/8: the synthetic data; new data makes everything downstream stale."""
    console.rule("1/8 synthetic COVIDx-style data with a planted text shortcut")
    if _synth(paths.data, config, console):  # new data: nothing downstream is valid any more
        for stale in (paths.scan_dir, paths.clean_dir, paths.retrain_dir, paths.out / "models"):
            shutil.rmtree(stale, ignore_errors=True)


def _step_inspect(paths: _DemoPaths, *, console: Console) -> None:
    """2/8: the image counts per split and class."""
    console.rule("2/8 inspect")
    inspected = inspect_dataset(paths.data, paths.out / "inspect.csv")
    console.print(summarize_counts(inspected.table).to_string())


def _step_train(paths: _DemoPaths, config: DemoConfig, *, device: str, console: Console) -> None:
    """3/8: the shortcut model (reused if current); a new one makes scan and retrain stale."""
    console.rule("3/8 train (small CNN; best epoch on a patient-grouped validation split)")
    train_config = config.train_config(device)
    if checkpoint_is_current(paths.model_path, paths.data, train_config):
        console.print(f"reusing {paths.model_path} (same data and training settings)")
    else:
        train(paths.data, paths.model_path, config=train_config, console=console)
        for stale in (paths.scan_dir, paths.retrain_dir):
            shutil.rmtree(stale, ignore_errors=True)


def _step_evaluate(
    paths: _DemoPaths, config: DemoConfig, *, device: str, console: Console
) -> EvalResult:
    """4/8: the model's metrics on the test split."""
    console.rule("4/8 evaluate on the test split (text independent of the class)")
    evaluation = evaluate(
        paths.data,
        paths.model_path,
        "test",
        paths.out / "eval",
        config=EvaluateConfig(device=device, n_boot=config.n_boot),
    )
    print_metrics(evaluation.metrics, console, "shortcut model on the decorrelated test set")
    return evaluation


def _step_scan(
    paths: _DemoPaths, config: DemoConfig, *, device: str, console: Console
) -> _ScanCounts:
    """5/8: scan a sample of the test split, its report, and the flag counts."""
    console.rule("5/8 scan: iGOS++ saliency + text boxes + shortcut flags (test sample)")
    with progress_bar(console) as bar:
        scanned = scan(
            paths.data,
            paths.model_path,
            paths.scan_dir,
            config=config.scan_config(device),
            progress=tracked(bar, "explaining"),
        )
    build_report(paths.scan_dir)
    ok = scanned.table[scanned.table["status"] == "ok"]
    flagged = ok[ok["flagged"] == "true"]
    flagged_with_text = int((flagged["n_boxes"].astype(int) > 0).sum())
    console.print(
        f"flagged {len(flagged)} of {len(ok)} scanned test images as relying on text "
        f"({flagged_with_text} carry text); explained class of the flagged ones: "
        f"{flagged['target'].value_counts().to_dict()}"
    )
    return _ScanCounts(ok, flagged, flagged_with_text)


def _step_clean(
    paths: _DemoPaths, config: DemoConfig, *, device: str, console: Console
) -> CleanResult:
    """6/8: remove the text from every film into a new dataset, and its report."""
    console.rule(
        "6/8 clean: remove the text (detected boxes + Telea inpainting) into a new dataset"
    )
    with progress_bar(console) as bar:
        cleaned = clean_dataset(
            paths.data,
            paths.clean_dir,
            config=config.clean_config(str(paths.scan_dir), device),
            progress=tracked(bar, "cleaning"),
        )
    build_report(paths.clean_dir)
    console.print(
        f"{cleaned.n_changed} images inpainted, {cleaned.n_copied} copied unchanged into "
        f"{paths.clean_dir}"
    )
    return cleaned


def _step_retrain(
    paths: _DemoPaths, config: DemoConfig, *, device: str, console: Console
) -> RetrainResult:
    """7/8: retrain on the cleaned data and print the before/after tables."""
    console.rule("7/8 retrain the same recipe on the cleaned data; before/after")
    result = retrain(
        paths.clean_dir,
        paths.model_path,
        test_data=paths.data,
        out=paths.out / "models" / "covidnet-clean.pt",
        run_dir=paths.retrain_dir,
        config=RetrainConfig(n_boot=config.n_boot, device=device),
        console=console,
    )
    print_before_after(result, console, sentence=False)  # the closing lines say it
    return result


def _summary(
    paths: _DemoPaths,
    evaluation: EvalResult,
    scanned: _ScanCounts,
    cleaned: CleanResult,
    result: RetrainResult,
    *,
    seconds: float,
) -> dict[str, Any]:
    """The demo's summary: where everything is and the headline numbers of each step."""
    original = result.comparison["test_sets"]["original"]
    ok, flagged = scanned.ok, scanned.flagged
    return {
        "seconds": round(seconds, 1),
        "data": str(paths.data),
        "model": str(paths.model_path),
        "clean_data": str(paths.clean_dir),
        "retrained_model": str(result.checkpoint),
        "report": str(result.report_path),
        "test_macro_f1": evaluation.metrics["macro_f1"],
        "scan_images": len(ok),
        "flagged": len(flagged),
        "flagged_with_text": scanned.flagged_with_text,
        "flagged_explained_covid": int((flagged["target"] == _COVID).sum()),
        "deletion_auc": float(ok["deletion_auc"].astype(float).mean()),
        "insertion_auc": float(ok["insertion_auc"].astype(float).mean()),
        "inpainted": cleaned.n_changed,
        "before_after": {
            side: {
                "covid_precision": original[side]["per_class"][_COVID]["precision"],
                "covid_recall": original[side]["per_class"][_COVID]["recall"],
                "macro_f1": original[side]["macro_f1"],
            }
            for side in ("before", "after")
        },
    }


def _print_closing(
    summary: dict[str, Any], result: RetrainResult, *, seconds: float, console: Console
) -> None:
    """The closing lines: the before/after headline, the shortcut check, the text
    sensitivity (both also added to ``summary``) and the remaining warnings."""
    before, after = summary["before_after"]["before"], summary["before_after"]["after"]
    console.print(
        f"Demo finished in {seconds:.0f} s. On the test set where text is independent of the "
        f"class, COVID-19 precision went {before['covid_precision']:.2f} -> "
        f"{after['covid_precision']:.2f} and recall {before['covid_recall']:.2f} -> "
        f"{after['covid_recall']:.2f} after cleaning (macro-F1 {before['macro_f1']:.2f} -> "
        f"{after['macro_f1']:.2f}). Audit report: [bold]{result.report_path}[/]"
    )
    check = result.comparison["test_sets"]["original"].get("shortcut_check")
    if check and check.get("gone") is not None:
        summary["shortcut_gone"] = check["gone"]
        colour = "green" if check["gone"] else "yellow"
        console.print(f"[{colour}]Shortcut check (original test set): {check['sentence']}.[/]")
    sensitivity = result.comparison.get("text_sensitivity")
    if sensitivity:
        summary["text_sensitivity"] = {
            side: {
                "class": sensitivity[side]["worst_class"],
                "sensitivity": sensitivity[side]["into"][sensitivity[side]["worst_class"]][
                    "sensitivity"
                ],
                "reacts": sensitivity[side]["reacts"],
            }
            for side in ("before", "after")
        }
        colour = "yellow" if sensitivity["after"]["reacts"] else "green"
        console.print(f"[{colour}]Text sensitivity: {sensitivity['sentence']}[/]")
    for warning in result.comparison.get("warnings", []):
        if not sensitivity or warning != sensitivity["sentence"]:  # said just above
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(
        "One training seed is noisy: `xraydebug retrain ... --repeats 3` gives the spread "
        "over seeds."
    )
