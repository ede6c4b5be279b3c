"""Class names and label normalisation shared by every dataset reader."""

from __future__ import annotations

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


def findings_label(findings: tuple[float, ...], names: tuple[str, ...]) -> str:
    """``label`` text of a multi-label record: present findings joined by ``|``, or NO_FINDING."""
    present = [n for n, v in zip(names, findings, strict=True) if v == 1.0]
    return "|".join(present) if present else NO_FINDING
