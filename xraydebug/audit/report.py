"""The HTML audit report (DESIGN.md section 8): one self-contained file a clinician can read.

:func:`build_report` takes a run folder of ``scan`` (``scan.csv``), ``clean`` (the cleaned
dataset with ``cleaning.csv``) or ``retrain`` (``before_after.json``) and follows the links each
records (retrain -> cleaned data -> the scan whose boxes it reused) to gather what exists:

1. summary: what was checked, how many images were flagged by class and source, before/after
   precision and recall with CIs;
2. the flagged images sorted by ``mass_in_text`` (at most ``max_gallery`` with pictures, the
   rest listed): original with numbered text boxes, ``cividis`` saliency overlay with legend,
   text-only reveal probability, cleaned image; a review widget per case ("shortcut" /
   "not a shortcut") that exports the decisions as CSV (inline JavaScript, no network);
3. per-source table, confusion matrices and before/after plots (matplotlib, inlined PNG);
4. images that could not be read, settings and versions.

Every image is inlined as a ``data:`` URI and has alt text; nothing is loaded from elsewhere.
Patient ids are shown only with ``show_ids=True``; folders and files (dataset, model, run
folders) by their names only, unless ``show_paths=True``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import jinja2
import numpy as np
import pandas as pd

from xraydebug.audit import figures
from xraydebug.data.imageio import read_image
from xraydebug.data.labels import LABELS_UNUSED, findings_matrix
from xraydebug.data.layouts import load_index
from xraydebug.errors import DatasetError, ImageReadError
from xraydebug.flagging import saliency_to_original
from xraydebug.fsutil import atomic_write_text, resolves_inside
from xraydebug.models.architectures import Preprocessing
from xraydebug.models.metrics import confusion_matrix
from xraydebug.runfolder import (
    BEFORE_AFTER_JSON,
    CLEAN_STATE,
    CLEANING_CSV,
    EXAMPLES_FILE,
    REPORT_HTML,
    RUN_JSON,
    SCAN_CSV,
    read_scan_csv,
    read_table,
)
from xraydebug.saliency import describe_saliency

REPORT_NAME = REPORT_HTML
METRIC_NAMES = {"f1": "F1", "macro_f1": "macro-F1", "recall": "recall (sensitivity)"}


@dataclass(frozen=True)
class ReportConfig:
    """How the report is built.

    Attributes:
        show_ids: print patient ids (hidden by default: reports travel by e-mail).
        show_paths: print where the dataset, model and run folders lie (full paths); by default
            only their names, and absolute paths in the recorded settings by their names.
        max_gallery: flagged cases shown with pictures (highest ``mass_in_text`` first); the
            others are listed in a table with their numbers.
        thumb_px: long side of each inlined picture in pixels.
        jpeg_quality: JPEG quality of the inlined pictures (1-95).
    """

    show_ids: bool = False
    show_paths: bool = False
    max_gallery: int = 50
    thumb_px: int = 320
    jpeg_quality: int = 80

    def __post_init__(self) -> None:
        if self.max_gallery < 0:
            raise ValueError(f"max_gallery must be >= 0, got {self.max_gallery}")
        if not 32 <= self.thumb_px <= 2048:
            raise ValueError(f"thumb_px must be in [32, 2048], got {self.thumb_px}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95], got {self.jpeg_quality}")


@dataclass
class RunParts:
    """The folders a report draws on (any may be missing)."""

    scan: Path | None = None
    clean: Path | None = None
    retrain: Path | None = None


def find_parts(run_dir: Path) -> RunParts:
    """Which stage wrote ``run_dir`` and the folders it links to."""
    parts = RunParts()
    if (run_dir / BEFORE_AFTER_JSON).exists():
        parts.retrain = run_dir
        comparison = json.loads((run_dir / BEFORE_AFTER_JSON).read_text())
        cleaned = comparison.get("data", {}).get("cleaned")
        if cleaned and (Path(cleaned) / CLEANING_CSV).exists():
            parts.clean = Path(cleaned)
        if comparison.get("scan_dir"):
            parts.scan = Path(comparison["scan_dir"])
    elif (run_dir / CLEANING_CSV).exists():
        parts.clean = run_dir
    elif (run_dir / SCAN_CSV).exists():
        parts.scan = run_dir
    else:
        raise DatasetError(
            f"{run_dir}: holds no scan.csv, cleaning.csv or before_after.json; point "
            "`xraydebug report` at a folder written by scan, clean or retrain"
        )
    if parts.clean is not None and parts.scan is None:
        state_path = parts.clean / CLEAN_STATE
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        scan_dir = state.get("config", {}).get("scan")
        parts.scan = Path(scan_dir) if scan_dir else None
    if parts.scan is not None and not (parts.scan / SCAN_CSV).exists():
        parts.scan = None
    return parts


# ----------------------------------------------------------------------------- scan section


def _read_scan(scan_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    table = read_scan_csv(scan_dir / SCAN_CSV)
    run_path = scan_dir / RUN_JSON
    run = json.loads(run_path.read_text()) if run_path.exists() else {}
    return table, run


def _num(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def has_detected_text(table: pd.DataFrame) -> pd.Series:
    """Boolean per row: the text detector found at least one box (``n_boxes`` > 0; empty or
    unparsable counts as no text). Works on ``scan.csv`` and ``cleaning.csv`` tables."""
    return pd.to_numeric(table["n_boxes"], errors="coerce").fillna(0) > 0


def _by_source(ok: pd.DataFrame) -> list[dict[str, Any]]:
    """Per source: images, with text, flagged, and flagged counts by label."""
    rows = []
    for source, group in ok.groupby(ok["source"].replace("", "(none)"), sort=True):
        flagged = group[group["flagged"] == "true"]
        with_text = int(has_detected_text(group).sum())
        rows.append(
            {
                "source": source,
                "n": len(group),
                "with_text": with_text,
                "flagged": len(flagged),
                "share": len(flagged) / len(group) if len(group) else 0.0,
                "by_label": ", ".join(
                    f"{label} {count}"
                    for label, count in flagged["label"].value_counts().sort_index().items()
                )
                or "–",
            }
        )
    return rows


def _text_vs_prediction(
    ok: pd.DataFrame, classes: list[str], multilabel: bool = False
) -> list[dict[str, Any]]:
    """Share of each predicted class (multi-label: of the images called each finding) among
    images with and without detected text."""
    has_text = has_detected_text(ok)
    rows = []
    for name, part in (("with detected text", ok[has_text]), ("without text", ok[~has_text])):
        if multilabel:
            counts = pd.Series(_per_finding_counts(part, "pred", classes))
        else:
            counts = part["pred"].value_counts()
        rows.append(
            {
                "group": name,
                "n": len(part),
                "shares": [(counts.get(c, 0) / len(part)) if len(part) else 0.0 for c in classes],
            }
        )
    return rows


def _text_confusions(ok: pd.DataFrame, classes: list[str]) -> list[dict[str, Any]]:
    """Confusion matrices (data URIs) of the scanned images with and without detected text."""
    known = ok[ok["label"].isin(classes) & ok["pred"].isin(classes)]
    has_text = has_detected_text(known)
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for name, part in (("with detected text", known[has_text]), ("without text", known[~has_text])):
        if part.empty:
            continue
        labels = part["label"].map(index).to_numpy(dtype=np.int64)
        preds = part["pred"].map(index).to_numpy(dtype=np.int64)
        matrix = confusion_matrix(labels, preds, len(classes))
        out.append(
            {
                "name": name,
                "n": len(part),
                "uri": figures.confusion_uri(matrix, classes, f"scanned images {name}"),
            }
        )
    return out


def _per_finding_counts(table: pd.DataFrame, column: str, names: list[str]) -> dict[str, int]:
    """Per name: the rows whose ``column`` (findings joined by ``|``) includes it."""
    counts = findings_matrix(table[column], names).sum(axis=0)
    return {name: int(n) for name, n in zip(names, counts, strict=True)}


def _scan_summary(table: pd.DataFrame, run: dict[str, Any]) -> dict[str, Any]:
    """The scan part of the report. ``scan.csv`` may hold several rows (targets) per image:
    image counts count each image once (flagged when any of its rows is); the table by class
    (multi-label: by finding) counts rows."""
    ok_rows = table[table["status"] == "ok"]
    flagged_rows = ok_rows[ok_rows["flagged"] == "true"]
    images = table.drop_duplicates("path")
    flagged = flagged_rows.drop_duplicates("path")
    ok = ok_rows.drop_duplicates("path")
    ok = ok.assign(flagged=np.where(ok["path"].isin(flagged["path"]), "true", "false"))
    errors = images[images["status"] != "ok"]
    measured = ok[ok["n_boxes"] != ""]
    classes = list(run.get("classes") or sorted(ok["label"].unique()))
    multilabel = bool(run.get("multilabel"))
    with_text = int(has_detected_text(measured).sum())
    config = run.get("config", {})
    if multilabel:
        by_label = _per_finding_counts(flagged, "label", classes)
    else:
        by_label = flagged["label"].value_counts().reindex(classes, fill_value=0).to_dict()
    return {
        "n": len(images),
        "n_ok": len(ok),
        "n_errors": len(errors),
        "n_measured": len(measured),
        "n_with_text": with_text,
        "n_flagged": len(flagged),
        "flagged_by_label": by_label,
        "flagged_by_target": flagged_rows["target"]
        .value_counts()
        .reindex(classes, fill_value=0)
        .to_dict(),
        "by_source": _by_source(ok),
        "text_vs_pred": _text_vs_prediction(measured, classes, multilabel),
        "confusions": [] if multilabel else _text_confusions(measured, classes),
        "classes": classes,
        "multilabel": multilabel,
        "noun": "finding" if multilabel else "class",
        "errors": errors[["path", "error"]].to_dict("records"),
        # explanation quality over every explained target, not one per image
        "deletion_auc": pd.to_numeric(ok_rows["deletion_auc"], errors="coerce").mean(),
        "insertion_auc": pd.to_numeric(ok_rows["insertion_auc"], errors="coerce").mean(),
        "run": run,
        "config": config,
        "method": _describe_method(run),
        "rule": config.get("flags") or {},
        "removal": _removal(config),
    }


def _removal(config: dict[str, Any]) -> dict[str, str]:
    """How the scan removed evidence, in words: ``operator`` (blur for scans from before the
    option) and ``rest`` (what the reveal test did to everything but the text)."""
    removal = config.get("removal") or {"operator": "blur"}
    operator = removal.get("operator", "blur")
    rest = {"blur": "blurred", "grey": "greyed out", "noise": "replaced by noise"}
    inpainter = removal.get("inpainter", "telea")
    return {
        "operator": operator,
        "summary": removal.get("summary", "Gaussian blur of the image"),
        "rest": rest.get(operator, f"inpainted by {inpainter}"),
        "inpainter": inpainter,
    }


def _describe_method(run: dict[str, Any]) -> str:
    """How the scan explained: method, preset, settings and cost per image, in words."""
    config = run.get("config", {})
    saliency = run.get("saliency") or {"method": config.get("method", "igospp")}
    text = describe_saliency(saliency)
    if not saliency.get("preset"):
        settings = saliency.get("settings") or {}
        text += f", mask {settings.get('mask_size', '?')}" if "mask_size" in settings else ""
    text += f"; removed evidence: {_removal(config)['summary']}"
    cost = run.get("cost_per_image")
    if cost:
        text += (
            f"; {cost['explain_seconds']:.2f} s and {cost['forward_images']:.0f} forward / "
            f"{cost['backward_images']:.0f} backward model passes per image"
        )
    return text


def _patient_ids(data_root: Path | None, classes: tuple[str, ...]) -> dict[str, str]:
    if data_root is None or not data_root.is_dir():
        return {}
    try:
        index = load_index(data_root, classes=classes, uncertain=LABELS_UNUSED)
    except (DatasetError, ValueError):
        return {}
    return {r.path: r.patient_id or "" for r in index.records}


def _inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refused (:class:`ImageReadError`, one line) when it resolves outside
    ``root``: run folders are data a user may have edited or received, and whatever the report
    reads ends up in an HTML file people e-mail."""
    try:
        inside = resolves_inside(root, relative)
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise ImageReadError(f"{what} {relative!r} cannot be resolved ({exc})") from None
    if not inside:
        raise ImageReadError(f"{what} {relative!r} resolves outside {root} (refused)")
    return root / relative


