"""Burned-in text: CRAFT detection (and, elsewhere in this package, cleaning).

Network design: Baek et al., CRAFT, CVPR 2019; weights craft_mlt_25k.pth (c) NAVER Corp., MIT
licence.
"""

from xraydebug.text.craft import CRAFT, load_craft
from xraydebug.text.detect import TextDetectConfig, detect_text
from xraydebug.text.postprocess import boxes_from_scores, scale_boxes

__all__ = [
    "CRAFT",
    "TextDetectConfig",
    "boxes_from_scores",
    "detect_text",
    "load_craft",
    "scale_boxes",
]
