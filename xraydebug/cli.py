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
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from xraydebug.errors import XrayDebugError
from xraydebug.progress import progress_bar as _progress_bar
from xraydebug.progress import tracked

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
PrecisionOpt = Annotated[
    str, typer.Option(help="CRAFT precision: fp32 | bf16 | auto (bf16 where native; faster).")
]
SeedOpt = Annotated[int, typer.Option(help="Random seed (results are deterministic per seed).")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")]


def _detector_help() -> str:
    from xraydebug.text.detect import DETECTORS

    return "Text detector: " + "; ".join(f"{k} ({v})" for k, v in DETECTORS.items()) + "."


DetectorOpt = Annotated[str, typer.Option(help=_detector_help())]
BatchOpt = Annotated[int | None, typer.Option(help="Images per batch (default: per command).")]
ExecutorOpt = Annotated[
    str,
    typer.Option(
        help="local (this process) | ray (Ray actors, one model/detector each: a local Ray "
        "with this machine's cores, or the cluster of --ray-address; pip install "
        "'xraydebug[ray]')."
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(help="Join this Ray cluster: auto | HOST:6379 (implies --executor ray)."),
]
ActorsOpt = Annotated[
    int | None,
    typer.Option(help="Ray actors [default: one per GPU, else one per CPU / --threads-per-actor]."),
]
ThreadsPerActorOpt = Annotated[
    int | None, typer.Option(help="Torch threads (Ray CPUs) per actor [default: 1 on CPU].")
]


def _executor(kind: str, address: str | None, actors: int | None, threads: int | None) -> Any:
    """The ExecutorConfig of the --executor options (--ray-address or --actors imply ray)."""
    from xraydebug.executor import ExecutorConfig, import_ray

    if address or actors or threads:
        kind = "ray"
    config = ExecutorConfig(kind=kind, address=address, actors=actors, threads=threads)
    if config.kind == "ray":
        import_ray()  # without the extra: one line now, before any work
    return config


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def check_paths(
    folders: dict[str, Path | None] | None = None,
    files: dict[str, Path | None] | None = None,
    outputs: dict[str, Path | None] | None = None,
) -> None:
    """Check every path argument before any work or progress output: ``folders`` and
    ``files`` must exist as such, ``outputs`` (folders to write) must not be files. All
    problems are reported together, one line each, naming the argument."""
    problems = []
    for name, path in (folders or {}).items():
        if path is not None and not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            problems.append(f"{name} {path}: {what}")
    for name, path in (files or {}).items():
        if path is not None and not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            problems.append(f"{name} {path}: {what}")
    for name, path in (outputs or {}).items():
        if path is not None and path.exists() and not path.is_dir():
            problems.append(f"{name} {path}: is a file, not a folder to write into")
    if problems:
        raise _fail("\n       ".join(problems))


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one clear line and exit code 1 (traceback with ``--debug``)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (XrayDebugError, ValueError, FileNotFoundError, NotImplementedError) as exc:
            if kwargs.get("debug"):
                raise
            raise _fail(escape(str(exc))) from None  # "[ray]" and paths are not markup

    return wrapper


def progress_bar() -> Progress:
    return _progress_bar(console)


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
        summary = synthesize(out, config, progress=tracked(progress, "synth"), overwrite=overwrite)
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
    check_paths({"DATA": data}, {"--manifest": manifest})
    from xraydebug.data.inspect import inspect_dataset, summarize_counts

    with progress_bar() as progress:
        result = inspect_dataset(data, out, manifest, progress=tracked(progress, "reading"))
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


@app.command()
@handle_errors
def train(
    data: Annotated[
        Path, typer.Argument(help="Dataset folder (COVIDx, class folders or manifest).")
    ],
    arch: Annotated[
        str, typer.Option(help="Architecture: covidnext | covidnet | small | tiny.")
    ] = "small",
    epochs: Annotated[
        int | None,
        typer.Option(help="Maximum epochs (early stopping may end sooner). [default: recipe]"),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per batch. [default: recipe]")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate. [default: recipe]")] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="Adam weight decay. [default: recipe]")
    ] = None,
    class_weights: Annotated[
        str, typer.Option(help="auto (inverse frequency) | none | w1,w2,w3 in class order.")
    ] = "auto",
    val_fraction: Annotated[
        float, typer.Option(help="Patient-grouped share of train used for validation.")
    ] = 0.1,
    patience: Annotated[
        int | None, typer.Option(help="Early-stopping patience in epochs. [default: recipe]")
    ] = None,
    augment: Annotated[bool, typer.Option(help="Small affine + intensity jitter.")] = True,
    init_weights: Annotated[
        Path | None, typer.Option(help="Local state_dict to start from (no downloads).")
    ] = None,
    manifest: Annotated[Path | None, typer.Option(help="CSV manifest instead of a layout.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run.")] = True,
    out: Annotated[Path, typer.Option(help="Checkpoint path.")] = Path("models/covidnet.pt"),
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Train a COVID-Net-style classifier; best epoch by validation macro-F1.

    Settings left unset come from the architecture's recipe (printed, and kept in the card).
    small: lr 1e-3, batch 16, 30 epochs, patience 10.
    covidnext, covidnet: lr 1e-4, batch 32, 30 epochs, patience 8.

    Example: [bold]xraydebug train covidx/ --arch covidnext --epochs 20[/]
    """
    check_paths({"DATA": data}, {"--manifest": manifest, "--init-weights": init_weights})
    from xraydebug.models.architectures import get_arch
    from xraydebug.models.train import TrainConfig
    from xraydebug.models.train import train as train_model

    get_arch(arch)  # unknown names fail before any data is read
    config = TrainConfig(
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        class_weights=class_weights,
        val_fraction=val_fraction,
        patience=patience,
        seed=seed,
        augment=augment,
        device=device,
    )
    result = train_model(data, out, config, manifest, init_weights, resume, console)
    m = result.val_metrics
    console.print(
        f"Trained {arch} in {result.seconds:.0f} s; best epoch {result.best_epoch} "
        f"(validation accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}). "
        f"Checkpoint: [bold]{result.checkpoint}[/]; model card: {result.card_json}, "
        f"{result.card_md}. Next: xraydebug evaluate {data} --model {result.checkpoint}"
    )


@app.command()
@handle_errors
def evaluate(
    data: Annotated[Path, typer.Argument(help="Dataset folder.")],
    model: Annotated[Path, typer.Option(help="Checkpoint.")] = Path("models/covidnet.pt"),
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/eval"),
    manifest: Annotated[Path | None, typer.Option(help="CSV manifest instead of a layout.")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 64,
    text_sensitivity: Annotated[
        bool,
        typer.Option(
            "--text-sensitivity",
            help="Also paste detected text (and placebo crops of plain film) onto the text-free "
            "films and report how the answers move (text_sensitivity.json).",
        ),
    ] = False,
    boxes: Annotated[
        Path | None,
        typer.Option(
            help="scan.csv or cleaning.csv with the dataset's text boxes (default: detect text "
            "on the split).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    detector: Annotated[str, typer.Option(help="Text detector when --boxes is not given.")] = (
        "auto"
    ),
    draws: Annotated[int, typer.Option(help="Pastes per text-free film.")] = 2,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Per-class and per-source metrics with patient-level bootstrap CIs; with
    --text-sensitivity, does the model react to burned-in text?

    Example: [bold]xraydebug evaluate covidx/ --model models/covidnet.pt --text-sensitivity[/]
    """
    check_paths({"DATA": data}, {"--model": model, "--manifest": manifest}, {"--out": out})
    from xraydebug.models.evaluate import evaluate as evaluate_model
    from xraydebug.models.evaluate import print_metrics

    result = evaluate_model(data, model, split, out, manifest, batch_size, device, n_boot, seed)
    print_metrics(result.metrics, console, f"{model} on {data} [{split}]")
    for _rec, message in result.skipped:
        console.print(f"[yellow]skipped[/] {message}", highlight=False)
    console.print(
        f"Evaluated {result.metrics['n']} images. Metrics: [bold]{result.metrics_path}[/]; "
        f"predictions: {result.predictions_path}."
    )
    if text_sensitivity:
        from xraydebug.audit.text_sensitivity import TextSensitivityConfig, print_text_sensitivity
        from xraydebug.audit.text_sensitivity import text_sensitivity as run_text_sensitivity

        config = TextSensitivityConfig(
            draws=draws, n_boot=n_boot, seed=seed, batch_size=batch_size, device=device
        )
        with progress_bar() as progress:
            (found,) = run_text_sensitivity(
                data,
                model,
                out,
                split,
                boxes,
                config,
                manifest,
                detector,
                progress=tracked(progress, "detecting text"),
            )
        print_text_sensitivity(found.summary, console)
        console.print(f"Text sensitivity: [bold]{found.path}[/]")