def _mask_saliency(scan_dir: Path, mask_file: str) -> np.ndarray | None:
    """Insertion saliency ``1 - M_ins`` (s, s) float32 (``1 - M_del`` without an insertion mask);
    raises :class:`ImageReadError` for a mask file outside ``scan_dir``."""
    if not mask_file:
        return None
    path = _inside(scan_dir, mask_file, "mask file")
    if not path.exists():
        return None
    with np.load(path) as archive:
        key = "insertion" if "insertion" in archive.files else "deletion"
        return 1.0 - archive[key].astype(np.float32)


def _case(
    row: dict[str, Any],
    rank: int,
    scan_dir: Path,
    data_root: Path | None,
    clean_root: Path | None,
    prep: Preprocessing | None,
    patient_ids: dict[str, str],
    config: ReportConfig,
) -> dict[str, Any]:
    """One gallery card: pictures (data URIs or None with a reason) and its numbers."""
    boxes = json.loads(row["boxes"]) if row.get("boxes") else []
    case: dict[str, Any] = {
        "rank": rank,
        "path": row["path"],
        "label": row["label"],
        "pred": row["pred"],
        "prob": _num(row["prob"]),
        "target": row.get("target") or row["pred"],
        "mass": _num(row["mass_in_text"]),
        "area": _num(row["text_area"]),
        "reveal": _num(row["text_reveal_prob"], float("nan")),
        "removed": _num(row.get("text_removed_prob", ""), float("nan")),
        "deletion_auc": _num(row["deletion_auc"], float("nan")),
        "insertion_auc": _num(row["insertion_auc"], float("nan")),
        "source": row.get("source") or "–",
        "n_boxes": len(boxes),
        "n_second_look": len(json.loads(row.get("second_look_boxes") or "[]")),
        "patient": patient_ids.get(row["path"], "unknown") if config.show_ids else None,
        "original": None,
        "overlay": None,
        "cleaned": None,
        "missing": [],
    }
    try:
        if data_root is None:
            raise ImageReadError("the scanned dataset's location is not recorded")
        gray, _meta = read_image(_inside(data_root, row["path"], "image path"))
    except (ImageReadError, OSError) as exc:
        case["missing"].append(f"original not available: {exc}")
        return case
    scale = figures.thumbnail_scale(gray.shape, config.thumb_px)
    small = figures.thumbnail(gray, config.thumb_px)
    case["original"] = figures.jpeg_uri(
        figures.draw_boxes(small, boxes, scale), config.jpeg_quality
    )
    try:
        saliency = _mask_saliency(scan_dir, row.get("mask_file", ""))
    except ImageReadError as exc:
        saliency = None
        case["missing"].append(f"saliency not shown: {exc}")
    if saliency is not None:
        crop = prep.crop_rows(gray.shape[0]) if prep is not None else 0
        full = saliency_to_original(saliency, gray.shape, crop)
        overlay = figures.draw_boxes(figures.saliency_overlay(small, full), boxes, scale)
        case["overlay"] = figures.jpeg_uri(overlay, config.jpeg_quality)
    elif not any(m.startswith("saliency") for m in case["missing"]):
        case["missing"].append("saliency mask file not found")
    if clean_root is not None:
        try:
            cleaned, _ = read_image(_inside(clean_root, row["path"], "image path"))
            case["cleaned"] = figures.jpeg_uri(
                figures.thumbnail(cleaned, config.thumb_px), config.jpeg_quality
            )
        except (ImageReadError, OSError) as exc:
            case["missing"].append(f"cleaned image not available: {exc}")
    return case


