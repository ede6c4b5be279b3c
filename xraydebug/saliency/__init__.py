"""Saliency for shortcut hunting: iGOS++ (and I-GOS, Grad-CAM), deletion/insertion metrics.

Quick use::

    from xraydebug.saliency import igospp, deletion_insertion

    result = igospp(model, images, targets)          # masks (B, 1, 28, 28), 0 = salient
    heat = result.saliency(images.shape[-2:])        # (B, 1, H, W) in [0, 1], 1 = salient
    del_auc, ins_auc = deletion_insertion(model, images, targets, result)

By name (the scan, the CLI, the benchmarks)::

    explainer = get_explainer("igospp")              # or "igos", "gradcam", or your own
    config = explainer.default_config(preset="fast", mask_size=56)
    result = explainer.explain(model, images, targets, config)
    run_json["saliency"] = explainer.describe(config)

Removing pixels by inpainting instead of blurring (MP2-G, :mod:`.removal`)::

    removal = Removal(RemovalConfig("inpaint", inpainter="telea"))   # built once, shared
    result = igospp(model, images, targets, removal=removal)
    del_auc, ins_auc = deletion_insertion(model, images, targets, result, removal=removal)
"""

from .config import GradCAMConfig, IGOSConfig
from .gradcam import GradCAMExplainer, gradcam
from .igos import IGOSExplainer, IGOSFamily, IGOSPPExplainer, igos, igospp
from .masks import bilateral_tv, blur_baseline, total_variation, upsample_mask
from .metrics import deletion_insertion
from .registry import (
    EXPLAINERS,
    Explainer,
    describe_saliency,
    explainer_names,
    get_explainer,
    register_explainer,
)
from .removal import REMOVAL_OPERATORS, Removal, RemovalConfig, remove
from .result import SaliencyResult
from .runtime import ACTIVATIONS

__all__ = [
    "ACTIVATIONS",
    "EXPLAINERS",
    "REMOVAL_OPERATORS",
    "Explainer",
    "GradCAMConfig",
    "GradCAMExplainer",
    "IGOSConfig",
    "IGOSExplainer",
    "IGOSFamily",
    "IGOSPPExplainer",
    "Removal",
    "RemovalConfig",
    "SaliencyResult",
    "bilateral_tv",
    "blur_baseline",
    "deletion_insertion",
    "describe_saliency",
    "explainer_names",
    "get_explainer",
    "gradcam",
    "igos",
    "igospp",
    "register_explainer",
    "remove",
    "total_variation",
    "upsample_mask",
]
