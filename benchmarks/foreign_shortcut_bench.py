"""Is the text shortcut found in a model xraydebug did not train, softmax or multi-label?

    python -m benchmarks.foreign_shortcut_bench --json benchmarks/foreign_shortcut_bench.json
    python -m benchmarks.foreign_shortcut_bench --multilabel \
        --json benchmarks/foreign_shortcut_bench_multilabel.json

A team's model, made the way a team makes one: a torchvision ResNet-18 (random init) trained
by the plain PyTorch loop below (PIL decoding, 224 px, gray repeated to 3 channels, ImageNet
normalisation, Adam 1e-3, ``--epochs`` epochs, batch 32; no xraydebug code), saved with
``torch.jit.save`` and imported with ``import-model`` (``--multilabel`` where it has one sigmoid
per finding). Its data is a synthetic set whose training split ties burned-in text to one
class or finding, and whose test split does not:

- softmax: the demo's COVIDx-style set (text marks 90% of COVID-19 training films, 10% of the
  others); the shortcut class is COVID-19;
- ``--multilabel``: ``synth --multilabel``'s NIH ChestX-ray14 layout (findings Consolidation
  and Infiltration, each on 35% of films; text marks 90% of training films with Infiltration,
  10% of the others); the shortcut finding is Infiltration, trained with BCE.

``--lesion-strength`` (default 0.5) makes the disease signal subtler than the demo's, so text
is the easier cue, as on real films. Then:

- ``text_sensitivity`` on the test split: the share of films not called the shortcut class
  (finding) that are called it once text is pasted, minus a placebo paste, with its 95% CI;
- ``scan`` of ``--scan-images`` test films (iGOS++, the default preset and text detector;
  multi-label: ``--target`` the shortcut finding): flagged films, and how many carry text;
- multi-label only: ``evaluate`` on the NIH layout, its per-finding AUROCs against
  scikit-learn's ``roc_auc_score`` on the same predictions and the ground truth.

Targets (issue 23): the sensitivity's CI excludes 0, the scan flags films with text, and the
per-finding AUROCs equal scikit-learn's.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from PIL import Image

from xraydebug.audit.text_sensitivity import TextSensitivityConfig, text_sensitivity
from xraydebug.data.synth import SynthConfig, synthesize
from xraydebug.data.synth_nih import SHORTCUT_FINDING, NihSynthConfig, synthesize_nih
from xraydebug.device import machine_line
from xraydebug.models.evaluate import evaluate
from xraydebug.models.foreign import ModelSpec, import_model
from xraydebug.stages.scan import ScanConfig, scan

CLASSES = ("normal", "pneumonia", "COVID-19")
FINDINGS = ("Consolidation", "Infiltration")
SIZE = 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _tensor(paths: list[Path]) -> torch.Tensor:
    images = []
    for path in paths:
        gray = Image.open(path).convert("L").resize((SIZE, SIZE), Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0))
    x = torch.stack(images)[:, None].repeat(1, 3, 1, 1)
    return (x - MEAN) / STD


def load_covidx_train(data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A team's loader: the training films (N, 3, 224, 224) normalised, class indices (N,)."""
    rows = [line.split()[:3] for line in (data / "train.txt").read_text().splitlines()]
    x = _tensor([data / "train" / name for _patient, name, _label in rows])
    return x, torch.tensor([CLASSES.index(label) for *_rest, label in rows])