def _gallery(
    table: pd.DataFrame,
    run: dict[str, Any],
    scan_dir: Path,
    clean_root: Path | None,
    config: ReportConfig,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(cards with pictures, the remaining flagged rows) sorted by mass_in_text."""
    flagged = table[(table["status"] == "ok") & (table["flagged"] == "true")].copy()
    flagged["_mass"] = pd.to_numeric(flagged["mass_in_text"], errors="coerce").fillna(0.0)
    flagged = flagged.sort_values(["_mass", "path"], ascending=[False, True])
    rows = flagged.to_dict("records")
    data_root = Path(run["data"]) if run.get("data") else None
    prep = Preprocessing.from_dict(run["preprocessing"]) if run.get("preprocessing") else None
    classes = tuple(run.get("classes") or ())
    ids = _patient_ids(data_root, classes) if config.show_ids and classes else {}
    shown = [
        _case(row, rank, scan_dir, data_root, clean_root, prep, ids, config)
        for rank, row in enumerate(rows[: config.max_gallery], 1)
    ]
    rest = [
        {
            "rank": rank,
            "path": row["path"],
            "label": row["label"],
            "pred": row["pred"],
            "mass": row["_mass"],
            "area": _num(row["text_area"]),
            "reveal": _num(row["text_reveal_prob"], float("nan")),
            "removed": _num(row.get("text_removed_prob", ""), float("nan")),
            "source": row.get("source") or "–",
        }
        for rank, row in enumerate(rows[config.max_gallery :], config.max_gallery + 1)
    ]
    return shown, rest


# ----------------------------------------------------------------------------- clean / retrain


def _inpainting_words(inpaint: dict[str, Any]) -> str:
    """How a cleaning removed text, for a reader: the inpainter's description and settings."""
    from xraydebug.inpaint import inpainter_class

    name = inpaint.get("inpainter", "telea")  # cleanings from before the registry: Telea
    try:
        words = f"{name}: {inpainter_class(name).description}"
    except ValueError:
        words = name
    if name in ("telea", "ns"):
        words += f", radius {inpaint.get('radius', '?')} px"
    return f"{words}, boxes grown by {inpaint.get('dilate', '?')} px"


def _clean_summary(clean_dir: Path) -> dict[str, Any]:
    table = read_table(clean_dir / CLEANING_CSV)
    state_path = clean_dir / CLEAN_STATE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    changed = table["changed"].str.lower() == "true"
    errors = table[table["status"] != "ok"]
    remains = table.get("text_remains", pd.Series("", index=table.index)).str.lower() == "true"
    passes = pd.to_numeric(table.get("passes", pd.Series(0, index=table.index)), errors="coerce")
    return {
        "remaining": table[remains][["path", "remaining_boxes"]].to_dict("records"),
        "n_second_pass": int((passes.fillna(0) >= 2).sum()),
        "dir": str(clean_dir),
        "source": state.get("data"),
        "config": state.get("config", {}),
        "method": _inpainting_words(state.get("config", {}).get("inpaint", {})),
        "n": len(table),
        "n_changed": int(changed.sum()),
        "n_copied": int((~changed & (table["status"] == "ok")).sum()),
        "errors": errors[["path", "error"]].to_dict("records"),
    }


def _retrain_summary(retrain_dir: Path) -> dict[str, Any]:
    """The retrain part of the report. A multi-label comparison (``multilabel`` in
    ``before_after.json``) has per-finding AUROC and recall (table and plot), and no
    confusion matrices."""
    comparison = json.loads((retrain_dir / BEFORE_AFTER_JSON).read_text())
    classes = comparison["classes"]
    multilabel = bool(comparison.get("multilabel"))
    sets = []
    for name, result in comparison["test_sets"].items():
        if multilabel:
            plot = figures.before_after_uri(
                result,
                classes,
                f"{name} test set: AUROC and recall per finding (95% CI)",
                metrics=("auroc", "recall"),
                per="per_finding",
            )
            sets.append({"name": name, "result": result, "plot": plot})
            continue
        sets.append(
            {
                "name": name,
                "result": result,
                "plot": figures.before_after_uri(
                    result, classes, f"{name} test set: precision and recall (95% CI)"
                ),
                "cm_before": figures.confusion_uri(
                    result["before"]["confusion_matrix"], classes, f"before, {name} test set"
                ),
                "cm_after": figures.confusion_uri(
                    result["after"]["confusion_matrix"], classes, f"after, {name} test set"
                ),
            }
        )
    sheets = {}
    for side in ("before", "after"):
        sheet = retrain_dir / "text_sensitivity" / side / EXAMPLES_FILE
        image = cv2.imread(str(sheet), cv2.IMREAD_GRAYSCALE) if sheet.exists() else None
        if image is not None:
            sheets[side] = figures.jpeg_uri(image)
    return {
        "comparison": comparison,
        "classes": classes,
        "sets": sets,
        "sheets": sheets,
        "multilabel": multilabel,
        "noun": "finding" if multilabel else "class",
        "imported": comparison.get("baseline", {}).get("imported"),
    }


# ----------------------------------------------------------------------------- rendering


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and value != value)


