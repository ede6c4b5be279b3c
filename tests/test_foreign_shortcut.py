"""A model trained outside xraydebug, by a plain PyTorch loop, on data whose training split
ties a burned-in marker to one class (softmax) or one finding (multi-label): once imported,
`evaluate --text-sensitivity` finds the shortcut and `scan` flags the films with text."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from tests.conftest import scan_config
from tests.test_text_sensitivity import LEVELS, _marker, shortcut_set
from xraydebug.cli import app
from xraydebug.models.foreign import ModelSpec, import_module
from xraydebug.stages.scan import scan

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)


def nih_shortcut_set(root: Path, n_train: int = 48, n_test: int = 32) -> Path:
    """64 px films in the NIH layout; finding ``Mass`` brightens the film a little, finding
    ``Edema`` not at all; in train every film with Edema carries the marker and no other,
    in test half of all films do. ``boxes.csv`` lists the markers."""
    rng = np.random.default_rng(5)
    lines, rows, lists = [], [], {"train": [], "test": []}
    patient = 0
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            patient += 1
            mass, edema = bool(rng.random() < 0.4), bool(i % 2)
            pixels = rng.normal(95 + 8 * mass, 10, size=(64, 64))
            marked = edema if split == "train" else bool(rng.random() < 0.5)
            boxes = [_marker(pixels, rng)] if marked else []
            name = f"{patient:08d}_000.png"
            (root / "images_001" / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                root / "images_001" / "images" / name
            )
            found = [f for f, on in (("Mass", mass), ("Edema", edema)) if on]
            label = "|".join(found) or "No Finding"
            lines.append(f"{name},{label},0,{patient},40,M,PA,64,64,0.1,0.1")
            lists[split].append(name)
            path = f"images_001/images/{name}"
            rows.append({"path": path, "n_boxes": len(boxes), "boxes": json.dumps(boxes)})
    (root / "Data_Entry_2017.csv").write_text(NIH_HEADER + "\n" + "\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(lists["train"]) + "\n")
    (root / "test_list.txt").write_text("\n".join(lists["test"]) + "\n")
    pd.DataFrame(rows).to_csv(root / "boxes.csv", index=False)
    return root


def plain_pytorch_model(films: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> nn.Module:
    """What a team's own script does: a small CNN, Adam, fixed epochs, no xraydebug."""
    torch.manual_seed(0)
    width = targets.shape[1] if multilabel else int(targets.max()) + 1
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(16, width),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    x = (films - 0.5) / 0.25
    for _ in range(60):
        optimizer.zero_grad()
        loss_fn(model(x), targets).backward()
        optimizer.step()
    return model.eval()


def _films(paths: list[Path]) -> torch.Tensor:
    return torch.stack(
        [torch.from_numpy(np.asarray(Image.open(p), np.float32) / 255.0)[None] for p in paths]
    )


def _check_found(data: Path, checkpoint: Path, tmp_path: Path, shortcut: str) -> None:
    runner = CliRunner()
    args = ["evaluate", str(data), "--model", str(checkpoint), "--out", str(tmp_path / "eval")]
    args += ["--text-sensitivity", "--boxes", str(data / "boxes.csv"), "--n-boot", "200"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "eval" / "text_sensitivity.json").read_text())
    row = found["into"][shortcut]
    assert row["ci"][0] > 0 and row["sensitivity"] > 0.1, row
    # the scan, with the fast detector and no second look (on 64 px noise films its zoomed
    # looks cost seconds a film)
    config = scan_config(split="test", mask_size=16, detector="ppocr", device="cpu")
    config = replace(config, second_look=None, targets=(shortcut,))
    table = scan(data, checkpoint, tmp_path / "scan", config=config).table
    boxes = pd.read_csv(data / "boxes.csv")
    marked = {r.path for r in boxes.itertuples() if r.n_boxes} & set(table["path"])
    flagged = set(table.loc[table["flagged"] == "true", "path"])
    both = flagged & marked
    assert len(both) >= 0.8 * len(marked) and len(both) >= 0.8 * len(flagged), (flagged, marked)


@pytest.mark.parametrize("multilabel", [False, True], ids=["softmax", "multilabel"])
def test_an_imported_model_is_caught_reading_text(tmp_path: Path, multilabel: bool) -> None:
    if multilabel:
        data = nih_shortcut_set(tmp_path / "data")
        classes, shortcut = ("Mass", "Edema"), "Edema"
        entries = pd.read_csv(data / "Data_Entry_2017.csv")
        train_names = set((data / "train_val_list.txt").read_text().split())
        entries = entries[entries["Image Index"].isin(train_names)]
        paths = [data / "images_001" / "images" / n for n in entries["Image Index"]]
        targets = torch.tensor(
            [
                [float(f in labels.split("|")) for f in classes]
                for labels in entries["Finding Labels"]
            ]
        )
    else:
        data = shortcut_set(tmp_path / "data", {"COVID-19": 1.0}, levels=LEVELS)
        classes, shortcut = ("normal", "pneumonia", "COVID-19"), "COVID-19"
        lines = (data / "train.txt").read_text().split("\n")
        pairs = [line.split() for line in lines if line.strip()]
        paths = [data / "train" / p[1] for p in pairs]
        targets = torch.tensor([classes.index(p[2]) for p in pairs])
    model = plain_pytorch_model(_films(paths), targets, multilabel)
    spec = ModelSpec(classes=classes, input_size=64, channels=1, mean=(0.5,), std=(0.25,))
    checkpoint = tmp_path / "imported.pt"
    import_module(model, spec, checkpoint, multilabel=multilabel)
    _check_found(data, checkpoint, tmp_path, shortcut)
