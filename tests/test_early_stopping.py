"""Early stopping that waits out a plateau, the learning-rate schedule, and the line that says
a model learned nothing."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from xraydebug.models import train as train_module
from xraydebug.models.train import (
    TrainConfig,
    chance_macro_f1,
    learning_rate,
    train,
    training_summary,
)


def _replay(curve: list[float], config: TrainConfig) -> int:
    """The epoch at which ``config``'s early stopping ends a run whose validation macro-F1
    follows ``curve`` (the bookkeeping of a real run, without the training)."""

    class _Model:
        def state_dict(self):
            return {}

    fit = train_module._Fit(
        _Model(),
        None,
        {},
        {  # type: ignore[arg-type]
            "epoch": 0,
            "best_f1": float("-inf"),
            "best_epoch": 0,
            "bad_epochs": 0,
            "history": [],
        },
    )
    for epoch, f1 in enumerate(curve, start=1):
        metrics = {"accuracy": f1, "macro_f1": f1}
        train_module._record_epoch(fit, epoch, 1.0, metrics, smoothing=config.smoothing)
        if train_module._should_stop(config, fit.state):
            return epoch
    return len(curve)


# a subtle signal: flat noise around chance for 12 epochs, then learning
DELAYED = [0.30, 0.34, 0.31, 0.33, 0.30, 0.35, 0.32, 0.31, 0.33, 0.30, 0.34, 0.32]
DELAYED += [0.40, 0.46, 0.52, 0.57, 0.61, 0.64, 0.66, 0.67, 0.68, 0.68, 0.69, 0.69]


def test_early_stopping_waits_out_the_plateau():
    before = TrainConfig(arch="small", epochs=24, patience=4).resolved()
    assert _replay(DELAYED, before) < 12  # the small recipe: patience from epoch 1, raw signal
    patient = TrainConfig(**{**before.to_dict(), "min_epochs": 14, "smoothing": 0.7})
    assert _replay(DELAYED, patient) == 24  # keeps training past the plateau
    warm = TrainConfig(**{**patient.to_dict(), "patience": 1})
    assert _replay([0.3] * 24, warm) == warm.min_epochs  # never during the warm-up


def test_learning_rate_warms_up_then_follows_the_schedule():
    config = TrainConfig(
        arch="tiny", epochs=10, lr=1.0, schedule="cosine", warmup_epochs=2, patience=0
    ).resolved()
    rates = [learning_rate(config, e) for e in range(1, 11)]
    assert rates[:3] == [0.5, 1.0, 1.0] and rates[-1] < 0.05
    assert all(a >= b for a, b in itertools.pairwise(rates[1:]))
    flat = TrainConfig(arch="tiny", lr=0.1, schedule="constant").resolved()
    assert learning_rate(flat, 5) == 0.1
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")


def test_the_learned_nothing_line_appears_on_shuffled_labels(tiny_covidx: Path, tmp_path: Path):
    import numpy as np

    data = tmp_path / "shuffled"
    shutil.copytree(tiny_covidx, data)
    lines = (data / "train.txt").read_text().splitlines()
    labels = [line.split()[2] for line in lines]
    rng = np.random.default_rng(0)
    shuffled = [labels[i] for i in rng.permutation(len(labels))]
    (data / "train.txt").write_text(
        "\n".join(
            " ".join([*line.split()[:2], label, *line.split()[3:]])
            for line, label in zip(lines, shuffled, strict=True)
        )
        + "\n"
    )
    config = TrainConfig(arch="tiny", epochs=8, device="cpu", patience=2, min_epochs=6)
    console = Console(record=True, width=200)
    result = train(data, tmp_path / "m.pt", config=config, console=console, resume=False)
    text = console.export_text()
    assert "The model learned nothing" in text, text
    assert len(result.history) >= 6  # early stopping waited for min_epochs
    assert "learned nothing" not in " ".join(
        training_summary(
            [{"val_macro_f1": 0.9}],
            best_epoch=1,
            epochs=1,
            chance=chance_macro_f1(np.array([0, 1, 2]), 3),
        )
    )
