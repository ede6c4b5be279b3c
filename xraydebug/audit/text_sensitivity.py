"""Does the model react to burned-in text? A counterfactual test that needs no ground truth.

Text is pasted onto the test films on which no text was detected, and the model's answers on
the pasted films are compared with its answers on the same films unchanged. What is pasted:

* **text**: crops of the text boxes detected elsewhere in the dataset (all boxes of one donor
  film at once, at their own position, size and intensity, in the model's input frame); where
  the dataset has none, markers rendered by :func:`xraydebug.data.markers.burn_marker` ("L",
  "R", "PORTABLE", dates, site names) on other text-free films;
* **placebo**: crops of the same boxes cut from another text-free film (plain film, no text),
  pasted the same way. It shows what any paste does by itself.

For each class ``C`` (multi-label: each finding, called when its sigmoid reaches the model's
threshold, so a film may be called several findings), ``into[C]`` holds ``text``: the share
of films the model did not call ``C`` that it calls ``C`` once text is pasted; ``placebo``:
the same share with placebo pastes; ``sensitivity`` = text - placebo and its patient-level
bootstrap 95% CI. A model that learned a text shortcut toward COVID-19 has a clearly
positive sensitivity toward COVID-19.

Everything happens in the model's input frame (the film resized to ``S x S`` after its top
``crop_top`` rows are dropped), so the test costs forward passes only: ``1 + 2 x draws``
per film. Pastes are deterministic per ``seed``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from xraydebug.data.labels import LABELS_UNUSED
from xraydebug.data.layouts import load_index
from xraydebug.data.records import DatasetIndex, ImageRecord
from xraydebug.data.text_pool import (
    Box,
    Donor,
    boxes_from_table,
    detected_donors,
    paste,
    placebo_donors,
    rendered_donors,
)
from xraydebug.data.torch_dataset import ImageCache
from xraydebug.device import machine_info, resolve_device
from xraydebug.errors import DatasetError
from xraydebug.fsutil import atomic_write_bytes, atomic_write_json
from xraydebug.models.checkpoint import LoadedModel, load_model
from xraydebug.models.evaluate import check_kind, patient_groups
from xraydebug.models.inference import predict_probs
from xraydebug.runfolder import EXAMPLES_FILE, TEXT_PASS_DIR, TEXT_SENSITIVITY_JSON
from xraydebug.stages import driver
from xraydebug.stages.text import TextConfig, TextStage

__all__ = [
    "TextSensitivityConfig",
    "detected_boxes",
    "print_text_sensitivity",
    "text_sensitivity",
]

RESULT_FILE = TEXT_SENSITIVITY_JSON
_CHUNK = 256  # films pasted and scored at a time
_DETECT_CHUNK = 32  # films decoded and searched for text at a time


@dataclass(frozen=True)
class TextSensitivityConfig:
    """Settings of :func:`text_sensitivity`.

    Attributes:
        draws: pastes per text-free film (each a different donor, and its placebo).
        max_donors: at most this many donor films are decoded for the text pool.
        max_films: test at most this many text-free films (0: all), a seeded sample.
        reacts_above: the model "reacts to text" when the sensitivity toward some class
            exceeds this and its 95% CI excludes 0.
        n_boot: bootstrap resamples (over patients) for the CIs.
        seed: donor, placebo and marker draws.
        batch_size: films per forward pass.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """

    draws: int = 2
    max_donors: int = 256
    max_films: int = 0
    reacts_above: float = 0.05
    n_boot: int = 1000
    seed: int = 0
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.draws < 1 or self.max_donors < 1 or self.max_films < 0 or self.n_boot < 0:
            raise ValueError("draws and max_donors must be >= 1, max_films and n_boot >= 0")


def detected_boxes(
    index: DatasetIndex,
    records: Sequence[ImageRecord],
    *,
    text: TextConfig | None = None,
    out: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[Box]]:
    """The text boxes of ``records`` by path: the text stage
    (:class:`~xraydebug.stages.text.TextStage`) over just those films, resumed from and
    written to ``out`` (None: kept in memory); unreadable films are left out."""
    stage = TextStage(index, text or TextConfig(batch_size=_DETECT_CHUNK), records=list(records))
    table = driver.run(stage, out, progress=progress).table
    ok = table[table["status"] == "ok"]
    return {row.path: json.loads(row.boxes) for row in ok.itertuples()}


def _bootstrap_ci(
    text: np.ndarray,
    placebo: np.ndarray,
    eligible: np.ndarray,
    groups: np.ndarray,
    n_boot: int,
    seed: int,
) -> list[float] | None:
    """95% CI of mean(text) - mean(placebo) over ``eligible`` films, resampling patients."""
    if n_boot == 0 or not eligible.any():
        return None
    _, inverse = np.unique(groups, return_inverse=True)
    n_groups = inverse.max() + 1
    sums_t = np.bincount(inverse, weights=text * eligible, minlength=n_groups)
    sums_p = np.bincount(inverse, weights=placebo * eligible, minlength=n_groups)
    counts = np.bincount(inverse, weights=eligible.astype(float), minlength=n_groups)
    rng = np.random.default_rng([seed, 3])
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    total = counts[draws].sum(1)
    diff = (sums_t[draws].sum(1) - sums_p[draws].sum(1)) / np.maximum(total, 1)
    diff = diff[total > 0]
    if diff.size == 0:
        return None
    return [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))]


def calls(probs: np.ndarray, thresholds: np.ndarray | None) -> np.ndarray:
    """Boolean calls (..., K) of probabilities (..., K): the top class of a softmax model
    (``thresholds`` None), or every finding at or above its threshold (multi-label)."""
    if thresholds is not None:
        return probs >= thresholds
    return np.eye(probs.shape[-1], dtype=bool)[probs.argmax(-1)]


def _moved(called0: np.ndarray, called_t: np.ndarray, called_p: np.ndarray) -> dict[str, Any]:
    """Share of (film, draw) whose calls change with text / placebo (multi-label: any
    finding's call)."""
    return {
        "n": len(called0),
        "text": float((called_t != called0[:, None]).any(2).mean()),
        "placebo": float((called_p != called0[:, None]).any(2).mean()),
    }


def _by_true_label(
    base: np.ndarray,
    text: np.ndarray,
    placebo: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A softmax model's ``changed`` (share of answers that change, by true label) and
    ``into_by_label`` (per true label, the share pushed into each other class)."""
    changed: dict[str, Any] = {}
    by_label: dict[str, Any] = {}
    pred0, pred_t, pred_p = base.argmax(1), text.argmax(2), placebo.argmax(2)
    for k, label in enumerate(classes):
        rows = labels == k
        changed[label] = {
            "n": int(rows.sum()),
            "text": float((pred_t[rows] != pred0[rows, None]).mean()) if rows.any() else 0.0,
            "placebo": float((pred_p[rows] != pred0[rows, None]).mean()) if rows.any() else 0.0,
        }
        by_label[label] = {}
        for c, name in enumerate(classes):
            eligible = rows & (pred0 != c)
            if name == label or not eligible.any():
                continue
            t = float((pred_t[eligible] == c).mean())
            p = float((pred_p[eligible] == c).mean())
            by_label[label][name] = {
                "n": int(eligible.sum()),
                "text": t,
                "placebo": p,
                "sensitivity": t - p,
            }
    return changed, by_label


def summarise(
    base: np.ndarray,
    text: np.ndarray,
    placebo: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    classes: Sequence[str],
    config: TextSensitivityConfig,
    thresholds: np.ndarray | None = None,
) -> dict[str, Any]:
    """The numbers of ``text_sensitivity.json`` from probabilities ``base`` (N, K) and ``text``
    / ``placebo`` (N, D, K) (D draws), true ``labels`` (N,) class indices (multi-label: (N, K)
    findings), bootstrap ``groups``. ``thresholds`` (K,): a multi-label model's, whose films
    are "called FINDING" when its probability reaches the threshold (several at once); then
    ``into_by_label`` is empty and ``changed`` has one entry, ``all`` films."""
    called0 = calls(base, thresholds)
    called_t, called_p = calls(text, thresholds), calls(placebo, thresholds)
    into: dict[str, Any] = {}
    by_label: dict[str, Any] = {}
    prob_change: dict[str, Any] = {}
    for c, name in enumerate(classes):
        eligible = ~called0[:, c]
        share_t = called_t[:, :, c].mean(1)  # per film, over draws
        share_p = called_p[:, :, c].mean(1)
        n = int(eligible.sum())
        t = float(share_t[eligible].mean()) if n else 0.0
        p = float(share_p[eligible].mean()) if n else 0.0
        into[name] = {
            "n": n,
            "text": t,
            "placebo": p,
            "sensitivity": t - p,
            "ci": _bootstrap_ci(share_t, share_p, eligible, groups, config.n_boot, config.seed),
        }
        prob_change[name] = {
            "text": float((text[:, :, c] - base[:, None, c]).mean()),
            "placebo": float((placebo[:, :, c] - base[:, None, c]).mean()),
        }
    if thresholds is not None:
        changed = {"all": _moved(called0, called_t, called_p)}
    else:
        changed, by_label = _by_true_label(base, text, placebo, labels, classes)
    worst = max(classes, key=lambda name: into[name]["sensitivity"])
    w = into[worst]
    reacts = bool(w["sensitivity"] > config.reacts_above and w["ci"] is not None and w["ci"][0] > 0)
    ci = f", 95% CI [{w['ci'][0]:+.0%}, {w['ci'][1]:+.0%}]" if w["ci"] else ""
    detail = (
        f"pasted text makes it call {worst} on {w['text']:.0%} of the films it did not call "
        f"{worst} (placebo pastes: {w['placebo']:.0%}; difference {w['sensitivity']:+.0%}{ci})"
    )
    sentence = (
        f"The model reacts to burned-in text: {detail}."
        if reacts
        else f"The model does not react to burned-in text beyond "
        f"{config.reacts_above:.0%}: at most {detail}."
    )
    return {
        "into": into,
        "into_by_label": by_label,
        "changed": changed,
        "prob_change": prob_change,
        "worst_class": worst,
        "reacts": reacts,
        "sentence": sentence,
    }


@dataclass
class TextSensitivityResult:
    summary: dict[str, Any]
    path: Path | None


def text_sensitivity(
    data: Path | str,
    model: Path | str | LoadedModel | Sequence[LoadedModel],
    out: Path | str | None = "runs/text-sensitivity",
    *,
    split: str = "test",
    boxes: Path | str | dict[str, list[Box]] | None = None,
    config: TextSensitivityConfig = TextSensitivityConfig(),
    manifest: Path | str | None = None,
    text: TextConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    names: Sequence[str] | None = None,
) -> list[TextSensitivityResult]:
    """Run the text-sensitivity test of one or several models (same classes and input frame)
    on the text-free films of ``split``; write ``out/text_sensitivity.json`` and the example
    sheet (one model) or the same under ``out/<name>/`` (``names``, default ``0, 1, ...``).

    ``boxes``: detected text per path (a dict, or a ``scan.csv``/``cleaning.csv``) covering
    the whole dataset; without it the detector runs over ``split``. Donors come from every
    film with boxes; films of ``split`` without boxes are the ones tested.
    """
    began = time.perf_counter()
    device = resolve_device(config.device)
    models = _load_models(model, device)
    first = models[0]
    # the findings' labels play no part in the test: uncertain ones need no policy
    uncertain = first.meta.get("uncertain") or LABELS_UNUSED
    # a multi-label model may name findings the data does not label: read the layout's own
    classes = None if first.multilabel else first.classes
    index = load_index(data, manifest, classes, uncertain=uncertain)
    check_kind(first.multilabel, index)
    tested = index.usable(split)
    if not tested:
        raise DatasetError(f"{index.root}: no readable labelled images in split {split!r}")
    found, source = _find_boxes(
        index, tested, boxes, out=out, split=split, text=text, progress=progress
    )
    rng = np.random.default_rng([config.seed, 0])
    cache = _text_free_films(index, tested, found, first, rng=rng, split=split, config=config)
    films = cache.images[:, 0].float().numpy()
    donors, kind = _choose_donors(index, found, films, first, config=config)
    pastes = _Pastes.draw(films, donors, rng, config.draws)
    probs = _score(pastes, models, device=device, config=config)
    groups = _patient_groups(cache)
    header = {
        "data": str(index.root),
        "split": split,
        "boxes_from": source,
        "donors": kind,
        "n_donors": len(donors),
        "n_films": len(films),
    }
    results = []
    for k, loaded in enumerate(models):
        summary = _model_summary(
            loaded, probs[k], header, cache=cache, groups=groups, config=config, began=began
        )
        path = None
        if out is not None:
            name = str(names[k]) if names else str(k)
            folder = Path(out) if len(models) == 1 else Path(out) / name
            path = _write_result(folder, summary, pastes)
        results.append(TextSensitivityResult(summary, path))
    return results


def _load_models(
    model: Path | str | LoadedModel | Sequence[LoadedModel], device: torch.device
) -> list[LoadedModel]:
    """The models to test, loaded on ``device``; all must share the first one's classes and
    input frame."""
    many = [model] if isinstance(model, (str, Path, LoadedModel)) else list(model)
    models = [m if isinstance(m, LoadedModel) else load_model(m, device) for m in many]
    first = models[0]
    for other in models[1:]:
        if other.classes != first.classes or other.preprocessing != first.preprocessing:
            raise ValueError(f"{other.path}: classes or input frame differ from {first.path}'s")
    return models


def _find_boxes(
    index: DatasetIndex,
    tested: Sequence[ImageRecord],
    boxes: Path | str | dict[str, list[Box]] | None,
    *,
    out: Path | str | None,
    split: str,
    text: TextConfig | None,
    progress: Callable[[int, int], None] | None,
) -> tuple[dict[str, list[Box]], str]:
    """The text boxes by path and where they came from: ``boxes`` as given or read from a
    table, else the detector over the ``tested`` films."""
    if boxes is None:
        folder = Path(out) / TEXT_PASS_DIR if out is not None else None
        found = detected_boxes(index, tested, text=text, out=folder, progress=progress)
        name = (text or TextConfig()).text_detector().name
        return found, f"detector {name} on split {split}"
    if isinstance(boxes, dict):
        return boxes, "boxes given"
    return boxes_from_table(boxes), str(boxes)


def _text_free_films(
    index: DatasetIndex,
    tested: Sequence[ImageRecord],
    found: dict[str, list[Box]],
    first: LoadedModel,
    *,
    rng: np.random.Generator,
    split: str,
    config: TextSensitivityConfig,
) -> ImageCache:
    """The decoded films of ``tested`` without text (a seeded sample of ``max_films``)."""
    free = [r for r in tested if r.path in found and not found[r.path]]
    if config.max_films and len(free) > config.max_films:
        free = [free[i] for i in sorted(rng.choice(len(free), config.max_films, False))]
    prep = first.preprocessing
    cache = ImageCache.build(index.root, free, first.classes, prep.input_size, prep.crop_top)
    if len(cache) < 2:
        raise DatasetError(
            f"{index.root}: {len(cache)} readable text-free film(s) in split {split!r}; "
            "the text-sensitivity test needs at least 2"
        )
    return cache


def _choose_donors(
    index: DatasetIndex,
    found: dict[str, list[Box]],
    films: np.ndarray,
    first: LoadedModel,
    *,
    config: TextSensitivityConfig,
) -> tuple[list[Donor], str]:
    """The text to paste and its kind: the detected boxes of every film with text, else
    markers rendered on the text-free ``films``."""
    prep = first.preprocessing
    donors = detected_donors(
        index.root,
        [r for r in index.usable() if found.get(r.path)],
        found,
        first.classes,
        prep.input_size,
        prep.crop_top,
        config.max_donors,
        config.seed,
    )
    if donors:
        return donors, "detected"
    donors = rendered_donors(films, min(config.max_donors, 64), config.seed)
    if not donors:
        raise DatasetError(
            f"{index.root}: no text to paste (none detected, none could be rendered)"
        )
    return donors, "rendered"


@dataclass(frozen=True)
class _Pastes:
    """The text-free ``films`` (N, S, S) and, per draw, the donor each one gets (``picks``)
    and the other film its placebo is cut from (``sources``), both (draws, N)."""

    films: np.ndarray
    donors: list[Donor]
    picks: np.ndarray
    sources: np.ndarray

    @classmethod
    def draw(
        cls, films: np.ndarray, donors: list[Donor], rng: np.random.Generator, draws: int
    ) -> _Pastes:
        """Draw donors and placebo sources from ``rng``."""
        n = len(films)
        picks = rng.integers(0, len(donors), size=(draws, n))
        # placebo source: another text-free film, never the film itself
        sources = (np.arange(n)[None] + rng.integers(1, n, size=(draws, n))) % n
        return cls(films, donors, picks, sources)

    @property
    def draws(self) -> int:
        return len(self.picks)

    def variants(self, rows: slice) -> np.ndarray:
        """(1 + 2 draws, m, S, S): the films of ``rows`` unchanged, with text, with placebo."""
        part = self.films[rows]
        picks, sources = self.picks[:, rows], self.sources[:, rows]
        with_text = [paste(part, self.donors, picks[d]) for d in range(self.draws)]
        with_placebo = [
            paste(
                part,
                placebo_donors([self.donors[int(k)] for k in picks[d]], self.films, sources[d]),
                np.arange(len(part)),
            )
            for d in range(self.draws)
        ]
        return np.stack([part, *with_text, *with_placebo])


def _score(
    pastes: _Pastes,
    models: Sequence[LoadedModel],
    *,
    device: torch.device,
    config: TextSensitivityConfig,
) -> list[np.ndarray]:
    """Each model's probabilities (1 + 2 draws, N, K) on the films unchanged and pasted."""
    films, draws = pastes.films, pastes.draws
    n, prep = len(films), models[0].preprocessing
    probs = [np.zeros((1 + 2 * draws, n, len(models[0].classes))) for _ in models]
    for start in range(0, n, _CHUNK):  # memory: (1 + 2 draws) x _CHUNK films at a time
        rows = slice(start, min(start + _CHUNK, n))
        stacked = torch.from_numpy(pastes.variants(rows).reshape(-1, 1, *films.shape[1:]))
        for k, loaded in enumerate(models):
            out_k = predict_probs(
                loaded.model,
                prep,
                stacked,
                device,
                config.batch_size,
                activation=loaded.activation,
            )
            probs[k][:, rows] = out_k.numpy().reshape(1 + 2 * draws, rows.stop - start, -1)
    return probs


def _patient_groups(cache: ImageCache) -> np.ndarray:
    """The bootstrap group (patient) of each film of ``cache``."""
    table = pd.DataFrame(
        {
            "path": [r.path for r in cache.records],
            "patient_id": [r.patient_id for r in cache.records],
        }
    )
    return patient_groups(table)


def _model_summary(
    loaded: LoadedModel,
    probs: np.ndarray,
    header: dict[str, Any],
    *,
    cache: ImageCache,
    groups: np.ndarray,
    config: TextSensitivityConfig,
    began: float,
) -> dict[str, Any]:
    """The ``text_sensitivity.json`` of one model from its probabilities (1 + 2 draws, N, K)."""
    base = probs[0]
    text = probs[1 : 1 + config.draws].transpose(1, 0, 2)
    placebo = probs[1 + config.draws :].transpose(1, 0, 2)
    classes = loaded.classes
    labels = cache.labels.numpy()
    thresholds = None
    if loaded.multilabel:
        thresholds = np.asarray(loaded.decision_thresholds)
    summary = {
        "classes": list(classes),
        "multilabel": loaded.multilabel,
        "thresholds": thresholds.tolist() if thresholds is not None else None,
        "model": str(loaded.path) if loaded.path else None,
        "model_sha256": loaded.sha256,
        **header,
        "seconds": round(time.perf_counter() - began, 2),  # all models so far, with decoding
        "machine": machine_info(),
        "skipped": [{"path": r.path, "error": m} for r, m in cache.failed],
        "config": {k: v for k, v in asdict(config).items() if k != "device"},
        **summarise(base, text, placebo, labels, groups, classes, config, thresholds),
    }
    summary["examples"] = _examples(base, text, placebo, cache)
    return summary


def _write_result(folder: Path, summary: dict[str, Any], pastes: _Pastes) -> Path:
    """Write the example sheet and ``text_sensitivity.json`` of one model into ``folder``."""
    sheet = [
        pastes.variants(slice(e["index"], e["index"] + 1))[[0, 1, 1 + pastes.draws], 0]
        for e in summary["examples"]
    ]
    atomic_write_bytes(folder / EXAMPLES_FILE, _example_sheet(sheet))
    return atomic_write_json(folder / RESULT_FILE, summary)


def _example_sheet(rows: Sequence[tuple[np.ndarray, ...]], gap: int = 4) -> bytes:
    """PNG bytes: one row per example, (unchanged | text pasted | placebo pasted)."""
    lines = []
    for row in rows:
        tiles = []
        for tile in row:
            tiles += [
                np.rint(np.clip(tile, 0, 1) * 255).astype(np.uint8),
                np.full((tile.shape[0], gap), 255, np.uint8),
            ]
        lines += [
            np.hstack(tiles[:-1]),
            np.full((gap, sum(t.shape[1] for t in tiles[:-1])), 255, np.uint8),
        ]
    ok, png = cv2.imencode(".png", np.vstack(lines[:-1]))
    if not ok:  # pragma: no cover - OpenCV failure
        raise RuntimeError("could not encode the example sheet")
    return png.tobytes()


def _examples(
    base: np.ndarray,
    text: np.ndarray,
    placebo: np.ndarray,
    cache: ImageCache,
    n: int = 4,
) -> list[dict[str, Any]]:
    """The films whose answer moved most with text (first draw): path and probabilities."""
    shift = np.abs(text[:, 0] - base).sum(1)
    rows = []
    for i in np.argsort(-shift)[:n]:
        rows.append(
            {
                "index": int(i),
                "path": cache.records[int(i)].path,
                "label": cache.records[int(i)].label,
                "base": base[i].round(4).tolist(),
                "text": text[i, 0].round(4).tolist(),
                "placebo": placebo[i, 0].round(4).tolist(),
            }
        )
    return rows


def text_sensitivity_table(summary: dict[str, Any], title: str = "") -> Table:
    """A rich table of ``into[C]``: text, placebo, sensitivity and its CI per class."""
    table = Table(title=title or "Does the model react to burned-in text?")
    first = "now called (finding)" if summary.get("multilabel") else "pushed into"
    for name in (first, "with text", "placebo", "text - placebo [95% CI]"):
        table.add_column(name, justify="left" if name == first else "right")
    for cls, row in summary["into"].items():
        ci = f" [{row['ci'][0]:+.2f}, {row['ci'][1]:+.2f}]" if row["ci"] else ""
        table.add_row(
            cls, f"{row['text']:.2f}", f"{row['placebo']:.2f}", f"{row['sensitivity']:+.2f}{ci}"
        )
    table.caption = (
        f"{summary['n_films']} text-free films, {summary['config']['draws']} pastes each, "
        f"{summary['n_donors']} {summary['donors']} text donors; share of the films not called "
        + (
            "a finding that are called it"
            if summary.get("multilabel")
            else "a class that become that class"
        )
    )
    return table


def print_text_sensitivity(summary: dict[str, Any], console: Console) -> None:
    console.print(text_sensitivity_table(summary))
    colour = "red" if summary["reacts"] else "green"
    console.print(f"[{colour}]{summary['sentence']}[/]", highlight=False)
