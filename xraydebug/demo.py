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

from rich.console import Console

from xraydebug.audit.clean import CleanConfig, clean_dataset
from xraydebug.audit.retrain import RetrainConfig, print_before_after, retrain
from xraydebug.audit.scan import ScanConfig, scan
from xraydebug.data.inspect import inspect_dataset, summarize_counts
from xraydebug.data.synth import SynthConfig, synthesize
from xraydebug.models.evaluate import evaluate, print_metrics
from xraydebug.models.train import TrainConfig, checkpoint_is_current, train
from xraydebug.progress import progress_bar, tracked


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``quick`` is the about-3-minute version the test suite runs.

    Films are 256 px (the ``small`` model's input size). Text is found by ``text_detector``
    (``auto``: native-resolution proposals verified on zoomed crops), on every film.
    """

    n_train: int = 480
    n_test: int = 240
    size: int = 256
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 16
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

    def train_config(self, device: str) -> TrainConfig:
        return TrainConfig(
            arch="small",
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            patience=10,
            seed=self.seed,
            device=device,
        )


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
    out = Path(out)
    config = config or DemoConfig.create(quick, seed)
    data, clean_dir = out / "data", out / "data-clean"
    scan_dir, retrain_dir = out / "scan", out / "retrain"
    model_path = out / "models" / "covidnet.pt"
    start = time.perf_counter()

    console.rule("1/8 synthetic COVIDx-style data with a planted text shortcut")
    if _synth(data, config, console):  # new data: nothing downstream is valid any more
        for stale in (scan_dir, clean_dir, retrain_dir, out / "models"):
            shutil.rmtree(stale, ignore_errors=True)
    console.rule("2/8 inspect")
    inspected = inspect_dataset(data, out / "inspect.csv")
    console.print(summarize_counts(inspected.table).to_string())

    console.rule("3/8 train (small CNN; best epoch on a patient-grouped validation split)")
    train_config = config.train_config(device)
    if checkpoint_is_current(model_path, data, train_config):
        console.print(f"reusing {model_path} (same data and training settings)")
    else:
        train(data, model_path, train_config, console=console)
        for stale in (scan_dir, retrain_dir):
            shutil.rmtree(stale, ignore_errors=True)

    console.rule("4/8 evaluate on the test split (text independent of the class)")
    evaluation = evaluate(
        data, model_path, "test", out / "eval", device=device, n_boot=config.n_boot
    )
    print_metrics(evaluation.metrics, console, "shortcut model on the decorrelated test set")

    console.rule("5/8 scan: iGOS++ saliency + text boxes + shortcut flags (test sample)")
    with progress_bar(console) as bar:
        scanned = scan(
            data,
            model_path,
            scan_dir,
            ScanConfig(
                mask_size=config.mask_size,
                iterations=config.iterations,
                ig_steps=config.ig_steps,
                split="test",
                limit=config.scan_images,
                text_detector=config.text_detector,
                text_precision="auto",
                device=device,
                seed=config.seed,
            ),
            progress=tracked(bar, "explaining"),
        )
    ok = scanned.table[scanned.table["status"] == "ok"]
    flagged = ok[ok["flagged"] == "true"]
    flagged_with_text = int((flagged["n_boxes"].astype(int) > 0).sum())
    console.print(
        f"flagged {len(flagged)} of {len(ok)} scanned test images as relying on text "
        f"({flagged_with_text} carry text); explained class of the flagged ones: "
        f"{flagged['target'].value_counts().to_dict()}"
    )

    console.rule(
        "6/8 clean: remove the text (detected boxes + Telea inpainting) into a new dataset"
    )
    with progress_bar(console) as bar:
        cleaned = clean_dataset(
            data,
            clean_dir,
            CleanConfig(
                scan=str(scan_dir),
                detector=config.text_detector,
                device=device,
                precision="auto",
            ),
            progress=tracked(bar, "cleaning"),
        )
    console.print(
        f"{cleaned.n_changed} images inpainted, {cleaned.n_copied} copied unchanged into "
        f"{clean_dir}"
    )

    console.rule("7/8 retrain the same recipe on the cleaned data; before/after")
    result = retrain(
        clean_dir,
        model_path,
        test_data=data,
        out=out / "models" / "covidnet-clean.pt",
        run_dir=retrain_dir,
        config=RetrainConfig(n_boot=config.n_boot, device=device),
        console=console,
    )
    print_before_after(result, console, sentence=False)  # the closing lines say it

    console.rule("8/8 audit report")
    original = result.comparison["test_sets"]["original"]
    covid = "COVID-19"
    seconds = time.perf_counter() - start
    summary = {
        "seconds": round(seconds, 1),
        "data": str(data),
        "model": str(model_path),
        "clean_data": str(clean_dir),
        "retrained_model": str(result.checkpoint),
        "report": str(result.report_path),
        "test_macro_f1": evaluation.metrics["macro_f1"],
        "scan_images": len(ok),
        "flagged": len(flagged),
        "flagged_with_text": flagged_with_text,
        "flagged_explained_covid": int((flagged["target"] == covid).sum()),
        "deletion_auc": float(ok["deletion_auc"].astype(float).mean()),
        "insertion_auc": float(ok["insertion_auc"].astype(float).mean()),
        "inpainted": cleaned.n_changed,
        "before_after": {
            side: {
                "covid_precision": original[side]["per_class"][covid]["precision"],
                "covid_recall": original[side]["per_class"][covid]["recall"],
                "macro_f1": original[side]["macro_f1"],
            }
            for side in ("before", "after")
        },
    }
    before, after = summary["before_after"]["before"], summary["before_after"]["after"]
    console.print(
        f"Demo finished in {seconds:.0f} s. On the test set where text is independent of the "
        f"class, COVID-19 precision went {before['covid_precision']:.2f} -> "
        f"{after['covid_precision']:.2f} and recall {before['covid_recall']:.2f} -> "
        f"{after['covid_recall']:.2f} after cleaning (macro-F1 {before['macro_f1']:.2f} -> "
        f"{after['macro_f1']:.2f}). Audit report: [bold]{result.report_path}[/]"
    )
    check = original.get("shortcut_check")
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
    warnings = result.comparison.get("warnings", [])
    for warning in warnings:
        if not sensitivity or warning != sensitivity["sentence"]:  # said just above
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(
        "One training seed is noisy: `xraydebug retrain ... --repeats 3` gives the spread "
        "over seeds."
    )
    return summary
