"""Patient-grouped train/validation split: no patient ever appears on both sides."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from xraydebug.data.records import ImageRecord


def grouped_split(
    records: list[ImageRecord], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split ``records`` into (train, val) by patient, stratified by each patient's label.

    Patients (``record.group``) are shuffled per class with ``seed`` and whole patients are moved
    to validation until each class holds about ``val_fraction`` of its images there (at least one
    patient per class when the class has two or more patients). Returns new lists; records of
    the validation side get ``split='val'``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for rec in records:
        groups[rec.group].append(rec)
    by_class: dict[str, list[str]] = defaultdict(list)
    for group, recs in sorted(groups.items()):
        labels = sorted({r.label or "" for r in recs})
        by_class[labels[0] if len(labels) == 1 else "|".join(labels)].append(group)
    rng = np.random.default_rng(seed)
    val_groups: set[str] = set()
    for _label, members in sorted(by_class.items()):
        order = [members[i] for i in rng.permutation(len(members))]
        n_images = sum(len(groups[g]) for g in members)
        target = val_fraction * n_images
        taken = 0
        for group in order[: max(len(order) - 1, 0)]:  # always leave a patient for training
            if taken >= target:
                break
            val_groups.add(group)
            taken += len(groups[group])
    train = [r for r in records if r.group not in val_groups]
    val = [replace(r, split="val") for r in records if r.group in val_groups]
    return train, val
