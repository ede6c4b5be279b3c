"""xraydebug: find and fix shortcut bugs (burned-in text) in chest X-ray classifiers.

Every CLI command is a plain function here too (imported lazily, so ``import xraydebug`` is
fast)::

    import xraydebug
    xraydebug.synthesize("demo-data")
    index = xraydebug.load_index("demo-data")
    result = xraydebug.train("demo-data", "models/covidnet.pt")
    metrics = xraydebug.evaluate("demo-data", "models/covidnet.pt").metrics
    loaded = xraydebug.load_model("models/covidnet.pt")
    scan = xraydebug.scan("demo-data", "models/covidnet.pt", "runs/scan")
    xraydebug.clean_dataset("demo-data", "demo-data-clean", xraydebug.CleanConfig(scan="runs/scan"))
    result = xraydebug.retrain("demo-data-clean", "models/covidnet.pt", run_dir="runs/retrain")
    xraydebug.build_report("runs/retrain", config=xraydebug.ReportConfig(show_ids=True))
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("xraydebug")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

_LAZY = {
    "synthesize": "xraydebug.data.synth",
    "SynthConfig": "xraydebug.data.synth",
    "load_index": "xraydebug.data.layouts",
    "read_image": "xraydebug.data.imageio",
    "inspect_dataset": "xraydebug.data.inspect",
    "train": "xraydebug.models.train",
    "TrainConfig": "xraydebug.models.train",
    "evaluate": "xraydebug.models.evaluate",
    "load_model": "xraydebug.models.checkpoint",
    "scan": "xraydebug.audit.scan",
    "ScanConfig": "xraydebug.audit.scan",
    "clean_dataset": "xraydebug.audit.clean",
    "CleanConfig": "xraydebug.audit.clean",
    "retrain": "xraydebug.audit.retrain",
    "RetrainConfig": "xraydebug.audit.retrain",
    "build_report": "xraydebug.audit.report",
    "ReportConfig": "xraydebug.audit.report",
    "run_demo": "xraydebug.demo",
    "detect_dataset": "xraydebug.text.dataset",
    "ExecutorConfig": "xraydebug.executor",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xraydebug' has no attribute {name!r}")
