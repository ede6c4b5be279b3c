"""Is the text shortcut found in a model xraydebug did not train?

    python -m benchmarks.foreign_shortcut_bench --json benchmarks/foreign_shortcut_bench.json

A team's model, made the way a team makes one: a torchvision ResNet-18 (random init) trained
by the plain PyTorch loop below (PIL decoding, 224 px, gray repeated to 3 channels, ImageNet
normalisation, Adam 1e-3, ``--epochs`` epochs, batch 32; no xraydebug code) on the training
split of the demo's synthetic set, whose text marks COVID-19 films far more often than others.
It is saved with ``torch.jit.save`` and imported with ``import-model``. Then:

- ``text_sensitivity`` on the test split (text independent of the label there): the share of
  films not called COVID-19 that become COVID-19 once text is pasted, minus a placebo paste,
  with its 95% CI;
- ``scan`` of ``--scan-images`` test films (iGOS++, the default preset and text detector):
  how many are flagged as relying on text, and how many of those carry text.

Target (issue 23): the sensitivity's CI excludes 0 and the scan flags films with text.
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
from xraydebug.device import machine_line
from xraydebug.models.foreign import ModelSpec, import_model
from xraydebug.stages.scan import ScanConfig, scan

CLASSES = ("normal", "pneumonia", "COVID-19")
SIZE = 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_split(data: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A team's loader: every film of ``split`` as (N, 3, 224, 224) normalised, labels (N,)."""
    images, labels = [], []
    for line in (data / f"{split}.txt").read_text().splitlines():
        _patient, name, label = line.split()[:3]
        gray = Image.open(data / split / name).convert("L").resize((SIZE, SIZE), Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0))
        labels.append(CLASSES.index(label))
    x = torch.stack(images)[:, None].repeat(1, 3, 1, 1)
    return (x - MEAN) / STD, torch.tensor(labels)


def train_outside(data: Path, epochs: int, seed: int) -> torch.nn.Module:
    """The plain PyTorch training loop a team would write."""
    torch.manual_seed(seed)
    x, y = load_split(data, "train")
    net = torchvision.models.resnet18(weights=None, num_classes=len(CLASSES))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(y))
        total = 0.0
        for start in range(0, len(y), 32):
            batch = order[start : start + 32]
            loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        print(f"epoch {epoch + 1}: train loss {total / len(y):.3f}", flush=True)
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/xraydebug-foreign-shortcut"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--scan-images", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    data = args.work / "data"
    if not (data / "test.txt").exists():
        synthesize(data, SynthConfig(n_train=480, n_test=240, size=256, seed=args.seed))
    model_file = args.work / "team-resnet18.ts"
    start = time.perf_counter()
    if not model_file.exists():
        net = train_outside(data, args.epochs, args.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(net, torch.zeros(2, 3, SIZE, SIZE)), model_file)
    train_seconds = time.perf_counter() - start
    spec = ModelSpec(classes=CLASSES, input_size=SIZE)
    checkpoint = import_model(model_file, spec, args.work / "team-resnet18.pt").checkpoint
    start = time.perf_counter()
    (result,) = text_sensitivity(
        data, checkpoint, args.work / "text-sensitivity", config=TextSensitivityConfig()
    )
    sensitivity_seconds = time.perf_counter() - start
    into = result.summary["into"]["COVID-19"]
    options = {"split": "test", "limit": args.scan_images, "seed": args.seed}
    start = time.perf_counter()
    scan(data, checkpoint, args.work / "scan", config=ScanConfig.from_options(options))
    scan_seconds = time.perf_counter() - start
    table = pd.read_csv(args.work / "scan" / "scan.csv")
    flagged = table[table["flagged"].astype(bool)]
    truth = json.loads((data / "ground_truth.json").read_text())
    with_text = [p for p in flagged["path"] if truth.get(str(p), {}).get("has_text")]
    out = {
        "machine": machine_line(),
        "epochs": args.epochs,
        "train_seconds": round(train_seconds, 1),
        "sensitivity_into_covid": into["sensitivity"],
        "ci": into["ci"],
        "text": into["text"],
        "placebo": into["placebo"],
        "sensitivity_seconds": round(sensitivity_seconds, 1),
        "scanned": len(table),
        "flagged": len(flagged),
        "flagged_with_text": len(with_text),
        "scan_seconds": round(scan_seconds, 1),
    }
    out["met"] = bool(into["ci"] and into["ci"][0] > 0 and len(with_text) > 0)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
