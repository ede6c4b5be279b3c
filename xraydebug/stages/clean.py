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
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from xraydebug.data.imageio import ImageMeta, read_image, read_native
from xraydebug.data.labels import LABELS_UNUSED
from xraydebug.data.layouts import load_index
from xraydebug.data.public_layouts import PUBLIC_LAYOUTS
from xraydebug.data.records import STATUS_ERROR, DatasetIndex, ImageRecord
from xraydebug.device import machine_info, resolve_device
from xraydebug.errors import DatasetError, ImageReadError
from xraydebug.executor import BatchResult, Executor, ExecutorConfig, readable_root
from xraydebug.fsutil import atomic_write_bytes, ensure_outside, file_sha256
from xraydebug.inpaint import DEFAULT_INPAINTER, Inpainter, build_inpainter, inpainter_class
from xraydebug.inpaint.boxes import inpaint_boxes
from xraydebug.runfolder import (
    CLEAN_STATE,
    CLEANING_COLUMNS,
    CLEANING_CSV,
    SCAN_CSV,
    read_scan_csv,
)
from xraydebug.stages import driver
from xraydebug.stages.options import DetectingConfig
from xraydebug.text import (
    DetectorConfig,
    TextDetector,
    detector_config,
    merge_boxes,
)
from xraydebug.text.inpaint import encode_like

__all__ = [
    "CleanConfig",
    "CleanResult",
    "CleanStage",
    "CleanStep",
    "InpaintConfig",
    "clean_dataset",
]

RECHECK_MARGIN = 16  # px added around an inpainted box (beyond its own size) for the re-check


@dataclass(frozen=True)
class InpaintConfig:
    """How text boxes are removed: each box grown by ``dilate`` px and filled by the
    ``inpainter`` of the registry (:mod:`xraydebug.inpaint`: ``telea``, ``ns``, ``fsr``,
    ``learned``); ``radius``: the ``telea``/``ns`` radius in px; ``inpainter_model``: the
    ``learned`` inpainter's checkpoint (``xraydebug inpainter train``). With ``second_pass``,
    where the re-check still finds text, the union of the first boxes and the remaining ones
    is inpainted again with twice the dilation."""

    dilate: int = 3
    radius: float = 10.0
    second_pass: bool = True
    inpainter: str = DEFAULT_INPAINTER
    inpainter_model: str | None = None

    def __post_init__(self) -> None:
        inpainter_class(self.inpainter)  # an unknown name fails here, listing the valid ones

    def build(self, device: str = "cpu") -> Inpainter:
        """The configured inpainter (not loaded), given only the settings it has."""
        return build_inpainter(
            self.inpainter, device=device, radius=self.radius, model=self.inpainter_model
        )

    def model_sha256(self) -> str | None:
        """The learned model file's hash (a retrained model is another cleaning)."""
        if self.inpainter_model is None or inpainter_class(self.inpainter).classical:
            return None
        return file_sha256(Path(self.inpainter_model))


@dataclass(frozen=True)
class CleanConfig(DetectingConfig):
    """Settings of one cleaning run (written whole to ``OUT/.xraydebug-clean.json``).

    Attributes:
        detector: the text detector's config (:func:`xraydebug.text.detector_config`); it
            finds the boxes (unless ``scan`` gives them) and re-checks every cleaned film.
        precision: the text networks' precision: ``fp32``, ``bf16`` or ``auto``.
        inpaint: how boxes are removed (:class:`InpaintConfig`).
        scan: a scan folder whose boxes are reused; None: detect here.
        only_flagged: clean only the images that scan flagged.
        batch_size: images handed to a worker at a time.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """

    groups: ClassVar[dict[str, type]] = {"inpaint": InpaintConfig}

    detector: DetectorConfig = field(default_factory=detector_config)
    precision: str = "fp32"
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)
    scan: str | None = None
    only_flagged: bool = False
    batch_size: int = 8
    device: str = "auto"

    def identity(self) -> dict[str, Any]:
        """What makes two cleanings the same (not the device or the batch size)."""
        out = self.resolved()
        del out["device"], out["batch_size"]
        out["inpaint"]["model_sha256"] = self.inpaint.model_sha256()
        return out


@dataclass
class CleanResult:
    out: Path
    table: pd.DataFrame
    n_changed: int
    n_copied: int
    dry_run: bool = False
    errors: list[str] = field(default_factory=list)


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
    boxes: dict[str, list[list[int]]] = {}
    # a scan may explain several targets of a film (one row each, the same boxes): the film
    # counts as flagged when any of its rows is
    for row in table.itertuples():
        if row.status != "ok":
            continue
        if only_flagged and row.flagged != "true":
            boxes.setdefault(row.path, [])
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


