"""Stage configs from flat options: the routing the CLI (and notebooks) use.

Options are named like config fields. A stage's own fields are served first (so ``batch_size``
is the stage's, not a detector's), then nested groups, then the fields of the detector the
``detector`` option names; what is left over is refused with one line, and dotted ``--set``
overrides (:func:`xraydebug.settings.set_paths`) reach every nested field last.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from xraydebug.settings import refuse_leftovers, set_paths, take_fields
from xraydebug.text import DetectorConfig, TextDetector, build_detector, detector_config
from xraydebug.text.registry import detector_class_for

__all__ = [
    "DetectingConfig",
    "config_from_options",
    "detector_from_options",
    "detector_record",
    "finish_options",
]

T = TypeVar("T")
C = TypeVar("C", bound="DetectingConfig")


class DetectingConfig:
    """What the configs of detecting stages share (``text``, ``clean``): mixed into a frozen
    dataclass with ``detector``, ``precision`` and ``device`` fields. ``groups``: nested config
    fields built from flat options too (field name -> config class)."""

    groups: ClassVar[dict[str, type]] = {}
    detector: DetectorConfig
    precision: str
    device: str

    @classmethod
    def from_options(
        cls: type[C], options: Mapping[str, Any], sets: Mapping[str, Any] | None = None
    ) -> C:
        """A config from flat options routed by field name (:func:`config_from_options`);
        ``sets``: dotted overrides, applied last."""
        return config_from_options(cls, options, sets or {}, **cls.groups)

    def text_detector(self) -> TextDetector:
        """The detector on this config's device (not loaded)."""
        return build_detector(self.detector, device=self.device, precision=self.precision)

    def step_device(self) -> str:
        """The ``--device`` setting the stage's worker step computes with: the detector's
        fixed device (ppocr: ``cpu``), else this config's, unresolved (a driver without a GPU
        must still give the actors of a GPU cluster their GPUs)."""
        return detector_class_for(self.detector).fixed_device or self.device

    def resolved(self) -> dict[str, Any]:
        """The whole config as JSON-able values, with the detector's name and precision."""
        detector = detector_record(self.text_detector())
        out = dataclasses.asdict(self) | {"detector": detector}  # type: ignore[call-overload]
        return json.loads(json.dumps(out))


def detector_record(detector: TextDetector) -> dict[str, Any]:
    """What a stage records of its detector (name, precision, config): not the device, which
    does not change results and may differ between a run and its resume."""
    return {k: v for k, v in detector.describe().items() if k != "device"}


def detector_from_options(name: str | None, options: dict[str, Any]) -> DetectorConfig:
    """The config of detector ``name`` (a registry name; None: ``auto``) with any of its own
    settings found in ``options`` (removed from it; None = its default)."""
    name = name or "auto"
    return detector_config(name, **take_fields(detector_config(name), options))


def config_from_options(
    cls: type[T], options: Mapping[str, Any], sets: Mapping[str, Any], **groups: type
) -> T:
    """A stage config ``cls`` with a ``detector`` field from flat options routed by field name
    (None = not given): ``groups`` (field name -> config class) take their fields first, then
    ``cls`` its own (so ``batch_size`` is the stage's), then the detector named by the
    ``detector`` option its own; ``sets`` are applied last (:func:`finish_options`)."""
    opts = dict(options)
    nested = {field: group(**take_fields(group, opts)) for field, group in groups.items()}
    name = opts.pop("detector", None)
    own = take_fields(cls, opts)
    detector = detector_from_options(name, opts)
    return finish_options(cls(**own, **nested, detector=detector), opts, sets)


def finish_options(config: T, options: Mapping[str, Any], sets: Mapping[str, Any]) -> T:
    """``config`` with the dotted ``sets`` (``--set``) applied, once every flat option was
    routed: one left over in ``options`` (not None) is refused with one line."""
    detector = getattr(config, "detector", None)
    owner = f" or of the {type(detector).__name__}" if detector is not None else ""
    refuse_leftovers(options, f"{type(config).__name__}{owner}")
    return set_paths(config, sets)
