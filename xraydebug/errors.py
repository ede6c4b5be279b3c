"""Exceptions that carry a one-line, user-facing message.

The CLI prints ``str(error)`` without a traceback (unless ``--debug``) and exits 1.
"""

from __future__ import annotations


class XrayDebugError(Exception):
    """Base class: a usage or data error with a clear one-line message."""


class ImageReadError(XrayDebugError, ValueError):
    """An image file could not be read; the message names the file and the reason."""


class DatasetError(XrayDebugError, ValueError):
    """A dataset as a whole cannot be used (no layout found, no readable images, ...)."""


class CheckpointError(XrayDebugError, ValueError):
    """A checkpoint is missing, corrupted or not an xraydebug checkpoint."""