@app.command()
@handle_errors
def scan(
    data: Annotated[Path, typer.Argument(help="Dataset folder.")],
    model: Annotated[Path, typer.Option(help="Checkpoint.")] = Path("models/covidnet.pt"),
    out: Annotated[Path, typer.Option(help="Output folder (resumes if it holds a scan).")] = Path(
        "runs/scan"
    ),
    method: Annotated[str, typer.Option(help="igospp | igos | gradcam.")] = "igospp",
    preset: Annotated[
        str,
        typer.Option(
            help="iGOS++ settings: balanced (the paper's deletion/insertion quality for about "
            "a ninth of its gradient passes), fast (triage: loses some deletion quality at "
            "mask 56+) or paper (20 iterations, 15 IG points)."
        ),
    ] = "balanced",  # = saliency.config.DEFAULT_PRESET (tested; not imported: no torch at start-up)
    mask_size: Annotated[int, typer.Option(help="Mask side (28, 56, 112 or the input size).")] = 56,
    iterations: Annotated[
        int | None, typer.Option(help="Optimisation iterations [default: the preset's].")
    ] = None,
    ig_steps: Annotated[
        int | None, typer.Option(help="Integrated-gradient points [default: the preset's].")
    ] = None,
    explain: Annotated[
        str, typer.Option(help="Explain the predicted (pred) or labelled class.")
    ] = ("pred"),
    split: Annotated[str, typer.Option(help="all, or splits separated by commas.")] = "all",
    shard: Annotated[str, typer.Option(help="i/n: every n-th image from the i-th (0-based).")] = (
        "0/1"
    ),
    limit: Annotated[int | None, typer.Option(help="Scan at most N images.")] = None,
    text: Annotated[bool, typer.Option(help="Detect text and flag shortcuts.")] = True,
    text_detector: DetectorOpt = "auto",
    text_long_side: Annotated[
        int, typer.Option(help="craft-global: input long side in pixels.")
    ] = 1280,
    text_precision: PrecisionOpt = "fp32",
    manifest: Annotated[Path | None, typer.Option(help="CSV manifest instead of a layout.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images explained together [default: 8 CPU, 64 CUDA].")
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = None,
    threads_per_actor: ThreadsPerActorOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Explain every image with iGOS++, detect burned-in text and flag text shortcuts.

    Example: [bold]xraydebug scan covidx/ --model models/covidnet.pt --mask-size 56[/]
    """
    check_paths({"DATA": data}, {"--model": model, "--manifest": manifest}, {"--out": out})
    from xraydebug.audit.scan import ScanConfig, parse_shard
    from xraydebug.audit.scan import scan as run_scan
    from xraydebug.saliency.registry import describe_saliency

    config = ScanConfig(
        method=method,
        preset=preset,
        mask_size=mask_size,
        iterations=iterations,
        ig_steps=ig_steps,
        explain=explain,
        split=split,
        batch_size=batch_size,
        device=device,
        seed=seed,
        shard=parse_shard(shard),
        limit=limit,
        detect_text=text,
        text_detector=text_detector,
        text_long_side=text_long_side,
        text_precision=text_precision,
    )
    where = _executor(executor, ray_address, actors, threads_per_actor)
    with progress_bar() as progress:
        result = run_scan(
            data,
            model,
            out,
            config,
            manifest,
            tracked(progress, "explaining"),
            executor=where,
        )
    for message in result.errors:
        console.print(f"[yellow]skipped[/] {message}", highlight=False)
    run = result.run
    speed = run.get("images_per_second")
    console.print(
        f"Scanned {result.n_new} new image(s) ({result.n_resumed} already done, "
        f"{run['n_errors']} unreadable) in {run['seconds']:.0f} s"
        + (f" ({speed:.2f} images/s)" if speed else "")
        + f". Results: [bold]{out / 'scan.csv'}[/]; masks: {out / 'masks'}; "
        f"run record: {out / 'run.json'}; report: [bold]{result.report}[/]."
    )
    cost = run.get("cost_per_image")
    if cost:
        console.print(
            f"Cost per image ({describe_saliency(run['saliency'])}): {cost['seconds']:.2f} s, "
            f"of which explaining {cost['explain_seconds']:.2f} s with "
            f"{cost['forward_images']:.0f} forward / {cost['backward_images']:.0f} backward "
            "model passes.",
            highlight=False,
        )


@app.command()
@handle_errors
def clean(
    data: Annotated[Path, typer.Argument(help="Dataset folder (read only).")],
    inpaint: Annotated[bool, typer.Option(help="Inpaint text boxes (OpenCV Telea).")] = True,
    out: Annotated[Path | None, typer.Option(help="New dataset folder (default: DATA-clean).")] = (
        None
    ),
    scan: Annotated[
        Path | None, typer.Option(help="Reuse the text boxes (and flags) of this scan folder.")
    ] = None,
    only_flagged: Annotated[bool, typer.Option(help="Clean only images the scan flagged.")] = False,
    dilate: Annotated[int, typer.Option(help="Grow each box by this many pixels.")] = 3,
    radius: Annotated[float, typer.Option(help="Telea inpainting radius in pixels.")] = 10.0,
    detector: DetectorOpt = "auto",
    long_side: Annotated[int, typer.Option(help="craft-global: input long side.")] = 1280,
    precision: PrecisionOpt = "fp32",
    second_pass: Annotated[
        bool, typer.Option(help="Inpaint again, wider, where the re-check still finds text.")
    ] = True,
    manifest: Annotated[Path | None, typer.Option(help="CSV manifest instead of a layout.")] = None,
    dry_run: Annotated[bool, typer.Option(help="List what would change; write nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    batch_size: Annotated[int, typer.Option(help="Images handed to a worker at a time.")] = 8,
    device: DeviceOpt = "auto",
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = None,
    threads_per_actor: ThreadsPerActorOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Remove burned-in text into a NEW dataset with the same layout and label files.

    Example: [bold]xraydebug clean covidx/ --inpaint --scan runs/scan --out covidx-clean[/]
    """
    check_paths({"DATA": data, "--scan": scan}, {"--manifest": manifest}, {"--out": out})
    from xraydebug.audit.clean import CleanConfig, clean_dataset

    if not inpaint:
        raise _fail("only --inpaint cleaning exists; nothing to do without it")
    config = CleanConfig(
        dilate=dilate,
        radius=radius,
        only_flagged=only_flagged,
        scan=str(scan) if scan else None,
        detector=detector,
        long_side=long_side,
        device=device,
        precision=precision,
        second_pass=second_pass,
        batch_size=batch_size,
    )
    where = _executor(executor, ray_address, actors, threads_per_actor)
    with progress_bar() as progress:
        result = clean_dataset(
            data,
            out,
            config,
            manifest,
            force,
            dry_run,
            tracked(progress, "cleaning"),
            executor=where,
        )
    for message in result.errors:
        console.print(f"[yellow]skipped[/] {message}", highlight=False)
    if dry_run:
        for row in result.table[result.table["n_boxes"].astype(int) > 0].itertuples():
            console.print(f"would inpaint {row.n_boxes} box(es) in {row.path}", highlight=False)
        console.print(f"Dry run: {result.n_changed} image(s) would change; nothing written.")
        return
    console.print(
        f"Cleaned dataset: [bold]{result.out}[/] ({result.n_changed} image(s) inpainted, "
        f"{result.n_copied} copied unchanged); per-image record: {result.out / 'cleaning.csv'}; "
        f"report: {result.report}. Next: xraydebug retrain {result.out}"
    )


@app.command("text")
@handle_errors
def text_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path, typer.Option(help="Output folder for text.csv.")] = Path("runs/text"),
    detector: DetectorOpt = "auto",
    long_side: Annotated[int, typer.Option(help="craft-global: input long side.")] = 1280,
    precision: PrecisionOpt = "fp32",
    split: Annotated[str, typer.Option(help="all, or splits separated by commas.")] = "all",
    manifest: Annotated[Path | None, typer.Option(help="CSV manifest instead of a layout.")] = None,
    device: DeviceOpt = "auto",
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    actors: ActorsOpt = None,
    threads_per_actor: ThreadsPerActorOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Detect burned-in text in every image (no classifier needed); boxes -> text.csv.

    Example: [bold]xraydebug text covidx/ --out runs/text[/]
    """
    check_paths({"DATA": data}, {"--manifest": manifest}, {"--out": out})
    from xraydebug.text.dataset import detect_dataset
    from xraydebug.text.detect import TextDetectConfig

    config = TextDetectConfig(
        detector=detector, long_side=long_side, device=device, precision=precision
    )
    where = _executor(executor, ray_address, actors, threads_per_actor)
    with progress_bar() as progress:
        table = detect_dataset(
            data,
            out,
            config,
            split,
            manifest,
            tracked(progress, "text"),
            executor=where,
        )
    ok = table[table["status"] == "ok"]
    with_text = int((ok["n_boxes"].astype(int) > 0).sum())
    console.print(
        f"{with_text} of {len(ok)} readable image(s) carry detected text "
        f"({int((table['status'] == 'error').sum())} unreadable). "
        f"Boxes: [bold]{out / 'text.csv'}[/]."
    )


@app.command()
@handle_errors
def retrain(
    data: Annotated[Path, typer.Argument(help="Cleaned dataset (from `xraydebug clean`).")],
    baseline: Annotated[Path, typer.Option(help="Checkpoint trained on the original data.")] = (
        Path("models/covidnet.pt")
    ),
    test: Annotated[
        Path | None,
        typer.Option(
            help="Original dataset whose test split is scored (default: what clean used)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Retrained checkpoint (default: <baseline>-clean.pt).")
    ] = None,
    run_dir: Annotated[
        Path, typer.Option(help="Folder for before_after.json/.csv and the report.")
    ] = Path("runs/retrain"),
    repeats: Annotated[
        int, typer.Option(help="Train N seeds for both sides to measure seed noise.")
    ] = 1,
    scan: Annotated[
        Path | None, typer.Option(help="Scan folder shown in the report (default: clean's).")
    ] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs.")] = 1000,
    text_sensitivity: Annotated[
        bool,
        typer.Option(help="Test both models for a reaction to pasted text (vs placebo pastes)."),
    ] = True,
    decorrelate_text: Annotated[
        bool,
        typer.Option(
            "--decorrelate-text",
            help="While retraining, paste the text clean found onto films of every class "
            "alike (share: --decorrelate-share), so text says little about the label.",
        ),
    ] = False,
    decorrelate_share: Annotated[
        float, typer.Option(help="Share of training films given pasted text.", min=0.0, max=1.0)
    ] = 0.5,
    device: DeviceOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Retrain the baseline's recipe on cleaned data; compare both models before/after.

    Example: [bold]xraydebug retrain covidx-clean/ --baseline models/covidnet.pt --test covidx/[/]
    """
    check_paths(
        {"DATA": data, "--test": test, "--scan": scan},
        {"--baseline": baseline},
        {"--run-dir": run_dir},
    )
    from xraydebug.audit.retrain import RetrainConfig, print_before_after
    from xraydebug.audit.retrain import retrain as run_retrain

    config = RetrainConfig(
        repeats=repeats,
        n_boot=n_boot,
        device=device,
        text_sensitivity=text_sensitivity,
        decorrelate_text=decorrelate_share if decorrelate_text else 0.0,
    )
    result = run_retrain(data, baseline, test, out, run_dir, config, scan, console)
    print_before_after(result, console)
    console.print(
        f"Retrained model: [bold]{result.checkpoint}[/]. Before/after: {result.json_path}, "
        f"{result.csv_path}. Report: [bold]{result.report_path}[/]"
    )


@app.command()
@handle_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="Folder written by scan, clean or retrain.")],
    out: Annotated[Path | None, typer.Option(help="HTML file (default: RUN_DIR/report.html).")] = (
        None
    ),
    show_ids: Annotated[bool, typer.Option(help="Show patient ids (hidden by default).")] = False,
    max_gallery: Annotated[
        int, typer.Option(help="Flagged cases shown with pictures; the rest are listed.")
    ] = 50,
    thumb_px: Annotated[int, typer.Option(help="Long side of each picture in pixels.")] = 320,
    debug: DebugOpt = False,
) -> None:
    """Rebuild the self-contained HTML audit report of a run folder.

    Example: [bold]xraydebug report runs/retrain --show-ids[/]
    """
    check_paths({"RUN_DIR": run_dir})
    from xraydebug.audit.report import ReportConfig, build_report

    config = ReportConfig(show_ids=show_ids, max_gallery=max_gallery, thumb_px=thumb_px)
    path = build_report(run_dir, out, config)
    size = path.stat().st_size / 1e6
    console.print(f"Report: [bold]{path}[/] ({size:.1f} MB, self-contained; open in any browser).")


@app.command()
@handle_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path(
        "demo-run"
    ),
    quick: Annotated[bool, typer.Option(help="Smaller data, about 1.5-3 minutes.")] = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Run the whole loop on synthetic data: synth, train, scan, clean, retrain, report.

    Example: [bold]xraydebug demo --quick[/]
    """
    from xraydebug.demo import run_demo

    run_demo(out=out, quick=quick, console=console, seed=seed, device=device)


def main() -> None:
    app()
