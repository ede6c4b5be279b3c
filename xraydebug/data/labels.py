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
