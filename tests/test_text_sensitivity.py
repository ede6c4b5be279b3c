"""The text-sensitivity test and text decorrelation: hand-built numbers, then tiny real models
trained with and without a planted text shortcut."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import TINY_TRAIN, tree_digest
from xraydebug.audit import text_sensitivity as ts_module
from xraydebug.audit.text_sensitivity import TextSensitivityConfig, summarise, text_sensitivity
from xraydebug.cli import app
from xraydebug.data.text_pool import Donor, boxes_from_table, input_box, paste, paste_random
from xraydebug.models.checkpoint import read_checkpoint
from xraydebug.models.train import train

CLASSES = ("normal", "pneumonia", "COVID-19")
FAST = TextSensitivityConfig(n_boot=200, device="cpu")
LEVELS = (95.0, 90.0, 85.0)  # classes close in brightness: the marker is the easier cue


def test_summarise_hand_built() -> None:
    # 4 films, 1 draw; the model calls films 0-2 normal and film 3 COVID-19
    base = np.array([[0.9, 0.05, 0.05]] * 3 + [[0.1, 0.1, 0.8]])
    text = base.copy()[:, None]
    text[0, 0], text[1, 0] = [0.2, 0.1, 0.7], [0.3, 0.1, 0.6]  # text pushes two into COVID-19
    placebo = base.copy()[:, None]
    labels = np.array([0, 0, 1, 2])
    # ten patients of each kind, so the bootstrap CI can exclude 0
    base, text, placebo, labels = (np.concatenate([a] * 10) for a in (base, text, placebo, labels))
    out = summarise(base, text, placebo, labels, np.arange(40), CLASSES, FAST)
    covid = out["into"]["COVID-19"]
    assert covid["n"] == 30 and covid["text"] == pytest.approx(2 / 3) and covid["ci"][0] > 0.3
    assert covid["placebo"] == 0.0 and covid["sensitivity"] == pytest.approx(2 / 3)
    assert out["into_by_label"]["normal"]["COVID-19"]["text"] == 1.0
    assert out["into_by_label"]["pneumonia"]["COVID-19"]["text"] == 0.0
    assert out["changed"]["normal"] == {"n": 20, "text": 1.0, "placebo": 0.0}
    assert out["prob_change"]["COVID-19"]["text"] == pytest.approx((0.65 + 0.55) / 4)
    assert out["worst_class"] == "COVID-19" and out["sentence"].startswith("The model reacts")
    # the same pushes by the placebo cancel out: no reaction to the text itself
    even = summarise(base, text, text, labels, np.arange(40), CLASSES, FAST)
    assert even["into"]["COVID-19"]["sensitivity"] == 0.0 and not even["reacts"]


def test_input_box_follows_crop_and_resize() -> None:
    # a 200 x 100 film (H x W), top 10% dropped, resized to 64: y scale 64/180, x scale 64/100
    assert input_box([10, 30, 20, 48], (200, 100), 64, 0.1) == [6, 3, 13, 10]
    assert input_box([10, 0, 20, 15], (200, 100), 64, 0.1) is None  # in the dropped rows


def test_paste_and_random_paste() -> None:
    films = np.zeros((3, 8, 8), np.float32)
    donor = Donor("d", [[1, 1, 3, 2]], [np.ones((1, 2), np.float32)])
    out = paste(films, [donor], np.array([0, 0, 0]))
    assert out[:, 1, 1:3].sum() == 6 and out.sum() == 6 and films.sum() == 0
    gray = torch.zeros(64, 1, 8, 8)
    first = paste_random(gray, [donor], 0.5, torch.Generator().manual_seed(1))
    again = paste_random(gray, [donor], 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and gray.sum() == 0
    assert 16 <= int((first.flatten(1).sum(1) > 0).sum()) <= 48  # about half


def _marker(pixels: np.ndarray, rng: np.random.Generator, draw: bool = True) -> list[int]:
    """A dark 12 px "L" on a grey label at a random corner of a 64 px film; its box (the
    same random draws whether or not it is ``draw``n, so a set without markers is a twin)."""
    x = int(rng.choice([3, 49]))
    y = int(rng.choice([3, 49]))
    if not draw:
        return [x, y, x + 12, y + 12]
    pixels[y : y + 12, x : x + 12] = 130  # a grey label with a dark "L": about the film's
    pixels[y + 1 : y + 11, x + 2 : x + 5] = 20  # mean brightness, so a model that goes by
    pixels[y + 8 : y + 11, x + 2 : x + 10] = 20  # brightness is not moved by it
    return [x, y, x + 12, y + 12]


def shortcut_set(
    root: Path,
    text_share: dict[str, float],
    n_train: int = 16,
    n_test: int = 12,
    draw: bool = True,
    levels: tuple[float, float, float] = (100, 90, 80),
) -> Path:
    """Classes differ, weakly, by the film's brightness (class means ``levels`` grey levels,
    each film drawn around its class mean with sd 6); in train the first ``text_share[label]``
    share of each class's films carry the marker; in test half of each class does.
    ``boxes.csv`` lists the markers (``scan.csv`` columns). ``draw=False`` writes the same
    films without their markers (a perfectly cleaned copy; ``boxes.csv`` still lists them)."""
    rng = np.random.default_rng(3)
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        lines = []
        for k, label in enumerate(CLASSES):
            for i in range(n):
                level = rng.normal(levels[k], 6)
                pixels = rng.normal(level, 10, size=(64, 64))
                boxes = []
                if split == "test":
                    with_text = bool(i % 2)
                else:
                    with_text = i < round(text_share.get(label, 0.0) * n)
                if with_text:
                    boxes.append(_marker(pixels, rng, draw))
                name = f"{split}_{label}_{i}.png"
                (root / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / split / name)
                lines.append(f"{split[:2]}{k}{i} {name} {label} site-a")
                rows.append({"path": f"{split}/{name}", "n_boxes": len(boxes), "boxes": boxes})
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    table = pd.DataFrame(rows)
    table["boxes"] = table["boxes"].map(json.dumps)
    table.to_csv(root / "boxes.csv", index=False)
    return root


@pytest.fixture(scope="module")
def shortcut_models(tmp_path_factory: pytest.TempPathFactory):
    """Tiny models: ``shortcut`` (all COVID-19 training films carry the marker, no other),
    ``unbiased`` (half of every class does) and ``decorrelated`` (the shortcut set, with the
    marker pasted onto 90% of the films of every class while training)."""
    root = tmp_path_factory.mktemp("ts")
    shortcut = shortcut_set(root / "shortcut", {"COVID-19": 1.0}, levels=LEVELS)
    unbiased = shortcut_set(root / "unbiased", dict.fromkeys(CLASSES, 0.5), levels=LEVELS)
    recipe = replace(TINY_TRAIN, epochs=12, lr=5e-3, augment=False)
    pool = {"text_data": str(shortcut), "text_boxes": str(shortcut / "boxes.csv")}
    decorrelated = replace(recipe, decorrelate_text=0.9, **pool)
    return {
        "data": shortcut,
        "shortcut": train(shortcut, root / "shortcut.pt", config=recipe).checkpoint,
        "unbiased": train(unbiased, root / "unbiased.pt", config=recipe).checkpoint,
        "decorrelated": train(shortcut, root / "decorrelated.pt", config=decorrelated).checkpoint,
    }


def test_text_sensitivity_tells_a_shortcut_model_from_an_unbiased_one(
    shortcut_models, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = shortcut_models["data"]
    before = tree_digest(data)
    boxes = data / "boxes.csv"
    reacting, unbiased = text_sensitivity(
        data,
        [shortcut_models["shortcut"], shortcut_models["unbiased"]],
        tmp_path / "ts",
        boxes=boxes,
        config=FAST,
        names=("shortcut", "unbiased"),
    )
    covid = reacting.summary["into"]["COVID-19"]
    assert covid["ci"][0] > 0 and covid["sensitivity"] > 0.1, covid
    assert reacting.summary["reacts"] and reacting.summary["donors"] == "detected"
    assert 0 < reacting.summary["seconds"] < 60
    assert abs(unbiased.summary["into"]["COVID-19"]["sensitivity"]) <= 0.1, unbiased.summary
    assert not unbiased.summary["reacts"], unbiased.summary["into"]
    assert (tmp_path / "ts" / "shortcut" / "text_sensitivity.json").exists()
    assert (tmp_path / "ts" / "unbiased" / "text_sensitivity_examples.png").stat().st_size > 0
    # deterministic per seed, in chunks of any size, and the data is untouched
    monkeypatch.setattr(ts_module, "_CHUNK", 5)
    (again,) = text_sensitivity(data, shortcut_models["shortcut"], None, boxes=boxes, config=FAST)
    assert again.summary["into"] == reacting.summary["into"]
    assert tree_digest(data) == before


def test_decorrelated_training_does_not_learn_the_text(shortcut_models) -> None:
    # trained on the very films whose text made the shortcut model above react
    data = shortcut_models["data"]
    (found,) = text_sensitivity(
        data, shortcut_models["decorrelated"], None, boxes=data / "boxes.csv", config=FAST
    )
    covid = found.summary["into"]["COVID-19"]
    assert not found.summary["reacts"], covid
    (shortcut,) = text_sensitivity(
        data, shortcut_models["shortcut"], None, boxes=data / "boxes.csv", config=FAST
    )
    assert covid["sensitivity"] <= shortcut.summary["into"]["COVID-19"]["sensitivity"] / 3
    meta = read_checkpoint(shortcut_models["decorrelated"])
    assert meta["text_pool"]["kind"] == "detected" and meta["text_pool"]["probability"] == 0.9
    card = Path(shortcut_models["decorrelated"]).with_suffix(".md").read_text()
    assert "Text decorrelation: burned-in text pasted onto 90%" in card


def test_cli_evaluate_text_sensitivity(shortcut_models, tmp_path) -> None:
    data = shortcut_models["data"]
    args = ["evaluate", str(data), "--model", str(shortcut_models["shortcut"]), "--out"]
    args += [str(tmp_path / "eval"), "--text-sensitivity", "--boxes", str(data / "boxes.csv")]
    args += ["--device", "cpu", "--n-boot", "100"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "reacts to burned-in text" in result.output
    saved = json.loads((tmp_path / "eval" / "text_sensitivity.json").read_text())
    assert set(saved["into"]["COVID-19"]) >= {"text", "placebo", "sensitivity", "ci"}
    assert boxes_from_table(data / "boxes.csv")["test/test_normal_1.png"]


def test_bench_gap_and_targets_are_plain_json() -> None:
    from benchmarks.text_sensitivity_bench import _flags, _gap, _targets, _two_sided

    rows = [
        {"label": "normal", "text": True, "n": 10, "after": {"COVID-19": np.float64(0.3)}},
        {"label": "normal", "text": False, "n": 10, "after": {"COVID-19": 0.1}},
        {"label": "COVID-19", "text": True, "n": 5, "after": {"COVID-19": 1.0}},
        {"label": "COVID-19", "text": False, "n": 5, "after": {"COVID-19": 1.0}},
    ]
    assert _gap(rows, "after") == pytest.approx(0.2)
    model = {"accuracy": np.float64(0.9), "macro_f1": 0.9, "gap": 0.0, "sensitivity": 0.0}
    result = {
        "shortcut": {**model, "ci": [0.1, 0.3]},
        "oracle": dict(model),
        "clean+decorrelate": {**model, "accuracy": np.float64(0.97)},  # above the oracle: fine
    }
    targets = _targets(result)
    assert all(targets.values()) and json.loads(json.dumps(targets)) == targets
    assert _flags(result) == []
    two_sided = _two_sided(result)  # 0.07 above the oracle: outside 0.05 two-sided
    assert json.loads(json.dumps(two_sided)) == two_sided
    assert two_sided["accuracy"]["abs_diff_from_oracle"] == pytest.approx(0.07)
    assert two_sided["accuracy"]["within_0.05"] is False
    assert two_sided["macro_f1"] == {"abs_diff_from_oracle": 0.0, "within_0.05": True}


BENCH_PASSING = {
    "shortcut": {
        "accuracy": 0.5,
        "macro_f1": 0.5,
        "gap": 0.8,
        "sensitivity": 0.8,
        "ci": [0.7, 0.9],
    },
    "oracle": {"accuracy": 0.9, "macro_f1": 0.9, "sensitivity": 0.01, "ci": [0.0, 0.02]},
    "clean+decorrelate": {
        "accuracy": 0.92,
        "macro_f1": 0.91,
        "gap": 0.0,
        "sensitivity": 0.0,
        "ci": [0.0, 0.0],
    },
}
BENCH_TARGETS = [
    "shortcut CI excludes 0",
    "oracle |sensitivity| <= 0.05",
    "decorrelate sensitivity <= 0.05",
    "decorrelate gap <= 0.05",
    "decorrelate sensitivity >= -0.05",
    "decorrelate gap >= -0.05",
    "decorrelate accuracy >= oracle - 0.05",
    "decorrelate macro-F1 >= oracle - 0.05",
]


@pytest.mark.parametrize(
    ("model", "change", "failing", "flags"),
    [
        ("shortcut", {"ci": [-0.01, 0.9]}, "shortcut CI excludes 0", []),
        ("shortcut", {"ci": None}, "shortcut CI excludes 0", []),
        ("oracle", {"sensitivity": -0.06}, "oracle |sensitivity| <= 0.05", []),
        ("oracle", {"sensitivity": 0.06}, "oracle |sensitivity| <= 0.05", []),
        ("clean+decorrelate", {"sensitivity": 0.06}, "decorrelate sensitivity <= 0.05", []),
        ("clean+decorrelate", {"gap": 0.06}, "decorrelate gap <= 0.05", []),
        (
            "clean+decorrelate",
            {"sensitivity": -0.06},
            "decorrelate sensitivity >= -0.05",
            ["over-correction: decorrelate sensitivity -0.060 < -0.05"],
        ),
        (
            "clean+decorrelate",
            {"gap": -0.06},
            "decorrelate gap >= -0.05",
            ["over-correction: decorrelate gap -0.060 < -0.05"],
        ),
        ("clean+decorrelate", {"accuracy": 0.84}, "decorrelate accuracy >= oracle - 0.05", []),
        ("clean+decorrelate", {"macro_f1": 0.84}, "decorrelate macro-F1 >= oracle - 0.05", []),
    ],
)
def test_bench_targets_fail_one_check_at_a_time(
    model: str, change: dict, failing: str, flags: list[str]
) -> None:
    from benchmarks.text_sensitivity_bench import _flags, _targets, _verdict

    result = {**BENCH_PASSING, model: {**BENCH_PASSING[model], **change}}
    targets = _targets(result)
    assert list(targets) == BENCH_TARGETS
    assert [name for name, ok in targets.items() if not ok] == [failing]
    assert _flags(result) == flags
    seed = {"targets": targets, "flags": flags}
    assert _verdict([seed, seed]) == {"targets_passed": 14, "targets": 16, "flags": 2 * len(flags)}
    assert all(_targets(BENCH_PASSING).values()) and _flags(BENCH_PASSING) == []


@pytest.mark.parametrize(
    ("decorrelate", "oracle", "accuracy", "macro_f1"),
    [
        # seed 0 of benchmarks/README.md: one-sided PASS, two-sided outside 0.05
        ((0.979, 0.977), (0.871, 0.867), (0.108, False), (0.110, False)),
        ((0.975, 0.974), (0.929, 0.929), (0.046, True), (0.045, True)),  # seed 1
        ((0.912, 0.907), (0.942, 0.940), (0.030, True), (0.033, True)),  # seed 2
        ((0.84, 0.96), (0.90, 0.90), (0.06, False), (0.06, False)),  # below and above
    ],
)
def test_bench_two_sided_distance_from_the_oracle(
    decorrelate: tuple[float, float],
    oracle: tuple[float, float],
    accuracy: tuple[float, bool],
    macro_f1: tuple[float, bool],
) -> None:
    from benchmarks.text_sensitivity_bench import _two_sided

    result = {
        "oracle": dict(zip(("accuracy", "macro_f1"), oracle, strict=True)),
        "clean+decorrelate": dict(zip(("accuracy", "macro_f1"), decorrelate, strict=True)),
    }
    two_sided = _two_sided(result)
    for key, (diff, within) in (("accuracy", accuracy), ("macro_f1", macro_f1)):
        assert two_sided[key]["abs_diff_from_oracle"] == pytest.approx(diff)
        assert two_sided[key]["within_0.05"] is within
