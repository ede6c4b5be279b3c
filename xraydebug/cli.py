"""The ``xraydebug`` command line: a thin Typer layer over the library functions.

Each command parses its options, builds its config and calls one library function, then prints a
short summary. Options are named like the config fields they set and are routed to them by name
(:mod:`xraydebug.settings`): no command copies a field by hand, and a default lives only in its
config (an option left unset is None: "the config's default"). Every nested setting the options
do not name is reachable with ``--set a.b=VALUE``. Choices come from the registries. Usage and
data errors print one red line and exit 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from typer.models import ParameterInfo

from xraydebug.errors import XrayDebugError
from xraydebug.executor import EXECUTORS, ExecutorConfig, import_ray
from xraydebug.models.architectures import list_archs
from xraydebug.models.foreign import format_names
from xraydebug.models.monitor import MONITORS
from xraydebug.models.train import TrainConfig
from xraydebug.progress import progress_bar as _progress_bar
from xraydebug.progress import tracked
from xraydebug.saliency import explainer_names
from xraydebug.saliency.config import PRESETS
from xraydebug.settings import build_config, default_of, parse_assignments
from xraydebug.stages.scan import DEFAULT_MASK_SIZE, ScanConfig, parse_shard
from xraydebug.text import CraftGlobalConfig, detector_descriptions

app = typer.Typer(
    name="xraydebug",
    help="Find and fix shortcut bugs (burned-in text) in chest X-ray classifiers.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold patient identifiers
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)
# a "[" that rich would read as a markup tag: not escaped, not the examples' [bold]...[/]
_TAG_BRACKET = re.compile(r"(?<!\\)\[(?!bold]|/])(?=[a-z#/@])")


def plain_help(text: str) -> str:
    """``text`` with every ``[`` that rich would read as a markup tag escaped, so that
    ``xraydebug[ray]`` prints as written (``[bold]`` and ``[/]`` stay markup: the examples use
    them); escaping twice changes nothing."""
    return _TAG_BRACKET.sub(r"\\[", text)


def escape_help_texts(typer_app: typer.Typer) -> None:
    """Pass the help of every command of ``typer_app`` and of its parameters through
    :func:`plain_help`: typer renders them as rich markup (``rich_markup_mode``)."""
    for info in typer_app.registered_commands:
        info.help = plain_help(info.help or inspect.getdoc(info.callback) or "")
        for param in inspect.signature(info.callback, eval_str=True).parameters.values():
            for meta in getattr(param.annotation, "__metadata__", ()):
                if isinstance(meta, ParameterInfo) and meta.help:
                    meta.help = plain_help(meta.help)


def _detector_help() -> str:
    described = "; ".join(f"{name} ({text})" for name, text in detector_descriptions().items())
    return f"Text detector: {described}. \\[default: auto]"


DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed. \\[default: 0]")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N \\[default: auto]")]
ManifestOpt = Annotated[
    Path | None, typer.Option(help="CSV manifest: path,label[,split,patient_id,source].")
]
DetectorOpt = Annotated[
    str | None,
    typer.Option(help=_detector_help()),
]


def _inpainter_help() -> str:
    from xraydebug.inpaint import DEFAULT_INPAINTER, inpainter_class, inpainter_names

    described = "; ".join(f"{n} ({inpainter_class(n).description})" for n in inpainter_names())
    return f"How text is removed: {described}. \\[default: {DEFAULT_INPAINTER}]"


InpainterOpt = Annotated[str | None, typer.Option(help=_inpainter_help())]
InpainterModelOpt = Annotated[
    Path | None,
    typer.Option(help="The learned inpainter's checkpoint (xraydebug inpainter train)."),
]
LongSideOpt = Annotated[
    int | None,
    typer.Option(
        help="craft-global: the film's long side at the network's input. \\[default: "
        + f"{default_of(CraftGlobalConfig, 'long_side')}]"
    ),
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        help="Text networks' precision: fp32 | bf16 | auto (bf16 where native). \\[default: "
        + f"{ScanConfig.precision}]"
    ),
]
UncertainOpt = Annotated[
    str | None,
    typer.Option(
        help="CheXpert/MIMIC uncertain labels (-1): zeros | ones | ignore (required where "
        "the data has them; evaluate and retrain default to the model's)."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Any other setting, by its dotted path in the config (repeatable), e.g. "
        "--set second_look.min_contrast=0.03 --set flags.min_mass=0.1 "
        "--set detector.verify_threshold=0.4. The whole resolved config is in the run folder.",
    ),
]


def _options(params: dict[str, Any], *skip: str) -> dict[str, Any]:
    """A command's parameters that are config settings: all but ``skip`` and ``debug``."""
    return {k: v for k, v in params.items() if k not in {*skip, "debug"}}


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


_EXECUTOR_OPTIONS = [
    inspect.Parameter(
        "executor",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default="local",
        annotation=Annotated[
            str,
            typer.Option(
                help=" | ".join(EXECUTORS) + ": this process, or Ray actors (one model/detector "
                "each: a local Ray with this machine's cores, or the cluster of --ray-address; "
                "pip install 'xraydebug[ray]')."
            ),
        ],
    ),
    inspect.Parameter(
        "ray_address",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=None,
        annotation=Annotated[
            str | None,
            typer.Option(help="Join this Ray cluster: auto | HOST:6379 (implies --executor ray)."),
        ],
    ),
    inspect.Parameter(
        "actors",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=None,
        annotation=Annotated[
            int | None,
            typer.Option(
                help="Ray actors \\[default: one per GPU, else one per CPU / --threads-per-actor]."
            ),
        ],
    ),
    inspect.Parameter(
        "threads_per_actor",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=None,
        annotation=Annotated[
            int | None,
            typer.Option(help="Torch threads (Ray CPUs) per actor \\[default: 1 on CPU]."),
        ],
    ),
]


def with_executor(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the executor options (declared once, here) and hand it one
    ``executor: ExecutorConfig`` in their place (--ray-address, --actors or
    --threads-per-actor imply ray)."""
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "executor"]
    last = own.pop()  # --debug stays last
    params = [*own, *_EXECUTOR_OPTIONS, last]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kind = kwargs.pop("executor")
        address, actors, threads = (
            kwargs.pop(k) for k in ("ray_address", "actors", "threads_per_actor")
        )
        if address or actors or threads:
            kind = "ray"
        config = ExecutorConfig(kind=kind, address=address, actors=actors, threads=threads)
        if config.kind == "ray":
            import_ray()  # without the extra: one line now, before any work
        return func(*args, **kwargs, executor=config)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


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
        except (
            XrayDebugError,
            ValueError,
            TypeError,
            FileNotFoundError,
            NotImplementedError,
        ) as exc:
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
    n_train: Annotated[int | None, typer.Option(help="Training images. \\[default: 600]")] = None,
    n_test: Annotated[int | None, typer.Option(help="Test images. \\[default: 300]")] = None,
    size: Annotated[int | None, typer.Option(help="Image side in pixels. \\[default: 512]")] = None,
    seed: SeedOpt = None,
    shortcut: Annotated[
        float | None,
        typer.Option(
            help="Train P(text | COVID-19) (--multilabel: | Infiltration); P(text | other) = "
            "1 - shortcut. \\[default: 0.9]"
        ),
    ] = None,
    text: Annotated[
        bool | None, typer.Option(help="Burn in text markers (--no-text: none). \\[default: text]")
    ] = None,
    lesion_strength: Annotated[
        float | None,
        typer.Option(help="Scale of the class lesions' intensity (0.2: subtle). \\[default: 1]"),
    ] = None,
    pose_jitter: Annotated[
        float | None,
        typer.Option(help="Scale of each film's rotation, scale and shift. \\[default: 1]"),
    ] = None,
    multilabel: Annotated[
        bool,
        typer.Option(
            "--multilabel",
            help="Multi-label films (Consolidation, Infiltration) in the NIH ChestX-ray14 "
            "layout; text tied to Infiltration in train.",
        ),
    ] = False,
    prevalence: Annotated[
        float | None,
        typer.Option(help="--multilabel: P(finding) per film and finding. \\[default: 0.35]"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty OUT.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Write a synthetic COVIDx-style set with a planted text shortcut (--multilabel: an
    NIH-layout multi-label set).

    Example: [bold]xraydebug synth demo-data/ --n-train 600 --n-test 300[/]
    """
    options = _options(locals(), "out", "overwrite", "multilabel")
    if multilabel:
        _synth_nih(out, options, overwrite)
        return
    if prevalence is not None:
        raise _fail("--prevalence goes with --multilabel")
    del options["prevalence"]
    from xraydebug.data.synth import SynthConfig, synthesize

    config = build_config(SynthConfig, options)
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
        f"Wrote {config.n_train + config.n_test} images to [bold]{out}[/] in "
        f"{summary.seconds:.1f} s: label files {out}/train.txt and {out}/test.txt, ground truth "
        f"{out}/ground_truth.json. In train, text marks {config.shortcut:.0%} of COVID-19 images "
        f"and {1 - config.shortcut:.0%} of the others; in test it is independent of the class."
    )


def _synth_nih(out: Path, options: dict[str, Any], overwrite: bool) -> None:
    from xraydebug.data.synth_nih import SHORTCUT_FINDING, NihSynthConfig, synthesize_nih

    config = build_config(NihSynthConfig, options)
    with progress_bar() as progress:
        summary = synthesize_nih(
            out, config, progress=tracked(progress, "synth"), overwrite=overwrite
        )
    table = Table(title="Synthetic multi-label films (NIH layout)")
    counts = summary["counts"]
    for name in ("split", *next(iter(counts.values()))):
        table.add_column(name, justify="left" if name == "split" else "right")
    for split, row in counts.items():
        table.add_row(split, *(str(v) for v in row.values()))
    console.print(table)
    console.print(
        f"Wrote {config.n_train + config.n_test} films to [bold]{out}[/] in "
        f"{summary['seconds']:.1f} s: {out}/Data_Entry_2017.csv, train_val_list.txt, "
        f"test_list.txt, images under images_001/images/, ground truth {out}/ground_truth.json. "
        f"In train, text marks {config.shortcut:.0%} of films with {SHORTCUT_FINDING} and "
        f"{1 - config.shortcut:.0%} of the others; in test it is independent of the findings."
    )


@app.command("inspect")
@handle_errors
def inspect_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path, typer.Option(help="CSV with one row per image.")] = Path("inspect.csv"),
    manifest: Annotated[
        Path | None, typer.Option(help="CSV manifest: path,label[,split,patient_id,source].")
    ] = None,
    uncertain: UncertainOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Detect the layout, read every image and list counts and problems.

    Example: [bold]xraydebug inspect covidx/ --out inspect.csv[/]
    """
    check_paths({"DATA": data}, {"--manifest": manifest})
    from xraydebug.data.inspect import inspect_dataset, summarize_counts

    with progress_bar() as progress:
        result = inspect_dataset(
            data,
            out,
            manifest=manifest,
            uncertain=uncertain,
            progress=tracked(progress, "reading"),
        )
    table = result.table
    ok = table[table["status"] != "error"]
    multilabel = result.index.multilabel
    counts = summarize_counts(table, multilabel=multilabel)
    grid = Table(title=f"{data} ({result.index.layout} layout): readable images")
    grid.add_column("split")
    for column in counts.columns:
        grid.add_column(str(column), justify="right")
    for split, row in counts.iterrows():
        grid.add_row(str(split), *(str(v) for v in row))
    console.print(grid)
    if ok["source"].astype(bool).any():
        labelled = ok
        if multilabel:  # one row per finding of each film
            labelled = ok[ok["label"] != ""].assign(label=ok["label"].str.split("|"))
            labelled = labelled.explode("label")
        by_source = labelled.groupby(["split", "source", "label"]).size()
        kind = "finding" if multilabel else "class"
        src = Table(title=f"Images per split x source x {kind}")
        for name in ("split", "source", kind, "n"):
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


# Long only by its 21 option declarations; the body is about 25 lines.
@app.command()
@handle_errors
def train(
    data: Annotated[
        Path, typer.Argument(help="Dataset folder (COVIDx, class folders or manifest).")
    ],
    arch: Annotated[
        str | None,
        typer.Option(
            help=f"Architecture: {' | '.join(list_archs())}. "
            f"\\[default: {default_of(TrainConfig, 'arch')}]"
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Maximum epochs (early stopping may end sooner). \\[default: recipe]"),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per batch. \\[default: recipe]")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Adam learning rate. \\[default: recipe]")
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="Adam weight decay. \\[default: recipe]")
    ] = None,
    class_weights: Annotated[
        str | None,
        typer.Option(
            help="auto (inverse frequency) | none | w1,w2,w3 in class order. Multi-label: "
            "auto is none (plain BCE), weights multiply each finding's positives."
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(help="Patient-grouped share of train used for validation. \\[default: 0.1]"),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(help="Early-stopping patience in epochs (0: off). \\[default: recipe]"),
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help="Learning rate: constant | cosine. \\[default: recipe]")
    ] = None,
    warmup_epochs: Annotated[
        int | None, typer.Option(help="Linear learning-rate warm-up. \\[default: recipe]")
    ] = None,
    min_epochs: Annotated[
        int | None,
        typer.Option(help="No early stop before this epoch. \\[default: recipe]"),
    ] = None,
    smoothing: Annotated[
        float | None,
        typer.Option(
            help="Patience counts on this EMA of the monitored metric (0: raw). \\[default: recipe]"
        ),
    ] = None,
    monitor: Annotated[
        str | None,
        typer.Option(
            help="Validation metric that picks the best epoch and counts patience: "
            f"{' | '.join(MONITORS)}. \\[default: recipe]"
        ),
    ] = None,
    low_res_share: Annotated[
        float | None,
        typer.Option(
            help="Share of the epochs first trained on films at --low-res-scale of the input "
            "size (0: none). \\[default: recipe]"
        ),
    ] = None,
    low_res_scale: Annotated[
        float | None, typer.Option(help="Size factor of those epochs. \\[default: recipe]")
    ] = None,
    augment: Annotated[
        bool | None, typer.Option(help="Small affine + intensity jitter. \\[default: augment]")
    ] = None,
    init_weights: Annotated[
        Path | None, typer.Option(help="Local state_dict to start from (no downloads).")
    ] = None,
    uncertain: UncertainOpt = None,
    findings: Annotated[
        str | None,
        typer.Option(
            help="Multi-label data: train on these findings only, in this order (a,b,c). "
            "\\[default: all of the layout's]"
        ),
    ] = None,
    manifest: ManifestOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run.")] = True,
    out: Annotated[Path, typer.Option(help="Checkpoint path.")] = Path("models/covidnet.pt"),
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Train a COVID-Net-style classifier; best epoch by the recipe's validation monitor.

    Settings left unset come from the architecture's recipe (printed, and kept in the card);
    with --init-weights, from its fine-tuning recipe (a tenth of the lr, all at full size).
    small: 80 epochs, batch 16, cosine lr 1e-3, the first 48 epochs at half size, patience 10
    on an EMA of validation macro-F1.
    covidnext, covidnet: 40 epochs, batch 32, cosine lr 1e-4, half at half size, patience 8.

    Example: [bold]xraydebug train covidx/ --arch covidnext --epochs 20[/]
    """
    options = _options(locals(), "data", "init_weights", "manifest", "resume", "out")
    if findings is not None:
        options["findings"] = _names(findings)
    check_paths({"DATA": data}, {"--manifest": manifest, "--init-weights": init_weights})
    from xraydebug.models.architectures import get_arch
    from xraydebug.models.train import TrainConfig
    from xraydebug.models.train import train as train_model

    config = build_config(TrainConfig, options)
    get_arch(config.arch)  # unknown names fail before any data is read
    result = train_model(
        data,
        out,
        config=config,
        manifest=manifest,
        init_weights=init_weights,
        resume=resume,
        console=console,
    )
    m = result.val_metrics
    shown = f"macro-F1 {m['macro_f1']:.3f}"
    if "macro_auroc" in m:  # multi-label
        shown = f"mean per-finding AUROC {m['auroc']:.3f}, macro-F1 at 0.5 {m['macro_f1']:.3f}"
    console.print(
        f"Trained {config.arch} in {result.seconds:.0f} s; best epoch {result.best_epoch} "
        f"(validation accuracy {m['accuracy']:.3f}, {shown}). "
        f"Checkpoint: [bold]{result.checkpoint}[/]; model card: {result.card_json}, "
        f"{result.card_md}. Next: xraydebug evaluate {data} --model {result.checkpoint}"
    )


