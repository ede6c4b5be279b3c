"""xraydebug: find and fix shortcut bugs (burned-in text) in chest X-ray classifiers.

Every CLI command is a plain function here too (imported lazily, so ``import xraydebug`` is
fast). Stages return their tables; the audit report is built by the caller::

    import xraydebug
    xraydebug.synthesize("demo-data")
    index = xraydebug.load_index("demo-data")
    result = xraydebug.train("demo-data", "models/covidnet.pt")
    metrics = xraydebug.evaluate("demo-data", "models/covidnet.pt").metrics
    loaded = xraydebug.load_model("models/covidnet.pt")
    spec = xraydebug.ModelSpec(classes=("normal", "pneumonia", "COVID-19"), input_size=224)
    xraydebug.import_model("their-resnet.ts", spec, "models/theirs.pt")  # a team's own model
    config = xraydebug.ScanConfig.from_options({"mask_size": 28, "detector": "craft"})
    scan = xraydebug.scan("demo-data", "models/covidnet.pt", "runs/scan", config=config)
    xraydebug.build_report("runs/scan")
    clean = xraydebug.CleanConfig.from_options({"scan": "runs/scan"})
    xraydebug.clean_dataset("demo-data", "demo-data-clean", config=clean)
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
    "import_model": "xraydebug.models.foreign",
    "import_module": "xraydebug.models.foreign",
    "ModelSpec": "xraydebug.models.foreign",
    "EvaluateConfig": "xraydebug.models.evaluate",
    "scan": "xraydebug.stages.scan",
    "ScanConfig": "xraydebug.stages.scan",
    "clean_dataset": "xraydebug.stages.clean",
    "CleanConfig": "xraydebug.stages.clean",
    "detect_dataset": "xraydebug.stages.text",
    "TextConfig": "xraydebug.stages.text",
    "text_sensitivity": "xraydebug.audit.text_sensitivity",
    "TextSensitivityConfig": "xraydebug.audit.text_sensitivity",
    "detect_text": "xraydebug.text",
    "detector_config": "xraydebug.text",
    "register_detector": "xraydebug.text",
    "get_explainer": "xraydebug.saliency",
    "register_explainer": "xraydebug.saliency",
    "retrain": "xraydebug.audit.retrain",
    "RetrainConfig": "xraydebug.audit.retrain",
    "build_report": "xraydebug.audit.report",
    "ReportConfig": "xraydebug.audit.report",
    "run_demo": "xraydebug.demo",
    "ExecutorConfig": "xraydebug.executor",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xraydebug' has no attribute {name!r}")
