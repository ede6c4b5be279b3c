"""Early stopping that waits out a plateau, the learning-rate schedule, and the line that says
a model learned nothing."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from xraydebug.models import train as train_module
from xraydebug.models.monitor import get_monitor
from xraydebug.models.train import (
    TrainConfig,
    chance_macro_f1,
    learning_rate,
    train,
    training_summary,
)


def _fit_after(curve: list[float], config: TrainConfig) -> train_module._Fit:
    """The bookkeeping after every epoch of ``curve`` (no early stopping)."""
    fit = _empty_fit()
    for epoch, f1 in enumerate(curve, start=1):
        _record(fit, epoch, f1, config)
    return fit


def _record(fit: train_module._Fit, epoch: int, f1: float, config: TrainConfig) -> None:
    """What the epoch loop does with a validation macro-F1 of ``f1`` (loss ``1 - f1``)."""
    if epoch == train_module.low_res_epochs(config) + 1:
        train_module._restart_bookkeeping(fit.state)
    metrics = {"accuracy": f1, "macro_f1": f1, "auroc": f1, "loss": 1.0 - f1}
    monitor = get_monitor(config.monitor)
    train_module._record_epoch(
        fit, epoch, 1.0, metrics, monitor=monitor, smoothing=config.smoothing
    )


def _replay(curve: list[float], config: TrainConfig) -> int:
    """The epoch at which ``config``'s early stopping ends a run whose validation macro-F1
    follows ``curve`` (the bookkeeping of a real run, without the training)."""

    fit = _empty_fit()
    for epoch, f1 in enumerate(curve, start=1):
        _record(fit, epoch, f1, config)
        if train_module._should_stop(config, fit.state):
            return epoch
    return len(curve)


def _empty_fit() -> train_module._Fit:
    """A fit before epoch 1, with a model that has no weights (bookkeeping only)."""

    class _Model:
        def state_dict(self):
            return {}

    state = {"epoch": 0, "best_score": float("-inf"), "best_epoch": 0, "bad_epochs": 0}
    return train_module._Fit(_Model(), None, {}, {**state, "history": []})  # type: ignore[arg-type]


# a subtle signal: flat noise around chance for 12 epochs, then learning
DELAYED = [0.30, 0.34, 0.31, 0.33, 0.30, 0.35, 0.32, 0.31, 0.33, 0.30, 0.34, 0.32]
DELAYED += [0.40, 0.46, 0.52, 0.57, 0.61, 0.64, 0.66, 0.67, 0.68, 0.68, 0.69, 0.69]


def test_early_stopping_waits_out_the_plateau():
    # the previous small recipe: patience from epoch 1 on the raw signal, full size throughout
    previous = dict(patience=4, smoothing=0.0, min_epochs=0, low_res_share=0.0)
    before = TrainConfig(arch="small", epochs=24, **previous).resolved()
    assert _replay(DELAYED, before) < 12
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
            config=TrainConfig(arch="tiny", epochs=1).resolved(),
            chance=chance_macro_f1(np.array([0, 1, 2]), 3),
        )
    )


def test_a_real_run_keeps_training_past_a_delayed_signal(tmp_path: Path):
    """Faint patches: ``tiny`` sits near chance for the first epochs, then learns. Patience
    counted from epoch 1 on the raw signal ends the run on the plateau; a minimum number of
    epochs and a smoothed signal carry it past."""
    from tests.conftest import make_tiny_covidx

    data = make_tiny_covidx(tmp_path / "faint", n_per_class=30, n_test_per_class=2, strength=0.6)
    common = dict(
        arch="tiny", epochs=20, lr=3e-3, batch_size=16, schedule="cosine", val_fraction=0.3
    )
    quiet = Console(quiet=True)
    hasty = TrainConfig(**common, patience=4, device="cpu")
    patient = TrainConfig(**common, patience=4, min_epochs=14, smoothing=0.5, device="cpu")
    stopped = train(data, tmp_path / "hasty.pt", config=hasty, console=quiet, resume=False)
    kept = train(data, tmp_path / "patient.pt", config=patient, console=quiet, resume=False)
    assert len(stopped.history) < 12 and stopped.val_metrics["macro_f1"] < 0.45
    assert len(kept.history) >= 14
    assert kept.best_epoch > len(stopped.history)
    assert kept.val_metrics["macro_f1"] >= 0.7


def test_no_stop_in_the_half_size_epochs_and_the_best_epoch_is_full_size():
    config = TrainConfig(
        arch="tiny", epochs=12, patience=1, low_res_share=0.5, low_res_scale=0.5
    ).resolved()
    assert [train_module.input_scale(config, e) for e in (1, 6, 7, 12)] == [0.5, 0.5, 1.0, 1.0]
    # the best validation score comes in a half-size epoch, then full size is worse
    curve = [0.3, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]
    assert _replay(curve, config) == 8  # not before epoch 7; patience counts from there
    fit = _fit_after(curve[:8], config)
    assert fit.state["best_epoch"] == 7


def test_the_monitor_picks_the_best_epoch():
    config = TrainConfig(arch="tiny", epochs=3, patience=0, monitor="loss").resolved()
    fit = _fit_after([0.5, 0.4, 0.6], config)  # loss 1 - f1: lowest at epoch 3
    assert fit.state["best_epoch"] == 3
    with pytest.raises(ValueError, match="monitor"):
        TrainConfig(monitor="kappa")


def test_init_weights_train_with_the_fine_tuning_recipe(tiny_covidx: Path, tmp_path: Path):
    scratch = TrainConfig(arch="small").resolved()
    tuned = TrainConfig(arch="small").resolved(finetune=True)
    assert tuned.lr == pytest.approx(scratch.lr / 10) and tuned.low_res_share == 0.0
    assert tuned.warmup_epochs <= 1 and tuned.min_epochs == 0
    config = TrainConfig(arch="tiny", epochs=1, device="cpu")
    first = train(tiny_covidx, tmp_path / "a.pt", config=config, console=Console(quiet=True))
    console = Console(record=True, width=300)
    train(
        tiny_covidx,
        tmp_path / "b.pt",
        config=config,
        init_weights=first.checkpoint,
        console=console,
    )
    assert "tiny's fine-tuning recipe" in console.export_text()


def test_an_undefined_auroc_neither_crashes_nor_moves_patience():
    """AUROC of a one-class validation split is NaN: the first epoch is still kept as the
    model, and an undefined epoch counts as one without a gain."""
    config = TrainConfig(arch="tiny", epochs=3, patience=1, monitor="auroc").resolved()
    fit = _empty_fit()
    monitor = get_monitor("auroc")
    for epoch in (1, 2):
        metrics = {"accuracy": 0.5, "macro_f1": 0.5, "auroc": float("nan"), "loss": 1.0}
        train_module._record_epoch(fit, epoch, 1.0, metrics, monitor=monitor, smoothing=0.5)
    assert fit.state["best_epoch"] == 1 and "best_metrics" in fit.state
    assert train_module._should_stop(config, fit.state)
