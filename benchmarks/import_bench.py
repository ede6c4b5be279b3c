"""Does an imported model cost or explain differently from the same network built natively?

    python -m benchmarks.import_bench --json benchmarks/import_bench.json

One torchvision ResNet-18 (3 outputs, seed 0, 224 px, ImageNet normalisation) is saved as a
state_dict, TorchScript, a torch.export program and ONNX, and each file is imported with
``import-model``. The state_dict import is the native build (``torchvision:resnet18`` rebuilt
from torchvision). Each checkpoint then scans the same test films (iGOS++, the scan's default
preset; no text detection, so only the explanation is timed) in one run of this script,
formats interleaved over ``--rounds`` so a slow spell of the machine hits all alike.

``--floor-only`` rescans the native checkpoint of a finished run with oneDNN off: how far
iGOS++'s AUCs move when only the conv kernels' rounding changes.

Prints, per format, seconds per image (median over rounds) and its ratio to the native build,
the largest per-image difference of deletion and insertion AUC from the native build, and
whether the predicted labels and probabilities (within 1e-4) agree. Targets (issue 23): cost
within 5% per image; AUCs within 0.005 per image.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torchvision

from xraydebug.data.synth import SynthConfig, synthesize
from xraydebug.device import machine_line
from xraydebug.models.foreign import ModelSpec, import_model
from xraydebug.stages.scan import ScanConfig, scan

CLASSES = ("normal", "pneumonia", "COVID-19")
SIZE = 224


def save_formats(
    root: Path, net: torch.nn.Module | None = None, size: int = SIZE, max_batch: int = 4096
) -> dict[str, Path]:
    """The same network (``net``, default a seeded torchvision ResNet-18 with 3 outputs) in
    the four formats a team saves models in, at input ``size``; the torch.export program's
    batch is dynamic up to ``max_batch``."""
    if net is None:
        torch.manual_seed(0)
        net = torchvision.models.resnet18(weights=None, num_classes=3)
    net = net.eval()
    example = torch.randn(2, 3, size, size)
    files = {
        fmt: root / name
        for fmt, name in (
            ("state_dict", "net.pth"),
            ("torchscript", "net.ts"),
            ("exported_program", "net.pt2"),
            ("onnx", "net.onnx"),
        )
    }
    torch.save(net.state_dict(), files["state_dict"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, example), files["torchscript"])
        torch.onnx.export(
            net,
            (example,),
            files["onnx"],
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, files["exported_program"])
    return files


def fresh_scan(
    data: Path, checkpoint: Path, out: Path, images: int, fold_bn: bool = True
) -> pd.DataFrame:
    """Scan ``images`` test films of ``data`` from scratch (a scan resumes, so an old ``out``
    is removed first); the scan table sorted by path. ``fold_bn``: iGOS++'s BatchNorm folding
    (the scan's default; it applies to a network it can copy, the native build, not to an
    embedded TorchScript or exported graph)."""
    shutil.rmtree(out, ignore_errors=True)
    options = {"split": "test", "limit": images, "text": False, "device": "cpu", "seed": 0}
    options["fold_bn"] = fold_bn
    scan(data, checkpoint, out, config=ScanConfig.from_options(options))
    return pd.read_csv(out / "scan.csv").sort_values("path").reset_index()


def differences(table: pd.DataFrame, native: pd.DataFrame) -> dict[str, Any]:
    """The largest per-image differences of ``table`` from ``native`` (same films)."""
    return {
        "max_deletion_diff": float((table["deletion_auc"] - native["deletion_auc"]).abs().max()),
        "max_insertion_diff": float((table["insertion_auc"] - native["insertion_auc"]).abs().max()),
        "same_labels": bool((table["pred"] == native["pred"]).all()),
        "max_prob_diff": float((table["prob"] - native["prob"]).abs().max()),
    }


def noise_floor(work: Path, images: int) -> dict[str, Any]:
    """iGOS++'s own float-rounding sensitivity: the native checkpoint of a finished run in
    ``work`` scanned again with oneDNN off (other conv kernels, same network), compared per
    image with the first round's scan."""
    with torch.backends.mkldnn.flags(enabled=False):
        table = fresh_scan(work / "data", work / "state_dict.pt", work / "scan-floor", images)
    first = pd.read_csv(work / "scan-state_dict-0" / "scan.csv").sort_values("path")
    return differences(table, first.reset_index())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/xraydebug-import-bench"))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--no-fold-bn",
        action="store_true",
        help="scan every format without BatchNorm folding, so all run the same arithmetic",
    )
    parser.add_argument(
        "--floor-only",
        action="store_true",
        help="only the noise floor of a finished run in --work (native, oneDNN off vs on)",
    )
    args = parser.parse_args()
    if args.floor_only:
        print(machine_line())
        print(json.dumps({"noise_floor": noise_floor(args.work, args.images)}))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    data = args.work / "data"
    if not (data / "test.txt").exists():
        synthesize(data, SynthConfig(n_train=12, n_test=24, size=256, seed=0), overwrite=True)
    files = save_formats(args.work)
    checkpoints = {}
    for fmt, file in files.items():
        arch = "torchvision:resnet18" if fmt == "state_dict" else ""
        spec = ModelSpec(classes=CLASSES, arch=arch, input_size=SIZE)
        checkpoints[fmt] = import_model(file, spec, args.work / f"{fmt}.pt").checkpoint
    seconds: dict[str, list[float]] = {fmt: [] for fmt in files}
    tables: dict[str, pd.DataFrame] = {}
    for round_ in range(args.rounds):
        for fmt, checkpoint in checkpoints.items():
            start = time.perf_counter()
            out = args.work / f"scan-{fmt}-{round_}"
            tables[fmt] = fresh_scan(data, checkpoint, out, args.images, not args.no_fold_bn)
            seconds[fmt].append((time.perf_counter() - start) / args.images)
    native_seconds = statistics.median(seconds["state_dict"])
    rows = [
        {
            "format": fmt,
            "seconds_per_image": round(statistics.median(seconds[fmt]), 3),
            "ratio_to_native": round(statistics.median(seconds[fmt]) / native_seconds, 3),
            **differences(table, tables["state_dict"]),
        }
        for fmt, table in tables.items()
    ]
    for row in rows:
        print(json.dumps(row))
    targets = {
        "cost_within_5pct": all(abs(r["ratio_to_native"] - 1) <= 0.05 for r in rows),
        "auc_within_0.005": all(
            max(r["max_deletion_diff"], r["max_insertion_diff"]) <= 0.005 for r in rows
        ),
    }
    print(json.dumps(targets))
    if args.json:
        payload = {"machine": machine_line(), "images": args.images, "rounds": args.rounds}
        payload["fold_bn"] = not args.no_fold_bn
        args.json.write_text(json.dumps({**payload, "rows": rows, "targets": targets}, indent=2))


if __name__ == "__main__":
    main()