def load_nih_train(data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The same for the NIH layout: films of ``train_val_list.txt``, targets (N, 2) in {0, 1}."""
    entries = pd.read_csv(data / "Data_Entry_2017.csv")
    names = set((data / "train_val_list.txt").read_text().split())
    entries = entries[entries["Image Index"].isin(names)]
    where = {p.name: p for p in data.glob("images_*/images/*.png")}
    x = _tensor([where[name] for name in entries["Image Index"]])
    found = [labels.split("|") for labels in entries["Finding Labels"]]
    return x, torch.tensor([[float(f in row) for f in FINDINGS] for row in found])


def train_outside(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> torch.nn.Module:
    """The plain PyTorch training loop a team would write (BCE for multi-label targets)."""
    torch.manual_seed(seed)
    multilabel = y.ndim == 2
    width = y.shape[1] if multilabel else len(CLASSES)
    net = torchvision.models.resnet18(weights=None, num_classes=width)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss() if multilabel else torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(y))
        total = 0.0
        for start in range(0, len(y), 32):
            batch = order[start : start + 32]
            loss = loss_fn(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        print(f"epoch {epoch + 1}: train loss {total / len(y):.3f}", flush=True)
    return net.eval()


def _auroc_check(data: Path, checkpoint: Path, out: Path) -> dict[str, object]:
    """Per-finding AUROCs of ``evaluate`` on the NIH layout against scikit-learn's."""
    from sklearn.metrics import roc_auc_score

    result = evaluate(data, checkpoint, "test", out)
    truth = json.loads((data / "ground_truth.json").read_text())
    table = result.predictions
    ours, sklearn = {}, {}
    for finding in FINDINGS:
        y = [finding in truth[p]["findings"] for p in table["path"]]
        sklearn[finding] = float(roc_auc_score(y, table[f"prob_{finding}"]))
        ours[finding] = result.metrics["per_finding"][finding]["auroc"]
    gap = max(abs(ours[f] - sklearn[f]) for f in FINDINGS)
    ci = {f: result.metrics["per_finding"][f]["auroc_ci"] for f in FINDINGS}
    return {"auroc": ours, "auroc_ci": ci, "sklearn_auroc": sklearn, "max_gap": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--multilabel", action="store_true")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lesion-strength", type=float, default=0.5)
    parser.add_argument("--scan-images", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=480)
    parser.add_argument("--n-test", type=int, default=240)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    kind = "multilabel" if args.multilabel else "softmax"
    work = args.work or Path(f"/tmp/xraydebug-foreign-shortcut-{kind}")
    work.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    data = work / "data"
    if not (data / "ground_truth.json").exists():
        sizes = {"n_train": args.n_train, "n_test": args.n_test, "size": 256, "seed": args.seed}
        sizes["lesion_strength"] = args.lesion_strength
        if args.multilabel:
            synthesize_nih(data, NihSynthConfig(**sizes))
        else:
            synthesize(data, SynthConfig(**sizes))
    shortcut = SHORTCUT_FINDING if args.multilabel else "COVID-19"
    model_file = work / "team-resnet18.ts"
    start = time.perf_counter()
    if not model_file.exists():
        x, y = load_nih_train(data) if args.multilabel else load_covidx_train(data)
        net = train_outside(x, y, args.epochs, args.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(net, torch.zeros(2, 3, SIZE, SIZE)), model_file)
    train_seconds = time.perf_counter() - start
    spec = ModelSpec(classes=FINDINGS if args.multilabel else CLASSES, input_size=SIZE)
    checkpoint = import_model(
        model_file, spec, work / "team-resnet18.pt", multilabel=args.multilabel
    ).checkpoint
    start = time.perf_counter()
    (result,) = text_sensitivity(
        data, checkpoint, work / "text-sensitivity", config=TextSensitivityConfig()
    )
    sensitivity_seconds = time.perf_counter() - start
    into = result.summary["into"][shortcut]
    options = {"split": "test", "limit": args.scan_images, "seed": args.seed}
    if args.multilabel:
        options["targets"] = (shortcut,)
    start = time.perf_counter()
    table = scan(data, checkpoint, work / "scan", config=ScanConfig.from_options(options)).table
    scan_seconds = time.perf_counter() - start
    flagged = table[table["flagged"] == "true"]
    truth = json.loads((data / "ground_truth.json").read_text())
    with_text = [p for p in flagged["path"] if truth.get(str(p), {}).get("has_text")]
    scanned_with_text = [p for p in table["path"] if truth.get(str(p), {}).get("has_text")]
    out = {
        "machine": machine_line(),
        "kind": kind,
        "epochs": args.epochs,
        "lesion_strength": args.lesion_strength,
        "train_seconds": round(train_seconds, 1),
        "shortcut": shortcut,
        "sensitivity": into["sensitivity"],
        "ci": into["ci"],
        "text": into["text"],
        "placebo": into["placebo"],
        "sensitivity_seconds": round(sensitivity_seconds, 1),
        "scanned": len(table),
        "scanned_with_text": len(scanned_with_text),
        "flagged": len(flagged),
        "flagged_with_text": len(with_text),
        "scan_seconds": round(scan_seconds, 1),
    }
    met = bool(into["ci"] and into["ci"][0] > 0 and len(with_text) > 0)
    if args.multilabel:
        out["nih_layout"] = _auroc_check(data, checkpoint, work / "eval")
        met = met and out["nih_layout"]["max_gap"] < 1e-9
    out["met"] = met
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