def _format(value: Any, spec: str, scale: float = 1.0) -> str:
    """``value`` formatted with ``spec`` (after ``* scale``); "–" when missing or NaN."""
    return "–" if _missing(value) else format(float(value) * scale, spec)


def _shown_path(path: Path | str | None, show_paths: bool) -> str:
    """How the report names ``path``: in full with ``show_paths``, else by its last part (the
    dataset folder's or the model file's name); "" for ``None``."""
    if path is None:
        return ""
    return str(path) if show_paths else Path(path).name or str(path)


def _hide_paths(value: Any) -> Any:
    """``value`` (recorded settings: dicts, lists, strings) with every absolute path
    replaced by its last part; relative paths and other values as they are."""
    if isinstance(value, dict):
        return {key: _hide_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_hide_paths(item) for item in value]
    if isinstance(value, str) and Path(value).is_absolute():
        return _shown_path(value, show_paths=False)
    return value


# an absolute POSIX path in a message: a "/" that starts a word (not "a/b", "1/2", "+/-" or
# a URL's "//"), up to the next space or quote
_ABSOLUTE_PATH = re.compile(r"(?<![\w./:+-])/[\w.][^\s'\"]*")


def _hide_roots(message: str, roots: list[Path]) -> str:
    """``message`` with each folder of ``roots`` written by its name (longest first, so a
    folder inside another keeps its own name, and a file in one keeps its path below it),
    then any other absolute path (a model file, say) by its last part."""
    for root in sorted(roots, key=lambda r: len(str(r)), reverse=True):
        message = message.replace(str(root), _shown_path(root, show_paths=False))
    return _ABSOLUTE_PATH.sub(lambda m: PurePosixPath(m.group()).name or m.group(), message)