def _names(text: str) -> tuple[str, ...]:
    """``"a, b,c"`` -> ("a", "b", "c")."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _floats(text: str | None) -> tuple[float, ...] | None:
    """``"0.5,0.5,0.5"`` -> (0.5, 0.5, 0.5); None stays None."""
    return None if text is None else tuple(float(v) for v in text.split(",") if v.strip())


# Long only by its option declarations; the body is about 20 lines.
@app.command("import-model")
@handle_errors
def import_model_cmd(
    out: Annotated[Path, typer.Option(help="The xraydebug checkpoint to write.")],
    file: Annotated[
        Path | None,
        typer.Argument(help=f"A model file: {', '.join(format_names())} (none for xrv:NAME)."),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(help="Output names in output order: a,b,c (findings with --multilabel)."),
    ] = None,
    multilabel: Annotated[
        bool | None,
        typer.Option(help="One sigmoid per finding, not one softmax. \\[default: softmax]"),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            help="For a state_dict: torchvision:NAME or timm:NAME (any timm model; the timm "
            "extra). xrv:NAME: a TorchXRayVision classifier (densenet121-res224-all, ...; the "
            "xrv extra) from --weights, with its findings and preprocessing."
        ),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(help="For xrv:NAME: the weights file xrv would download, on disk."),
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Load weights saved as a whole pickled model (xrv's DenseNet files): this "
            "runs code from the file, so only for a file you trust.",
        ),
    ] = False,
    input_size: Annotated[
        int | None, typer.Option(help="Input side in px. \\[default: 224; xrv:NAME: its own]")
    ] = None,
    channels: Annotated[
        int | None, typer.Option(help="1 or 3. \\[default: 3; xrv:NAME: 1]")
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(
            help="Per-channel mean of [0, 1] input. \\[default: ImageNet; xrv:NAME: its range]"
        ),
    ] = None,
    std: Annotated[str | None, typer.Option(help="Per-channel std. \\[default: ImageNet]")] = None,
    crop_top: Annotated[
        float | None, typer.Option(help="Share of the height cut from the top. \\[default: 0]")
    ] = None,
    spec: Annotated[
        Path | None, typer.Option(help="JSON with the same keys (options override it).")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Turn a model your team already has into a checkpoint every command takes.

    Runs one forward pass on a dummy batch; refuses an output width other than --classes.
    Nothing is downloaded: the weights are the file's.

    Example: [bold]xraydebug import-model net.ts --classes normal,pneumonia,COVID-19 --out m.pt[/]
    """
    check_paths(files={"FILE": file, "--spec": spec})
    from xraydebug.models.foreign import ModelSpec, classes_from_option, import_model

    given = {
        "classes": classes_from_option(classes) if classes else None,
        "arch": arch,
        "input_size": input_size,
        "channels": channels,
        "mean": _floats(mean),
        "std": _floats(std),
        "crop_top": crop_top,
        "multilabel": multilabel,
    }
    model_spec = ModelSpec.from_options(spec, **given)  # None: an xraydebug checkpoint's own
    result = import_model(file, model_spec, out, weights=weights, trust_pickle=trust_pickle)
    console.print(
        f"Imported {file or weights} ({result.format}, sha256 {result.sha256[:12]}…, "
        f"{result.output_width} outputs) into [bold]{result.checkpoint}[/]. "
        f"Next: xraydebug evaluate DATA --model {result.checkpoint} --text-sensitivity",
        highlight=False,
    )


