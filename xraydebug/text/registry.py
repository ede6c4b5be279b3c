"""The text detectors by name: register, list, resolve, configure and build them.

``auto`` is not a detector but a choice: the first of :data:`AUTO_PREFERENCE` whose model is
installed. Detectors register themselves with :func:`register_detector`, from this package or
from outside it::

    @register_detector
    class MyDetector(TextDetector):
        name = "mine"
        description = "..."
        config_class = MyConfig
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from xraydebug.settings import UnknownSetting, set_path
from xraydebug.text.base import DetectorConfig, TextDetector

__all__ = [
    "AUTO",
    "AUTO_PREFERENCE",
    "build_detector",
    "detector_class",
    "detector_config",
    "detector_descriptions",
    "detector_names",
    "register_detector",
    "resolve_detector",
    "verifier_names",
]

AUTO = "auto"
# ``auto`` takes the first of these whose model is installed, else the last: on the first
# version of benchmarks/text_bench.py ppocr found as many markers as craft (34/35) in a tenth
# of the time
AUTO_PREFERENCE = ("ppocr", "craft")

_REGISTRY: dict[str, type[TextDetector]] = {}

D = TypeVar("D", bound=type[TextDetector])


def register_detector(cls: D) -> D:
    """Class decorator: make ``cls`` available under ``cls.name``.

    Raises:
        TypeError: ``cls`` is not a :class:`TextDetector` with a ``name``, a ``description``
            and a frozen :class:`DetectorConfig` subclass as ``config_class``.
        ValueError: the name, or the config class, is taken by another detector (a config
            class names its detector, see :func:`build_detector`).
    """
    if not (isinstance(cls, type) and issubclass(cls, TextDetector)):
        raise TypeError(f"register_detector takes a TextDetector subclass; got {cls!r}")
    for attribute in ("name", "description", "config_class"):
        if not hasattr(cls, attribute):
            raise TypeError(f"{cls.__name__} must set the class attribute {attribute!r}")
    config_class = cls.config_class
    if not (
        isinstance(config_class, type)
        and issubclass(config_class, DetectorConfig)
        and dataclasses.is_dataclass(config_class)
        and config_class.__dataclass_params__.frozen  # type: ignore[attr-defined]
    ):
        raise TypeError(
            f"{cls.__name__}.config_class must be a frozen dataclass subclassing DetectorConfig; "
            f"got {config_class!r}"
        )
    previous = _REGISTRY.get(cls.name)
    if cls.name == AUTO or (previous is not None and not _same_definition(previous, cls)):
        raise ValueError(f"text detector name {cls.name!r} is taken")
    for other in _REGISTRY.values():
        if other.name != cls.name and other.config_class is config_class:
            raise ValueError(
                f"{config_class.__name__} is already the config of detector {other.name!r}; "
                f"give {cls.__name__} a config class of its own"
            )
    _REGISTRY[cls.name] = cls
    return cls


def _same_definition(old: type, new: type) -> bool:
    """Whether ``new`` redefines ``old`` (a module or notebook cell run again)."""
    return (old.__module__, old.__qualname__) == (new.__module__, new.__qualname__)


def detector_names() -> list[str]:
    """``["auto", *registered names in registration order]``."""
    return [AUTO, *_REGISTRY]


def detector_descriptions() -> dict[str, str]:
    """``{name: one-line description}`` for every name of :func:`detector_names`."""
    auto = " when its model is installed, else ".join(AUTO_PREFERENCE)
    return {AUTO: auto, **{name: cls.description for name, cls in _REGISTRY.items()}}


def resolve_detector(name: str) -> str:
    """The concrete detector behind ``name``: ``auto`` -> the first of
    :data:`AUTO_PREFERENCE` whose model is installed (else the last); unknown names raise
    ``ValueError`` listing the valid ones."""
    if name == AUTO:
        preferred = [n for n in AUTO_PREFERENCE if n in _REGISTRY]
        for candidate in preferred[:-1]:
            if _REGISTRY[candidate].available():
                return candidate
        if preferred:
            return preferred[-1]
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown text detector {name!r}; choose one of {', '.join(detector_names())}"
        )
    return name


def detector_class(name: str) -> type[TextDetector]:
    """The registered class behind ``name`` (``auto`` resolved)."""
    return _REGISTRY[resolve_detector(name)]


def verifier_names() -> list[str]:
    """Registered detectors that verify zoomed windows (``verifies``) and whose model is
    installed, in registration order."""
    return [name for name, cls in _REGISTRY.items() if cls.verifies and cls.available()]


def _setting_names(config: Any, prefix: str = "") -> list[str]:
    names = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            names += _setting_names(value, f"{prefix}{f.name}.")
        else:
            names.append(f"{prefix}{f.name}")
    return names


def detector_config(name: str = AUTO, **overrides: Any) -> DetectorConfig:
    """The config of detector ``name`` (``auto`` resolved) with its defaults, overridden by
    ``overrides`` (``None`` values are ignored; dotted keys reach nested configs, e.g.
    ``detector_config("craft", **{"proposals.min_contrast": 0.04})``).

    Raises:
        ValueError: unknown detector; a setting the detector does not have (the message lists
            its settings); or a value its config rejects.
    """
    resolved = resolve_detector(name)
    config = _REGISTRY[resolved].config_class()
    for key, value in overrides.items():
        if value is None:
            continue
        try:
            config = set_path(config, key, value)
        except UnknownSetting:
            raise ValueError(
                f"text detector {resolved!r} has no setting {key!r}; "
                f"its settings: {', '.join(_setting_names(config)) or 'none'}"
            ) from None
    return config


def build_detector(
    config: DetectorConfig | str, *, device: str = "auto", precision: str = "fp32"
) -> TextDetector:
    """A detector (not yet loaded) for ``config``: a detector's config (its class names the
    detector) or a detector name (its default config).

    Args:
        config: see above.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; detectors that
            run on the CPU only ignore it.
        precision: ``fp32``, ``bf16`` or ``auto`` (bf16 where the device computes it
            natively); detectors without a choice ignore it.
    """
    if isinstance(config, str):
        config = detector_config(config)
    return detector_class_for(config)(config, device=device, precision=precision)


def detector_class_for(config: DetectorConfig) -> type[TextDetector]:
    """The registered detector class whose config class ``config`` is."""
    for cls in _REGISTRY.values():
        if type(config) is cls.config_class:
            return cls
    raise TypeError(
        f"no registered text detector takes a {type(config).__name__}; configs of "
        + ", ".join(f"{n} ({c.config_class.__name__})" for n, c in _REGISTRY.items())
    )
