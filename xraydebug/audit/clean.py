"""``xraydebug clean --inpaint``: write a NEW dataset with burned-in text inpainted.

The output has the same layout and label files as the input. Images with text boxes are
inpainted at their original resolution and bit depth; all others are copied byte-identical.
DICOM inputs become derived DICOM objects. ``cleaning.csv`` lists ``path,n_boxes,boxes,changed``
(plus ``status,error`` and the re-check: ``text_remains``, ``remaining_boxes``, ``passes``).
Every inpainted film is detected again; where text is still found, a second pass inpaints the
union of the first boxes and the remaining ones with twice the dilation, and checks once more.
Output files are written atomically; a rerun with the same settings
resumes; the input dataset is never written.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xraydebug.audit.files import CLEAN_STATE, CLEANING_CSV, SCAN_CSV
from xraydebug.audit.report import build_report
from xraydebug.audit.scan_table import read_scan_csv
from xraydebug.data.imageio import ImageMeta, read_image, read_native
from xraydebug.data.layouts import load_index
from xraydebug.data.records import ImageRecord
from xraydebug.device import machine_info
from xraydebug.errors import DatasetError, ImageReadError
from xraydebug.executor import (
    BatchResult,
    Executor,
    ExecutorConfig,
    open_executor,
    readable_root,
    run_stage,
)
from xraydebug.fsutil import atomic_open, atomic_write_bytes, atomic_write_json, ensure_outside
from xraydebug.text import TextDetectConfig, detect_text
from xraydebug.text.detect import (
    detect_in_windows,
    detector_device,
    load_detector,
    merge_boxes,
    resolve_detector,
)
from xraydebug.text.inpaint import encode_like, inpaint_boxes

CLEANING_COLUMNS = [
    "path",
    "n_boxes",
    "boxes",
    "changed",
    "status",
    "error",
    "text_remains",
    "remaining_boxes",
    "passes",
]


@dataclass(frozen=True)
class CleanConfig:
    """Settings of one cleaning run (written to ``OUT/.xraydebug-clean.json``)."""

    dilate: int = 3
    radius: float = 10.0
    only_flagged: bool = False
    scan: str | None = None  # scan folder whose boxes are reused; None = detect here
    detector: str = "auto"  # see xraydebug.text.DETECTORS
    long_side: int = 1280  # craft-global only
    device: str = "auto"
    precision: str = "fp32"  # CRAFT precision: fp32 | bf16 | auto (see TextDetectConfig)
    second_pass: bool = True  # inpaint again where the re-check still finds text
    batch_size: int = 8  # images handed to a worker at a time

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("device", "batch_size")}

    def detect_config(self) -> TextDetectConfig:
        return TextDetectConfig(
            detector=self.detector,
            long_side=self.long_side,
            device=self.device,
            precision=self.precision,
        )


@dataclass
class CleanResult:
    out: Path
    table: pd.DataFrame
    n_changed: int
    n_copied: int
    dry_run: bool = False
    errors: list[str] = field(default_factory=list)
    report: Path | None = None


def _boxes_from_scan(scan_dir: Path, only_flagged: bool) -> dict[str, list[list[int]]]:
    csv_path = scan_dir / SCAN_CSV
    if not csv_path.exists():
        raise DatasetError(f"{scan_dir}: no scan.csv (run `xraydebug scan` first)")
    table = read_scan_csv(csv_path)
    if (table["boxes"] == "").all() and (table["status"] == "ok").any():
        raise DatasetError(
            f"{csv_path}: has no text boxes (scanned before text detection); rerun the scan "
            "or clean without --scan to detect text now"
        )
    boxes = {}
    for row in table.itertuples():
        if row.status != "ok":
            continue
        if only_flagged and row.flagged != "true":
            boxes[row.path] = []
            continue
        boxes[row.path] = json.loads(row.boxes) if row.boxes else []
    return boxes


def _read_gray(path: Path) -> np.ndarray | str:
    """The display image of ``path`` (float (H, W) in [0, 1]), or the reason it is unreadable."""
    try:
        return read_image(path)[0]
    except ImageReadError as exc:
        return str(exc)


def _decoded_ahead(
    paths: list[Path], ahead: int = 8, workers: int = 2
) -> Iterator[np.ndarray | str]:
    """:func:`_read_gray` of each path, in order, decoded by worker threads up to ``ahead``
    images before the detector needs them (the decoders release the GIL)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future] = deque(pool.submit(_read_gray, p) for p in paths[:ahead])
        for path in paths[ahead:]:
            yield pending.popleft().result()
            pending.append(pool.submit(_read_gray, path))
        while pending:
            yield pending.popleft().result()