@app.command()
@handle_errors
def evaluate(
    data: Annotated[Path, typer.Argument(help="Dataset folder.")],
    model: Annotated[Path, typer.Option(help="Checkpoint.")] = Path("models/covidnet.pt"),
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/eval"),
    manifest: ManifestOpt = None,
    n_boot: Annotated[
        int | None, typer.Option(help="Bootstrap resamples for the 95% CIs. \\[default: 1000]")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per batch. \\[default: 64]")
    ] = None,
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
    detector: DetectorOpt = None,
    long_side: LongSideOpt = None,
    precision: PrecisionOpt = None,
    draws: Annotated[int | None, typer.Option(help="Pastes per text-free film. \\[default: 2]")] = (
        None
    ),
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Multi-label models: one decision threshold for every finding \\[default: the "
            "model's per-finding ones, else F1-best on the data's val split, else 0.5]."
        ),
    ] = None,
    uncertain: UncertainOpt = None,
    findings: Annotated[
        str | None,
        typer.Option(
            help="Multi-label models: score only these findings (a,b,c), e.g. those a model "
            "trained elsewhere shares with this dataset. \\[default: all of the model's]"
        ),
    ] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Per-class (multi-label: per-finding AUROC) and per-source metrics with patient-level
    bootstrap CIs; with --text-sensitivity, does the model react to burned-in text?

    Example: [bold]xraydebug evaluate covidx/ --model models/covidnet.pt --text-sensitivity[/]
    """
    options = _options(locals(), "data", "model", "split", "out", "manifest", "boxes")
    check_paths({"DATA": data}, {"--model": model, "--manifest": manifest}, {"--out": out})
    from xraydebug.audit.text_sensitivity import TextSensitivityConfig
    from xraydebug.models.evaluate import EvaluateConfig, print_metrics
    from xraydebug.models.evaluate import evaluate as evaluate_model
    from xraydebug.stages.text import TextConfig

    test_text = options.pop("text_sensitivity")
    text = {k: options.pop(k) for k in ("detector", "long_side", "precision")}
    text["device"] = options["device"]
    labels = {k: options.pop(k) for k in ("threshold", "uncertain", "findings")}  # evaluation's
    if labels["findings"] is not None:
        labels["findings"] = _names(labels["findings"])
    settings = build_config(TextSensitivityConfig, options) if test_text else None
    del options["draws"]  # the text-sensitivity test's alone
    evaluation = build_config(EvaluateConfig, {**options, **labels})
    result = evaluate_model(data, model, split, out, manifest=manifest, config=evaluation)
    print_metrics(result.metrics, console, f"{model} on {data} [{split}]")
    for _rec, message in result.skipped:
        console.print(f"[yellow]skipped[/] {message}", highlight=False)
    console.print(
        f"Evaluated {result.metrics['n']} images. Metrics: [bold]{result.metrics_path}[/]; "
        f"predictions: {result.predictions_path}."
    )
    if settings is not None:
        detection = TextConfig.from_options(text)
        _text_sensitivity(
            data,
            model,
            out=out,
            split=split,
            boxes=boxes,
            settings=settings,
            manifest=manifest,
            text=detection,
        )


def _text_sensitivity(
    data: Path,
    model: Path,
    *,
    out: Path,
    split: str,
    boxes: Path | None,
    settings: Any,
    manifest: Path | None,
    text: Any,
) -> None:
    from xraydebug.audit.text_sensitivity import print_text_sensitivity, text_sensitivity

    with progress_bar() as progress:
        (found,) = text_sensitivity(
            data,
            model,
            out,
            split=split,
            boxes=boxes,
            config=settings,
            manifest=manifest,
            text=text,
            progress=tracked(progress, "detecting text"),
        )
    print_text_sensitivity(found.summary, console)
    console.print(f"Text sensitivity: [bold]{found.path}[/]")


# Long only by its 25 option declarations; the body is about 20 lines.
@app.command()
@handle_errors
@with_executor
def scan(
    data: Annotated[Path, typer.Argument(help="Dataset folder.")],
    model: Annotated[Path, typer.Option(help="Checkpoint.")] = Path("models/covidnet.pt"),
    out: Annotated[Path, typer.Option(help="Output folder (resumes if it holds a scan).")] = Path(
        "runs/scan"
    ),
    method: Annotated[
        str | None,
        typer.Option(
            help=f"Explainer: {' | '.join(explainer_names())}. \\[default: {ScanConfig.method}]",
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help=f"iGOS++ settings: {' | '.join(PRESETS)}. balanced: the paper's "
            "deletion/insertion quality for about a ninth of its gradient passes; fast: triage, "
            "loses some deletion quality at mask 56+; paper: 20 iterations, 15 IG points. "
            f"\\[default: {default_of(ScanConfig, 'saliency').preset_name}]",
        ),
    ] = None,
    mask_size: Annotated[
        int | None,
        typer.Option(
            help=f"Mask side (28, 56, 112 or the input size). \\[default: {DEFAULT_MASK_SIZE}]"
        ),
    ] = None,
    iterations: Annotated[
        int | None, typer.Option(help="Optimisation iterations \\[default: the preset's].")
    ] = None,
    ig_steps: Annotated[
        int | None, typer.Option(help="Integrated-gradient points \\[default: the preset's].")
    ] = None,
    explain: Annotated[
        str | None,
        typer.Option(
            help=f"Explain the predicted (pred) or labelled class (label). \\[default: "
            f"{ScanConfig.explain}]"
        ),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="Explain this class or finding in every image (repeat for several; one row "
            "each). \\[default: the predicted class; multi-label: every finding called]"
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="all, or splits separated by commas. \\[default: all]")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="i/n: every n-th image from the i-th (0-based).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Scan at most N images.")] = None,
    text: Annotated[bool, typer.Option(help="Detect text and flag shortcuts.")] = True,
    removal: Annotated[
        str | None,
        typer.Option(
            help="How evidence is removed in the explanation, its metrics and the reveal test: "
            "blur (the iGOS++ paper) or inpaint (Agarwal & Nguyen's MP2-G); also grey, "
            "noise. \\[default: blur]"
        ),
    ] = None,
    removal_inpainter: Annotated[
        str | None,
        typer.Option(
            help="The inpainter of --removal inpaint and of the removal test (the text "
            "inpainted away). \\[default: telea]"
        ),
    ] = None,
    inpainter_model: InpainterModelOpt = None,
    detector: DetectorOpt = None,
    long_side: LongSideOpt = None,
    precision: PrecisionOpt = None,
    set_: SetOpt = None,
    manifest: ManifestOpt = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images explained together \\[default: 8 CPU, 64 CUDA].")
    ] = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    text_detector: Annotated[str | None, typer.Option(hidden=True)] = None,
    text_long_side: Annotated[int | None, typer.Option(hidden=True)] = None,
    text_precision: Annotated[str | None, typer.Option(hidden=True)] = None,
    executor: ExecutorConfig = ExecutorConfig(),
    debug: DebugOpt = False,
) -> None:
    """Explain every image with iGOS++, detect burned-in text and flag text shortcuts.

    Example: [bold]xraydebug scan covidx/ --model models/covidnet.pt --mask-size 56[/]
    """
    options = _renamed(
        _options(locals(), "data", "model", "out", "manifest", "executor", "set_"),
        text_detector="detector",
        text_long_side="long_side",
        text_precision="precision",
    )
    check_paths(
        {"DATA": data},
        {"--model": model, "--manifest": manifest, "--inpainter-model": inpainter_model},
        {"--out": out},
    )
    from xraydebug.audit.report import build_report
    from xraydebug.stages.scan import scan as run_scan

    options["shard"] = parse_shard(shard) if shard else None
    options["targets"] = tuple(options.pop("target") or ()) or None
    config = ScanConfig.from_options(options, parse_assignments(set_ or []))
    with progress_bar() as progress:
        result = run_scan(
            data,
            model,
            out,
            config=config,
            manifest=manifest,
            progress=tracked(progress, "explaining"),
            executor=executor,
        )
    _print_scan_summary(result, out, build_report(out))


def _print_scan_summary(result: Any, out: Path, report: Path) -> None:
    """Skipped images, counts, speed, output files and the cost per image of a scan."""
    from xraydebug.saliency import describe_saliency

    for message in result.errors:
        console.print(f"[yellow]skipped[/] {message}", highlight=False)
    run = result.run
    speed = run.get("images_per_second")
    console.print(
        f"Scanned {result.n_new} new image(s) ({result.n_resumed} already done, "
        f"{run['n_errors']} unreadable) in {run['seconds']:.0f} s"
        + (f" ({speed:.2f} images/s)" if speed else "")
        + f". Results: [bold]{out / 'scan.csv'}[/]; masks: {out / 'masks'}; "
        f"run record: {out / 'run.json'}; report: [bold]{report}[/]."
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


def _renamed(options: dict[str, Any], **old_to_new: str) -> dict[str, Any]:
    """``options`` with the values of hidden old option names moved to their new names (the
    new name wins when both are given)."""
    for old, new in old_to_new.items():
        value = options.pop(old)
        if value is not None and options.get(new) is None:
            err_console.print(
                f"[yellow]note:[/] --{old.replace('_', '-')} is now --{new.replace('_', '-')}"
            )
            options[new] = value
    return options


@app.command()
@handle_errors
@with_executor
def clean(
    data: Annotated[Path, typer.Argument(help="Dataset folder (read only).")],
    inpaint: Annotated[bool, typer.Option(help="Inpaint text boxes.")] = True,
    out: Annotated[Path | None, typer.Option(help="New dataset folder (default: DATA-clean).")] = (
        None
    ),
    scan: Annotated[
        Path | None, typer.Option(help="Reuse the text boxes (and flags) of this scan folder.")
    ] = None,
    only_flagged: Annotated[
        bool | None, typer.Option(help="Clean only images the scan flagged.")
    ] = None,
    dilate: Annotated[
        int | None, typer.Option(help="Grow each box by this many pixels. \\[default: 3]")
    ] = None,
    inpainter: InpainterOpt = None,
    inpainter_model: InpainterModelOpt = None,
    radius: Annotated[
        float | None,
        typer.Option(help="telea / ns inpainting radius in pixels. \\[default: 10]"),
    ] = None,
    second_pass: Annotated[
        bool | None,
        typer.Option(
            help="Inpaint again, wider, where the re-check still finds text. "
            "\\[default: second-pass]"
        ),
    ] = None,
    detector: DetectorOpt = None,
    long_side: LongSideOpt = None,
    precision: PrecisionOpt = None,
    set_: SetOpt = None,
    manifest: ManifestOpt = None,
    dry_run: Annotated[bool, typer.Option(help="List what would change; write nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    batch_size: Annotated[
        int | None, typer.Option(help="Images handed to a worker at a time. \\[default: 8]")
    ] = None,
    device: DeviceOpt = None,
    executor: ExecutorConfig = ExecutorConfig(),
    debug: DebugOpt = False,
) -> None:
    """Remove burned-in text into a NEW dataset with the same layout and label files.

    Example: [bold]xraydebug clean covidx/ --inpaint --scan runs/scan --out covidx-clean[/]
    """
    options = _options(
        locals(), "data", "inpaint", "out", "manifest", "dry_run", "force", "executor", "set_"
    )
    check_paths(
        {"DATA": data, "--scan": scan},
        {"--manifest": manifest, "--inpainter-model": inpainter_model},
        {"--out": out},
    )
    from xraydebug.audit.report import build_report
    from xraydebug.stages.clean import CleanConfig, clean_dataset

    if not inpaint:
        raise _fail("only --inpaint cleaning exists; nothing to do without it")
    options["scan"] = str(scan) if scan else None
    options["inpainter_model"] = str(inpainter_model) if inpainter_model else None
    config = CleanConfig.from_options(options, parse_assignments(set_ or []))
    with progress_bar() as progress:
        result = clean_dataset(
            data,
            out,
            config=config,
            manifest=manifest,
            force=force,
            dry_run=dry_run,
            progress=tracked(progress, "cleaning"),
            executor=executor,
        )
    for message in result.errors:
        console.print(f"[yellow]skipped[/] {message}", highlight=False)
    if dry_run:
        for row in result.table[result.table["n_boxes"].astype(int) > 0].itertuples():
            console.print(f"would inpaint {row.n_boxes} box(es) in {row.path}", highlight=False)
        console.print(f"Dry run: {result.n_changed} image(s) would change; nothing written.")
        return
    report = build_report(result.out)
    console.print(
        f"Cleaned dataset: [bold]{result.out}[/] ({result.n_changed} image(s) inpainted, "
        f"{result.n_copied} copied unchanged); per-image record: {result.out / 'cleaning.csv'}; "
        f"report: {report}. Next: xraydebug retrain {result.out}"
    )


@app.command("text")
@handle_errors
@with_executor
def text_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path, typer.Option(help="Output folder for text.csv.")] = Path("runs/text"),
    detector: DetectorOpt = None,
    long_side: LongSideOpt = None,
    precision: PrecisionOpt = None,
    set_: SetOpt = None,
    split: Annotated[
        str | None, typer.Option(help="all, or splits separated by commas. \\[default: all]")
    ] = None,
    manifest: ManifestOpt = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images handed to a worker at a time. \\[default: 8]")
    ] = None,
    device: DeviceOpt = None,
    executor: ExecutorConfig = ExecutorConfig(),
    debug: DebugOpt = False,
) -> None:
    """Detect burned-in text in every image (no classifier needed); boxes -> text.csv.

    Example: [bold]xraydebug text covidx/ --out runs/text[/]
    """
    options = _options(locals(), "data", "out", "manifest", "executor", "set_")
    check_paths({"DATA": data}, {"--manifest": manifest}, {"--out": out})
    from xraydebug.stages.text import TextConfig, detect_dataset

    config = TextConfig.from_options(options, parse_assignments(set_ or []))
    with progress_bar() as progress:
        table = detect_dataset(
            data,
            out,
            config=config,
            manifest=manifest,
            progress=tracked(progress, "text"),
            executor=executor,
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
        int | None, typer.Option(help="Train N seeds for both sides to measure seed noise.")
    ] = None,
    scan: Annotated[
        Path | None, typer.Option(help="Scan folder shown in the report (default: clean's).")
    ] = None,
    n_boot: Annotated[
        int | None, typer.Option(help="Bootstrap resamples for the 95% CIs. \\[default: 1000]")
    ] = None,
    text_sensitivity: Annotated[
        bool | None,
        typer.Option(
            help="Test both models (of every seed) for a reaction to pasted text (vs placebo "
            "pastes). \\[default: text-sensitivity]"
        ),
    ] = None,
    decorrelate_text: Annotated[
        float | None,
        typer.Option(
            help="While retraining, paste the text clean found onto this share of the training "
            "films of every class alike, so text says little about the label. \\[default: 0]",
            min=0.0,
            max=1.0,
        ),
    ] = None,
    finetune_epochs: Annotated[
        int | None,
        typer.Option(
            help="An imported baseline (fine-tuned, not retrained): epochs of its fine-tuning "
            "run. \\[default: its arch's fine-tuning recipe]",
            min=1,
        ),
    ] = None,
    uncertain: UncertainOpt = None,
    device: DeviceOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Retrain the baseline's recipe on cleaned data; compare both models before/after.

    A multi-label baseline is compared per finding (AUROC, and recall at each model's
    thresholds). An imported baseline (import-model) records no recipe: it is fine-tuned on
    the cleaned data from its own weights with its own preprocessing (torchvision:/timm:
    state_dicts rebuilt from their arch; TorchScript and torch.export files in place, where
    their parameters can train); --repeats must then be 1.

    Example: [bold]xraydebug retrain covidx-clean/ --baseline models/covidnet.pt --test covidx/[/]
    """
    options = _options(locals(), "data", "baseline", "test", "out", "run_dir", "scan")
    check_paths(
        {"DATA": data, "--test": test, "--scan": scan},
        {"--baseline": baseline},
        {"--run-dir": run_dir},
    )
    from xraydebug.audit.retrain import RetrainConfig, print_before_after
    from xraydebug.audit.retrain import retrain as run_retrain

    config = build_config(RetrainConfig, options)
    result = run_retrain(
        data,
        baseline,
        test_data=test,
        out=out,
        run_dir=run_dir,
        config=config,
        scan_dir=scan,
        console=console,
    )
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
    show_ids: Annotated[
        bool | None, typer.Option(help="Show patient ids (hidden by default).")
    ] = None,
    show_paths: Annotated[
        bool | None,
        typer.Option(
            help="Show where the dataset, model and run folders lie (by default their names)."
        ),
    ] = None,
    max_gallery: Annotated[
        int | None,
        typer.Option(
            help="Flagged cases shown with pictures; the rest are listed. \\[default: 50]"
        ),
    ] = None,
    thumb_px: Annotated[
        int | None, typer.Option(help="Long side of each picture in pixels. \\[default: 320]")
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Rebuild the self-contained HTML audit report of a run folder.

    Example: [bold]xraydebug report runs/retrain --show-ids[/]
    """
    options = _options(locals(), "run_dir", "out")
    check_paths({"RUN_DIR": run_dir})
    from xraydebug.audit.report import ReportConfig, build_report

    config = build_config(ReportConfig, options)
    path = build_report(run_dir, out, config=config)
    size = path.stat().st_size / 1e6
    console.print(f"Report: [bold]{path}[/] ({size:.1f} MB, self-contained; open in any browser).")


@app.command()
@handle_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path(
        "demo-run"
    ),
    quick: Annotated[bool, typer.Option(help="Smaller data, about 1.5-3 minutes.")] = False,
    seed: Annotated[
        int, typer.Option(help="Random seed (results are deterministic per seed).")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    debug: DebugOpt = False,
) -> None:
    """Run the whole loop on synthetic data: synth, train, scan, clean, retrain, report.

    Example: [bold]xraydebug demo --quick[/]
    """
    from xraydebug.demo import run_demo

    run_demo(out=out, quick=quick, console=console, seed=seed, device=device)


# -- xraydebug inpainter: the learned inpainter --------------------------------------------------
inpainter_app = typer.Typer(
    name="inpainter",
    help="Train the learned inpainter (clean --inpainter learned --inpainter-model FILE).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(inpainter_app, name="inpainter")


def _inpainter_steps() -> int:
    from xraydebug.inpaint.training import InpainterTrainConfig

    return InpainterTrainConfig().steps


@inpainter_app.command("train")
@handle_errors
def inpainter_train(
    data: Annotated[Path, typer.Argument(help="Dataset folder: trains on its train split.")],
    out: Annotated[Path, typer.Option(help="Checkpoint to write (model card beside it).")] = Path(
        "models/inpainter.pt"
    ),
    steps: Annotated[
        int | None, typer.Option(help=f"Training steps. \\[default: {_inpainter_steps()}]")
    ] = None,
    text: Annotated[
        Path | None,
        typer.Option(
            help="An `xraydebug text` folder whose boxes mark the films' text (kept out of the "
            "loss); without it the default text detector looks first."
        ),
    ] = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    force: Annotated[
        bool, typer.Option(help="Train again even if --out is a finished run of these settings.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Train the learned inpainter on a dataset's own films (self-supervised: random holes over
    text-free regions); judged on held-out films against telea, written with a model card.

    Example: [bold]xraydebug inpainter train covidx/ --out inpainter.pt[/], then
    [bold]xraydebug clean covidx/ --inpainter learned --inpainter-model inpainter.pt[/]
    """
    check_paths({"DATA": data}, {}, {})
    if text is not None and not text.exists():
        raise _fail(f"--text {text}: does not exist")
    from xraydebug.inpaint.training import default_config, train_inpainter

    config = default_config(steps=steps, seed=seed, device=device)
    result = train_inpainter(data, out, config, text=text, force=force, console=console)
    rows = result.held_out["methods"]
    table = ", ".join(f"{name} {row['psnr']:.2f} dB" for name, row in rows.items())
    verb = "Already trained" if result.reused else f"Trained in {result.seconds:.0f} s"
    console.print(
        f"{verb}: [bold]{result.checkpoint}[/] ({result.parameters:,} parameters, "
        f"{result.steps} steps). Held-out PSNR inside the holes: {table}. Model card: "
        f"{result.card_md}. Next: xraydebug clean {data} --inpainter learned "
        f"--inpainter-model {result.checkpoint}",
        highlight=False,
    )


escape_help_texts(inpainter_app)


escape_help_texts(app)  # after the last command


def main() -> None:
    app()
