"""Burned-in text on radiographs: detectors by name, the saliency-guided second look, box masks.

* Detectors (:mod:`~xraydebug.text.registry`, :mod:`~xraydebug.text.detect`): ``ppocr`` and
  ``craft`` verify cheap text proposals (:mod:`~xraydebug.text.proposals`) at zoom with a text
  network (:mod:`~xraydebug.text.verified`); ``craft-global`` runs CRAFT on the whole resized
  film as in the paper; ``auto`` is ``ppocr`` when its model is installed, else ``craft``.
  Build one with :func:`build_detector` (or :func:`detect_text` for a single call); add your
  own with :func:`register_detector`.
* :class:`SecondLook` looks again, at high zoom, where the model's saliency forms a compact
  blob outside every box (:func:`saliency_blobs`).
* :mod:`~xraydebug.text.inpaint` turns boxes into masks and encodes cleaned films like their
  source (:mod:`xraydebug.inpaint` fills them).

Network design: Baek et al., CRAFT, CVPR 2019; weights craft_mlt_25k.pth (c) NAVER Corp., MIT
licence. PP-OCRv4 DBNet (PaddleOCR), Apache-2.0.
"""

from xraydebug.text.base import Box, DetectorConfig, TextDetector, merge_boxes
from xraydebug.text.craft import CRAFT, load_craft
from xraydebug.text.detect import (
    CraftConfig,
    CraftGlobalConfig,
    PPOCRConfig,
    detect_text,
)
from xraydebug.text.postprocess import boxes_from_scores, scale_boxes
from xraydebug.text.proposals import ProposalConfig
from xraydebug.text.registry import (
    build_detector,
    detector_config,
    detector_descriptions,
    detector_names,
    register_detector,
    resolve_detector,
)
from xraydebug.text.second_look import SecondLook, SecondLookConfig, saliency_blobs
from xraydebug.text.verified import VerifiedConfig

__all__ = [
    "CRAFT",
    "Box",
    "CraftConfig",
    "CraftGlobalConfig",
    "DetectorConfig",
    "PPOCRConfig",
    "ProposalConfig",
    "SecondLook",
    "SecondLookConfig",
    "TextDetector",
    "VerifiedConfig",
    "boxes_from_scores",
    "build_detector",
    "detect_text",
    "detector_config",
    "detector_descriptions",
    "detector_names",
    "load_craft",
    "merge_boxes",
    "register_detector",
    "resolve_detector",
    "saliency_blobs",
    "scale_boxes",
]
