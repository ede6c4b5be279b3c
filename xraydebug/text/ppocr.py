"""PP-OCRv4's DBNet text detector (PaddleOCR, Apache-2.0) on ONNX Runtime.

The model file ``ch_PP-OCRv4_det_infer.onnx`` (4,745,517 bytes) ships inside the PyPI wheel
``rapidocr-onnxruntime==1.4.4``. Only the file is used: the package's Python code (and its
``opencv-python`` requirement, which would clash with ``opencv-python-headless``) is not, so the
project installs the wheel with ``pip install --no-deps`` and this module finds the file without
importing the package. The file's sha256 is checked before ONNX Runtime parses it.

Input: float32 ``(B, 3, h, w)``, ``h`` and ``w`` multiples of 32, pixels in [0, 1] mapped to
``(x - 0.5) / 0.5``; output: text probability ``(B, 1, h, w)`` in [0, 1] (differentiable
binarisation's probability map).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from xraydebug.errors import CheckpointError
from xraydebug.fsutil import file_sha256

__all__ = [
    "PPOCR_MODEL_NAME",
    "PPOCR_PACKAGE",
    "PPOCR_SHA256",
    "DBNetDetector",
    "load_dbnet",
    "ppocr_available",
    "ppocr_model_path",
]

PPOCR_MODEL_NAME = "ch_PP-OCRv4_det_infer.onnx"
PPOCR_SHA256 = "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
PPOCR_PACKAGE = "rapidocr-onnxruntime==1.4.4"
_INSTALL_HINT = f"pip install onnxruntime && pip install --no-deps {PPOCR_PACKAGE}"


def ppocr_model_path() -> Path:
    """Path of the DBNet ONNX file inside the installed wheel (without importing it)."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the PP-OCRv4 detector needs {PPOCR_MODEL_NAME} from the {PPOCR_PACKAGE} wheel; "
            f"run `{_INSTALL_HINT}` (make test / make demo do this)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models" / PPOCR_MODEL_NAME


def ppocr_available() -> bool:
    """Whether ONNX Runtime and the model file are installed (no hash check here)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    try:
        return ppocr_model_path().is_file()
    except CheckpointError:
        return False


class DBNetDetector:
    """A loaded DBNet session; call :meth:`probability` on batches of gray crops."""

    def __init__(self, path: Path, *, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise CheckpointError(f"onnxruntime is not installed; run `{_INSTALL_HINT}`") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.path = path

    def probability(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` float32 ``(B, h, w)`` gray in [0, 1], sides multiples of 32 ->
        text probability float32 ``(B, h, w)`` in [0, 1]."""
        if batch.ndim != 3 or batch.shape[1] % 32 or batch.shape[2] % 32:
            raise ValueError(f"expected (B, h, w) with h, w multiples of 32; got {batch.shape}")
        x = (batch.astype(np.float32) - 0.5) / 0.5
        x = np.ascontiguousarray(np.repeat(x[:, None], 3, axis=1))
        return self._session.run(None, {self._input: x})[0][:, 0]


def load_dbnet(path: Path | str | None = None, *, threads: int = 0) -> DBNetDetector:
    """A new PP-OCRv4 DBNet session, after a sha256 check of the official file (hash and session
    take under 0.1 s on a CPU). Raises :class:`CheckpointError` when it is missing or altered.

    ``threads``: ONNX Runtime's intra-op threads (0: one per CPU core)."""
    file = Path(path) if path is not None else ppocr_model_path()
    if not file.is_file():
        raise CheckpointError(f"{file}: PP-OCRv4 detector not found; run `{_INSTALL_HINT}`")
    if path is None and file_sha256(file) != PPOCR_SHA256:
        raise CheckpointError(
            f"{file}: sha256 does not match the official {PPOCR_MODEL_NAME}; reinstall "
            f"with `pip install --force-reinstall --no-deps {PPOCR_PACKAGE}`"
        )
    return DBNetDetector(file, threads=threads)
