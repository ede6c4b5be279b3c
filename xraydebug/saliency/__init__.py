"""Saliency for shortcut hunting: iGOS++ (and I-GOS, Grad-CAM), deletion/insertion metrics.

Quick use::

    from xraydebug.saliency import igospp, deletion_insertion

    result = igospp(model, images, targets)          # masks (B, 1, 28, 28), 0 = salient
    heat = result.saliency(images.shape[-2:])        # (B, 1, H, W) in [0, 1], 1 = salient
    del_auc, ins_auc = deletion_insertion(model, images, targets, result)
"""

from .config import IGOSConfig
from .gradcam import gradcam
from .igos import igos, igospp
from .masks import bilateral_tv, blur_baseline, total_variation, upsample_mask
from .metrics import deletion_insertion
from .registry import EXPLAINERS, explainer_names, get_explainer
from .result import SaliencyResult

__all__ = [
    "EXPLAINERS",
    "IGOSConfig",
    "SaliencyResult",
    "bilateral_tv",
    "blur_baseline",
    "deletion_insertion",
    "explainer_names",
    "get_explainer",
    "gradcam",
    "igos",
    "igospp",
    "total_variation",
    "upsample_mask",
]