def _report_roots(
    run_dir: Path, parts: RunParts, scan: dict[str, Any] | None, clean: dict[str, Any] | None
) -> list[Path]:
    """The folders whose locations messages may carry: the run's, the dataset's, the
    cleaned dataset's and its source's."""
    recorded = [
        (scan or {}).get("run", {}).get("data"),
        (clean or {}).get("source"),
    ]
    folders = [run_dir, parts.scan, parts.clean, parts.retrain, *recorded]
    return [Path(folder) for folder in folders if folder]


def _environment(config: ReportConfig, roots: list[Path]) -> jinja2.Environment:
    """The template environment; the ``path``, ``settings`` and ``message`` filters show
    locations only with ``config.show_paths``."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("xraydebug.audit", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v, d=0: _format(v, f".{d}f", 100.0) + ("" if _missing(v) else "%")
    env.filters["num"] = lambda v, d=3: _format(v, f".{d}f")
    env.filters["signed"] = lambda v, d=3: _format(v, f"+.{d}f")
    env.filters["metric"] = lambda name: METRIC_NAMES.get(name, name)
    show = config.show_paths
    env.filters["path"] = lambda path: _shown_path(path, show)
    env.filters["settings"] = lambda value: value if show else _hide_paths(value)
    env.filters["message"] = lambda text: text if show else _hide_roots(str(text), roots)
    return env


def build_report(
    run_dir: Path | str, out: Path | str | None = None, *, config: ReportConfig = ReportConfig()
) -> Path:
    """Write the audit report of ``run_dir`` to ``out`` (default ``run_dir/report.html``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DatasetError(f"{run_dir}: no such run folder")
    parts = find_parts(run_dir)
    out = Path(out) if out is not None else run_dir / REPORT_NAME
    scan = clean = retrain = None
    cards: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    if parts.scan is not None:
        table, run = _read_scan(parts.scan)
        scan = _scan_summary(table, run)
        cards, rest = _gallery(table, run, parts.scan, parts.clean, config)
    if parts.clean is not None:
        clean = _clean_summary(parts.clean)
    if parts.retrain is not None:
        retrain = _retrain_summary(parts.retrain)
    stage = "retrain" if retrain else "clean" if clean else "scan"
    report_id = hashlib.sha256(f"{run_dir.resolve()}|{stage}".encode()).hexdigest()[:12]
    roots = _report_roots(run_dir, parts, scan, clean)
    html = (
        _environment(config, roots)
        .get_template("report.html.j2")
        .render(
            title=f"xraydebug audit report: {stage}",
            stage=stage,
            generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            version=version("xraydebug"),
            run_dir=str(run_dir),
            parts=parts,
            scan=scan,
            clean=clean,
            retrain=retrain,
            cards=cards,
            rest=rest,
            legend=figures.colorbar_uri() if cards else None,
            config=config,
            report_id=report_id,
        )
    )
    return atomic_write_text(out, html)