def _copy_label_files(data: Path, out: Path, layout: str, manifest: Path | None) -> None:
    """Copy what makes ``out`` the same layout as ``data``: COVIDx label files, a multi-label
    release's label/list/metadata files (NIH, CheXpert, MIMIC), the manifest, ground truth."""
    names = [p for p in data.iterdir() if p.is_file() and p.suffix.lower() in (".txt", ".json")]
    if layout != "covidx":
        names = [p for p in names if p.name == "ground_truth.json"]
    if layout in PUBLIC_LAYOUTS:
        names += PUBLIC_LAYOUTS[layout].label_files(data)
    for path in names:
        atomic_write_bytes(out / path.name, path.read_bytes())
    if manifest is not None:
        atomic_write_bytes(out / Path(manifest).name, Path(manifest).read_bytes())


def write_derived_dicom(
    source: Path,
    pixels: np.ndarray,
    boxes: list[list[int]],
    text_remains: bool | None,
    inpainter: str = DEFAULT_INPAINTER,
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
        f"xraydebug: burned-in text removed by {inpainter} inpainting of {len(boxes)} text box(es)"
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


def _clean_one(
    source: Path,
    boxes: list[list[int]],
    config: InpaintConfig,
    detector: TextDetector,
    inpainter: Inpainter,
) -> _Cleaned:
    """Inpaint ``boxes`` (non-empty) of ``source`` with ``inpainter`` and re-check the film for
    text with ``detector``; the cleaned file is returned as bytes in the source's format."""
    pixels, meta = read_native(source)
    cleaned = inpaint_boxes(pixels, boxes, config.dilate, inpainter, meta)
    remaining = _remaining_text(cleaned, meta, boxes, detector)
    passes = 1
    if remaining and config.second_pass:
        wider = merge_boxes([*boxes, *remaining])
        cleaned = inpaint_boxes(pixels, wider, 2 * config.dilate, inpainter, meta)
        remaining = _remaining_text(cleaned, meta, wider, detector)
        passes = 2
    if meta.format == "DICOM":
        encoded = write_derived_dicom(source, cleaned, boxes, bool(remaining), inpainter.name)
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
    cleaned: np.ndarray, meta: ImageMeta, boxes: list[list[int]], detector: TextDetector
) -> list[list[int]]:
    """Text boxes ``detector`` still finds on a cleaned film (display orientation), searched
    around each inpainted box (grown by its own size and 16 px): where the first pass found
    nothing, a second search of the same pixels would find nothing new."""
    gray = display_gray(cleaned, meta)
    height, width = gray.shape
    windows = []
    for x0, y0, x1, y1 in boxes:
        grow = max(x1 - x0, y1 - y0) + RECHECK_MARGIN
        windows.append(
            [max(0, x0 - grow), max(0, y0 - grow), min(width, x1 + grow), min(height, y1 + grow)]
        )
    return detector.detect_in_windows(gray, merge_boxes(windows))


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
        return self.config.step_device()

    def build(self) -> CleanWorker:
        return CleanWorker(self)


class CleanWorker:
    """One worker's detector (loaded at start: it finds boxes and re-checks cleaned films)."""

    def __init__(self, spec: CleanStep) -> None:
        self.root = readable_root(spec.root)
        self.config, self.dry_run = spec.config, spec.dry_run
        self.detector = spec.config.text_detector().load()
        self.inpainter = spec.config.inpaint.build(str(resolve_device(spec.config.device))).load()

    def _boxes(self, tasks: list[CleanTask]) -> list[list[list[int]] | str]:
        """Each task's boxes: given, detected here, or the reason its film is unreadable."""
        decoded = _decoded_ahead([self.root / t.record.path for t in tasks if t.boxes is None])
        found: list[list[list[int]] | str] = []
        for task in tasks:
            if task.boxes is not None:
                found.append(task.boxes)
                continue
            image = next(decoded)
            found.append(image if isinstance(image, str) else self.detector.detect([image])[0])
        return found

    def __call__(self, tasks: list[CleanTask]) -> BatchResult:
        result = BatchResult([])
        for task, boxes in zip(tasks, self._boxes(tasks), strict=True):
            path = task.record.path
            if isinstance(boxes, str):
                result.rows.append(_row(path, status=STATUS_ERROR, error=boxes))
                result.errors.append(boxes)
                continue
            row = _row(path, n_boxes=len(boxes), boxes=json.dumps(boxes), changed=bool(boxes))
            if boxes and not self.dry_run:
                try:
                    cleaned = _clean_one(
                        self.root / path, boxes, self.config.inpaint, self.detector, self.inpainter
                    )
                except ImageReadError as exc:
                    row.update(status=STATUS_ERROR, error=str(exc), changed=False)
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


