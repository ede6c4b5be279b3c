"""Inpainters by name: fill masked pixels of films (``clean --inpainter``) and of model inputs
(the explainers' ``--removal inpaint``).

* ``telea``, ``ns``: OpenCV's fast-marching and Navier-Stokes inpainting (the default: ``telea``);
* ``fsr``: OpenCV xphoto's Frequency Selective Reconstruction;
* ``learned``: a small network trained on the user's own films
  (:mod:`xraydebug.inpaint.learned`, ``xraydebug inpainter train``).
"""

from . import (
    classical,  # noqa: F401  (registers telea, ns, fsr)
    learned,  # noqa: F401  (registers learned)
)
from .base import (
    Inpainter,
    InpainterConfig,
    as_mask,
    build_inpainter,
    inpainter_class,
    inpainter_names,
    make_inpainter,
    register_inpainter,
)

DEFAULT_INPAINTER = "telea"

__all__ = [
    "DEFAULT_INPAINTER",
    "Inpainter",
    "InpainterConfig",
    "as_mask",
    "build_inpainter",
    "inpainter_class",
    "inpainter_names",
    "make_inpainter",
    "register_inpainter",
]
