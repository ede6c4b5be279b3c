"""Class names and label normalisation shared by every dataset reader."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_CLASSES: tuple[str, ...] = ("normal", "pneumonia", "COVID-19")

# Accepted spellings (lower-cased) -> canonical class name. COVIDx v9+ label files say
# positive/negative for the binary task; ``negative`` is mapped to normal.
_ALIASES: dict[str, str] = {
    "normal": "normal",
    "pneumonia": "pneumonia",
    "covid-19": "COVID-19",
    "covid19": "COVID-19",
    "covid": "COVID-19",
    "positive": "COVID-19",
    "negative": "normal",
}


def normalize_label(token: str) -> str | None:
    """Return the canonical class name for ``token`` (case-insensitive), or None if unknown."""
    return _ALIASES.get(token.strip().lower())


def is_label_token(token: str) -> bool:
    return normalize_label(token) is not None


NO_FINDING = "No Finding"
"""The ``label`` of a multi-label record with no finding present (NIH's spelling)."""

UNCERTAIN_POLICIES: dict[str, float] = {"zeros": 0.0, "ones": 1.0, "ignore": float("nan")}
"""CheXpert's uncertain label (-1) under each ``--uncertain`` policy (Irvin et al. 2019, U-Zeros,
U-Ones, U-Ignore). There is no default: a dataset with uncertain labels needs a stated policy."""

LABELS_UNUSED = "ignore"
"""The uncertain policy of stages that read a dataset but not its labels (text, clean, the
report's patient ids): any policy lists the same films, and none needs stating."""


NONE_PRESENT = "(none)"
"""The ``label`` of a multi-label record with no finding present where ``No Finding`` is itself
one of the findings (CheXpert's and MIMIC's first observation), so that it is never read as
that finding."""


def findings_label(findings: Sequence[float], names: Sequence[str]) -> str:
    """``label`` (or ``pred``) text of a multi-label record: the findings at 1 joined by ``|``;
    none: NO_FINDING, or NONE_PRESENT where ``No Finding`` is one of ``names``."""
    present = [n for n, v in zip(names, findings, strict=True) if v == 1.0]
    if present:
        return "|".join(present)
    return NONE_PRESENT if NO_FINDING in names else NO_FINDING


def findings_matrix(texts: Iterable[str], names: Sequence[str]) -> np.ndarray:
    """(N, C) booleans: which of ``names`` each text (findings joined by ``|``, as
    :func:`findings_label` writes them) names."""
    rows = [set(str(text).split("|")) for text in texts]
    return np.array([[n in row for n in names] for row in rows], dtype=bool).reshape(
        len(rows), len(names)
    )