class CleanStage(driver.Stage):
    """Cleaning, declared for :func:`xraydebug.stages.driver.run`: the output folder is a
    new dataset, the stage's alone."""

    name = "cleaning"
    table_file = CLEANING_CSV
    state_file = CLEAN_STATE
    columns = CLEANING_COLUMNS
    owns_folder = True

    def __init__(
        self,
        index: DatasetIndex,
        config: CleanConfig,
        *,
        manifest: Path | None = None,
        dry_run: bool = False,
    ) -> None:
        self.index, self.config, self.manifest, self.dry_run = index, config, manifest, dry_run
        self.scan_boxes = (
            _boxes_from_scan(Path(config.scan), config.only_flagged) if config.scan else None
        )
        if config.only_flagged and self.scan_boxes is None:
            raise ValueError("--only-flagged needs --scan DIR (flags come from a scan)")
        config.inpaint.build().load()  # a missing or unreadable model fails here, once

    def select(self) -> list[CleanTask]:
        records = self.index.select(with_errors=False)
        if not records:
            raise DatasetError(f"{self.index.root}: no readable labelled images to clean")
        scanned, only = self.scan_boxes, self.config.only_flagged
        return [  # boxes None: no scan, or an image the scan did not cover (another shard)
            CleanTask(r, scanned.get(r.path, []))
            if scanned is not None and (r.path in scanned or only)
            else CleanTask(r, None)
            for r in records
        ]

    def identity(self) -> dict[str, Any]:
        return self.config.identity()

    def record(self) -> dict[str, Any]:
        resolved = self.config.resolved()
        return {
            "config": resolved,
            "data": str(self.index.root.resolve()),
            "detector": resolved["detector"]["name"],
            "machine": machine_info(),
        }

    def prepare(self, out: Path) -> None:
        _copy_label_files(self.index.root, out, self.index.layout, self.manifest)

    def step(self) -> CleanStep:
        return CleanStep(str(self.index.root.resolve()), self.config, self.dry_run)

    def batch_size(self, device: Any) -> int:
        return self.config.batch_size

    def error_row(self, record: ImageRecord, message: str) -> dict[str, Any]:
        return _row(record.path, status=STATUS_ERROR, error=message)

    def accept(self, row: dict[str, Any], out: Path | None) -> None:
        if out is not None and row["status"] == "ok" and not row["changed"]:
            # a byte-identical copy, made here: unchanged films cross no network
            atomic_write_bytes(out / row["path"], (self.index.root / row["path"]).read_bytes())


def clean_dataset(
    data: Path | str,
    out: Path | str | None = None,
    *,
    config: CleanConfig | None = None,
    manifest: Path | str | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: driver.Progress | None = None,
    executor: ExecutorConfig | Executor | None = None,
) -> CleanResult:
    """Inpaint text boxes into a new dataset ``out`` (default ``<data>-clean``).

    ``executor``: where the batches run (:mod:`xraydebug.executor`; default this process);
    only this process writes into ``out``. ``dry_run`` writes nothing. The audit report is
    built by the caller: ``xraydebug.build_report(out)``.
    """
    data = Path(data)
    out = Path(out) if out is not None else data.with_name(data.name + "-clean")
    ensure_outside(out, data, "--out")
    if data.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"--out {out} contains the input dataset {data}; choose another")
    stage = CleanStage(
        load_index(data, manifest, uncertain=LABELS_UNUSED),  # label files are copied as they are
        config or CleanConfig(),
        manifest=Path(manifest) if manifest else None,
        dry_run=dry_run,
    )
    outcome = driver.run(
        stage, None if dry_run else out, executor=executor, progress=progress, force=force
    )
    changed = outcome.table["changed"].astype(str).str.lower() == "true"
    n_changed = int(changed.sum())
    n_copied = len(outcome.table) - n_changed
    return CleanResult(out, outcome.table, n_changed, n_copied, dry_run, outcome.errors)