def _prepare_out(data: Path, out: Path, config: CleanConfig, force: bool) -> None:
    ensure_outside(out, data, "--out")
    if data.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"--out {out} contains the input dataset {data}; choose another")
    state = out / CLEAN_STATE
    if out.exists() and any(out.iterdir()):
        resumable = state.exists() and json.loads(state.read_text()).get("config") == (
            json.loads(json.dumps(config.identity()))
        )
        if not resumable and not force:
            raise DatasetError(
                f"{out}: exists and is not empty; choose a new --out or pass --force to replace it"
            )
        if not resumable and force:
            shutil.rmtree(out)


def _copy_label_files(data: Path, out: Path, layout: str, manifest: Path | None) -> None:
    names = [p for p in data.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".json")]
    if layout != "covidx":
        names = [p for p in names if p.name == "ground_truth.json"]
    for path in names:
        atomic_write_bytes(out / path.name, path.read_bytes())
    if manifest is not None:
        atomic_write_bytes(out / Path(manifest).name, Path(manifest).read_bytes())


def write_derived_dicom(
    source: Path, pixels: np.ndarray, boxes: list[list[int]], text_remains: bool | None
) -> bytes:
    """A derived DICOM: new SOP Instance / Series UIDs, ImageType DERIVED, provenance.

    ``BurnedInAnnotation`` becomes ``NO`` only when ``text_remains`` is False (a re-detection
    found nothing); otherwise it stays ``YES``.
    """
    import io

    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.dcmread(source)
    original_sop = ds.SOPInstanceUID
    original_class = ds.SOPClassUID
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.PixelData = np.ascontiguousarray(pixels.astype(ds.pixel_array.dtype)).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    new_sop = generate_uid()
    ds.SOPInstanceUID = new_sop
    ds.file_meta.MediaStorageSOPInstanceUID = new_sop
    ds.SeriesInstanceUID = generate_uid()
    image_type = list(ds.get("ImageType", ["ORIGINAL", "PRIMARY"]))
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]
    ds.DerivationDescription = (
        f"xraydebug: burned-in text removed by Telea inpainting of {len(boxes)} text box(es)"
    )[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = original_class
    reference.ReferencedSOPInstanceUID = original_sop
    ds.SourceImageSequence = [reference]
    ds.BurnedInAnnotation = "NO" if text_remains is False else "YES"
    now = dt.datetime.now()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Cleaned:
    encoded: bytes  # the cleaned file
    remaining: list[list[int]]
    passes: int


def _clean_one(source: Path, boxes: list[list[int]], config: CleanConfig) -> _Cleaned:
    """Inpaint ``boxes`` (non-empty) of ``source`` and re-check the film for text; the cleaned
    file is returned as bytes in the source's format."""
    pixels, meta = read_native(source)
    cleaned = inpaint_boxes(pixels, boxes, config.dilate, config.radius)
    remaining = _remaining_text(cleaned, meta, boxes, config)
    passes = 1
    if remaining and config.second_pass:
        wider = merge_boxes([*boxes, *remaining])
        cleaned = inpaint_boxes(pixels, wider, 2 * config.dilate, config.radius)
        remaining = _remaining_text(cleaned, meta, wider, config)
        passes = 2
    if meta.format == "DICOM":
        encoded = write_derived_dicom(source, cleaned, boxes, bool(remaining))
    else:
        encoded = encode_like(cleaned, meta)
    return _Cleaned(encoded, remaining, passes)


def display_gray(pixels: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Stored pixels -> float32 (H, W) in [0, 1] as a reader sees them: colour to gray, 8/16-bit
    scaled by their range (DICOM: min-max of the stored values), MONOCHROME1 inverted."""
    gray = pixels.astype(np.float32)
    if gray.ndim == 3:
        gray = gray[..., :3].mean(axis=2) if gray.shape[2] >= 3 else gray[..., 0]
    if meta.format != "DICOM" and pixels.dtype in (np.uint8, np.uint16):
        gray /= float(np.iinfo(pixels.dtype).max)
    else:
        lo, hi = float(gray.min()), float(gray.max())
        gray = (gray - lo) / (hi - lo) if hi > lo else np.zeros_like(gray)
    if meta.photometric == "MONOCHROME1":
        gray = 1.0 - gray
    return np.clip(gray, 0.0, 1.0)


def _remaining_text(
    cleaned: np.ndarray, meta: ImageMeta, boxes: list[list[int]], config: CleanConfig
) -> list[list[int]]:
    """Text boxes the detector still finds on a cleaned film (display orientation), searched
    around each inpainted box (grown by its own size and 16 px): where the first pass found
    nothing, a second search of the same pixels would find nothing new."""
    gray = display_gray(cleaned, meta)
    height, width = gray.shape
    windows = []
    for x0, y0, x1, y1 in boxes:
        grow = max(x1 - x0, y1 - y0) + 16
        windows.append(
            [max(0, x0 - grow), max(0, y0 - grow), min(width, x1 + grow), min(height, y1 + grow)]
        )
    return detect_in_windows(gray, merge_boxes(windows), config.detect_config())


def _row(path: str, **values: Any) -> dict[str, Any]:
    row = {
        "path": path,
        "n_boxes": 0,
        "boxes": "[]",
        "changed": False,
        "status": "ok",
        "error": "",
        "text_remains": "",
        "remaining_boxes": "",
        "passes": 0,
    }
    row.update(values)
    return row


@dataclass(frozen=True)
class CleanTask:
    """One image to clean: its record and its text boxes (None: detect them on the worker)."""

    record: ImageRecord
    boxes: list[list[int]] | None


@dataclass(frozen=True)
class CleanStep:
    """The clean stage's worker step: a batch of :class:`CleanTask` -> ``cleaning.csv`` rows
    and the inpainted files (bytes; unchanged images are copied by the driver)."""

    root: str
    config: CleanConfig
    dry_run: bool = False

    @property
    def device(self) -> str:
        return detector_device(self.config.detect_config())

    def build(self) -> Callable[[list[CleanTask]], BatchResult]:
        root = readable_root(self.root)
        config = self.config
        detect_config = config.detect_config()
        load_detector(detect_config)  # detection and the re-check after inpainting

        def step(tasks: list[CleanTask]) -> BatchResult:
            result = BatchResult([])
            decoded = _decoded_ahead([root / t.record.path for t in tasks if t.boxes is None])
            for task in tasks:
                path = task.record.path
                boxes: list[list[int]] | str
                if task.boxes is not None:
                    boxes = task.boxes
                else:
                    image = next(decoded)
                    boxes = (
                        image if isinstance(image, str) else detect_text([image], detect_config)[0]
                    )
                if isinstance(boxes, str):
                    result.rows.append(_row(path, status="error", error=boxes))
                    result.errors.append(boxes)
                    continue
                row = _row(path, n_boxes=len(boxes), boxes=json.dumps(boxes), changed=bool(boxes))
                if boxes and not self.dry_run:
                    try:
                        cleaned = _clean_one(root / path, boxes, config)
                    except ImageReadError as exc:
                        row.update(status="error", error=str(exc), changed=False)
                        result.errors.append(str(exc))
                    else:
                        result.files[path] = cleaned.encoded
                        row.update(
                            passes=cleaned.passes,
                            text_remains=bool(cleaned.remaining),
                            remaining_boxes=json.dumps(cleaned.remaining),
                        )
                result.rows.append(row)
            return result

        return step


def clean_dataset(
    data: Path | str,
    out: Path | str | None = None,
    config: CleanConfig = CleanConfig(),
    manifest: Path | str | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
    report: bool = True,
    executor: ExecutorConfig | Executor | None = None,
) -> CleanResult:
    """Inpaint text boxes into a new dataset ``out`` (default ``<data>-clean``).

    With ``report`` (and not ``dry_run``) the audit report ``out/report.html`` is written.
    ``executor``: where the batches run (:mod:`xraydebug.executor`; default this process);
    only this process writes into ``out``.
    """
    data = Path(data)
    out = Path(out) if out is not None else data.with_name(data.name + "-clean")
    index = load_index(data, manifest)
    records = sorted(index.usable(), key=lambda r: r.path)
    if not records:
        raise DatasetError(f"{data}: no readable labelled images to clean")
    scan_boxes = _boxes_from_scan(Path(config.scan), config.only_flagged) if config.scan else None
    if config.only_flagged and scan_boxes is None:
        raise ValueError("--only-flagged needs --scan DIR (flags come from a scan)")
    if not dry_run:
        _prepare_out(data, out, config, force)
        atomic_write_json(
            out / CLEAN_STATE,
            {
                "config": config.identity(),
                "data": str(data.resolve()),
                "detector": resolve_detector(config.detector),
                "machine": machine_info(),
            },
        )
        _copy_label_files(data, out, index.layout, Path(manifest) if manifest else None)
    done: dict[str, dict[str, Any]] = {}
    csv_path = out / CLEANING_CSV
    if csv_path.exists() and not dry_run:
        previous = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        done = {r["path"]: r for r in previous.to_dict("records") if r["status"] == "ok"}
    rows: dict[str, dict[str, Any]] = dict(done)
    errors: list[str] = []
    tasks = []
    for rec in records:
        if rec.path in done:
            continue
        if scan_boxes is not None and (rec.path in scan_boxes or config.only_flagged):
            tasks.append(CleanTask(rec, scan_boxes.get(rec.path, [])))
        else:  # no scan, or an image the scan did not cover (another shard, --limit)
            tasks.append(CleanTask(rec, None))

    def on_result(batch: list[CleanTask], result: BatchResult) -> None:
        for row in result.rows:
            rows[row["path"]] = row
            unchanged = row["status"] == "ok" and not row["changed"]
            if unchanged and not dry_run:  # byte-identical copy, made here: no transfer
                atomic_write_bytes(out / row["path"], (data / row["path"]).read_bytes())
        errors.extend(result.errors)
        if not dry_run:
            _write_csv(csv_path, rows)

    def on_failure(batch: list[CleanTask], message: str) -> None:
        for task in batch:
            rows[task.record.path] = _row(task.record.path, status="error", error=message)
            errors.append(f"{data / task.record.path}: {message}")
        if not dry_run:
            _write_csv(csv_path, rows)

    with open_executor(executor) as runner:
        spec = CleanStep(str(data.resolve()), config, dry_run)
        run_stage(
            runner,
            spec,
            tasks,
            config.batch_size,
            None if dry_run else out,
            on_result,
            on_failure,
            progress,
        )
    table = pd.DataFrame(list(rows.values()), columns=CLEANING_COLUMNS).sort_values("path")
    if not dry_run:
        _write_csv(csv_path, rows)
    changed = table["changed"].astype(str).str.lower() == "true"
    n_changed = int(changed.sum())
    report_path = None
    if report and not dry_run:
        report_path = build_report(out)
    return CleanResult(out, table, n_changed, len(table) - n_changed, dry_run, errors, report_path)


def _write_csv(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    table = pd.DataFrame(list(rows.values()), columns=CLEANING_COLUMNS).sort_values("path")
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        table.to_csv(handle, index=False)
