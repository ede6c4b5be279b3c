"""The record types every dataset reader produces and every later stage consumes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from xraydebug.data.labels import DEFAULT_CLASSES

STATUS_OK = "ok"
STATUS_WARNING = "warning"
STATUS_ERROR = "error"


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image of a dataset.

    ``path`` is relative to the dataset root, POSIX style (``train/P001_1.png``); it is the key
    used in every CSV the tool writes. ``status`` is ``ok``, ``warning`` (usable, but look) or
    ``error`` (skipped, with the reason in ``message``).

    Multi-label datasets (NIH, CheXpert, MIMIC) also set ``findings``: one value per finding of
    the index's ``classes``, 1.0 present, 0.0 absent, NaN unknown (left out of losses and metrics,
    e.g. CheXpert's uncertain label under ``--uncertain ignore``). ``label`` then names the present
    findings joined by ``|`` (``No Finding`` when none, as NIH's ``Finding Labels`` does;
    ``(none)`` where ``No Finding`` is itself a finding, as in CheXpert).
    """

    path: str
    split: str
    label: str | None
    source: str = ""
    patient_id: str = ""
    status: str = STATUS_OK
    message: str = ""
    findings: tuple[float, ...] | None = None

    @property
    def usable(self) -> bool:
        return self.status != STATUS_ERROR and self.label is not None

    @property
    def group(self) -> str:
        """Grouping key for patient-level splits and bootstraps (the path when no patient id)."""
        return self.patient_id or self.path

    def with_problem(self, status: str, message: str) -> ImageRecord:
        """A copy with ``status`` raised to the worse of the two and ``message`` appended."""
        order = {STATUS_OK: 0, STATUS_WARNING: 1, STATUS_ERROR: 2}
        worst = status if order[status] >= order[self.status] else self.status
        joined = f"{self.message}; {message}" if self.message else message
        return replace(self, status=worst, message=joined)


@dataclass
class DatasetIndex:
    """All records found under ``root`` by one layout reader.

    ``records`` also holds the broken entries (``status='error'``) so that reports can list them;
    use :meth:`usable` for the ones a model may read.
    """

    root: Path
    layout: str
    classes: tuple[str, ...] = DEFAULT_CLASSES
    records: list[ImageRecord] = field(default_factory=list)
    multilabel: bool = False
    """True when ``classes`` are findings (one sigmoid each) and records carry ``findings``."""

    def usable(self, splits: Iterable[str] | str | None = None) -> list[ImageRecord]:
        """Records with a known label and no error, optionally restricted to ``splits``."""
        wanted = {splits} if isinstance(splits, str) else set(splits) if splits else None
        return [r for r in self.records if r.usable and (wanted is None or r.split in wanted)]

    def select(
        self,
        *,
        split: str = "all",
        shard: tuple[int, int] = (0, 1),
        limit: int | None = None,
        with_errors: bool = True,
    ) -> list[ImageRecord]:
        """The records a per-image stage works on, sorted by path: labelled ones (and, with
        ``with_errors``, the broken ones, so that they become error rows), of ``split`` (``all``
        or names separated by commas), every n-th from the i-th of ``shard=(i, n)``, at most
        ``limit``."""
        chosen = sorted(
            (r for r in self.records if r.usable or (with_errors and r.status == STATUS_ERROR)),
            key=lambda r: r.path,
        )
        if split != "all":
            wanted = set(split.split(","))
            chosen = [r for r in chosen if r.split in wanted]
        index, count = shard
        chosen = chosen[index::count]
        return chosen[:limit] if limit is not None else chosen

    @property
    def splits(self) -> list[str]:
        order = {"train": 0, "val": 1, "test": 2}
        return sorted({r.split for r in self.records}, key=lambda s: (order.get(s, 9), s))
