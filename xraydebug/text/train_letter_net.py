"""Train the side-letter network (:mod:`xraydebug.text.letter_net`) and write its weights.

Every example is a crop built the way the detector sees a candidate, then cut into a shape by
the detector's own code (:func:`xraydebug.text.glyphs.glyph_shape`, ``letterbox``):

- **positives**: "L" and "R" in every TrueType face of the *tuning* font set
  (:func:`xraydebug.data.fonts.font_set`), upright, turned by a quarter or by any angle,
  mirrored (30%), stencilled (25%);
- **negatives**: every other capital and digit of the same faces; procedural device-like
  shapes (rings with and without a centre dot, arcs, straight and bent bars, hooks, crosses,
  equal-armed corners, blobs, wavy strokes); and the shapes that proposals find on text-free
  synthetic films (anatomy), from seeds no benchmark uses.

Each crop has a random background (level, gradient, smooth texture, sometimes an edge), ink
brighter or darker by 0.08-0.8, sometimes on a flat label, then blur (resampling), noise and
sometimes JPEG. The benchmark's held-out font families and renderers are never used.

Usage::

    python -m xraydebug.text.train_letter_net            # writes xraydebug/text/weights/
    python -m xraydebug.text.train_letter_net --out /tmp/letters --n 4000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import string
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from xraydebug.data.clutter import add_clutter
from xraydebug.data.fonts import Face, font_set, render_face
from xraydebug.data.synth import render_radiograph
from xraydebug.data.wild_text import burn_wild_marker, degrade, wild_text
from xraydebug.fsutil import file_sha256
from xraydebug.text.glyphs import SIDE_LETTERS, glyph_input, glyph_shape, letterbox
from xraydebug.text.letter_net import IN_CHANNELS, SHAPE_PX, LetterNet, weights_path
from xraydebug.text.verified import MIN_LETTER_GLYPH_PX, VerifiedConfig, propose, view
from xraydebug.text.zoom import ZoomCrop

OTHER_GLYPHS = tuple(c for c in string.ascii_uppercase + string.digits if c not in SIDE_LETTERS)
SHAPE_KINDS = ("ring", "arc", "bar", "bent", "hook", "cross", "corner", "blob", "wave")
FILM_SEED = 777  # text_bench uses seeds 0 (held out) and 1 (tuning)
# clutter kinds drawn on the training films; the benchmark's clips and ECG leads stay unseen
TRAIN_CLUTTER = ("wire", "tube", "catheter", "ruler", "jewellery")
_MIN_READABLE_IOU = 0.6


def _turn(coverage: np.ndarray, angle: float) -> np.ndarray:
    h, w = coverage.shape
    side = int(np.ceil(np.hypot(h, w))) + 4
    canvas = np.zeros((side, side), np.float32)
    canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = coverage
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
    out = cv2.warpAffine(canvas, matrix, (side, side), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(out > 0.05)
    return out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _angle(rng: np.random.Generator) -> float:
    return (
        float(rng.choice([0, 90, 180, 270])) if rng.random() < 0.5 else float(rng.uniform(0, 360))
    )


def _glyph(rng: np.random.Generator, faces: list[Face], text: str, cap: float) -> np.ndarray:
    face = faces[int(rng.integers(len(faces)))]
    ink = render_face(face, text, cap, stencil=bool(rng.random() < 0.25))
    if rng.random() < 0.3:
        ink = ink[:, ::-1]
    return _turn(ink, _angle(rng))


def _shape(rng: np.random.Generator, kind: str, cap: float) -> np.ndarray:
    """A device-like stroke shape about ``cap`` px tall: coverage float32 in [0, 1]."""
    size = int(cap * 1.6) + 8
    canvas = np.zeros((size * 4, size * 4), np.uint8)  # drawn at 4x, area-averaged down
    c = size * 2
    r = cap * 2 * rng.uniform(0.7, 1.0)
    t = max(4, int(cap * 4 * rng.uniform(0.06, 0.22)))
    angle = rng.uniform(0, 360)
    if kind == "ring":
        cv2.circle(canvas, (c, c), int(r), 255, t, cv2.LINE_AA)
        if rng.random() < 0.6:
            cv2.circle(canvas, (c, c), int(r * rng.uniform(0.15, 0.35)), 255, -1, cv2.LINE_AA)
    elif kind == "arc":
        span = rng.uniform(180, 320)
        cv2.ellipse(canvas, (c, c), (int(r), int(r * rng.uniform(0.6, 1))), angle, 0, span, 255, t)
    elif kind in ("bar", "bent", "hook", "corner", "cross"):
        a = np.deg2rad(angle)
        tip = np.array([np.cos(a), np.sin(a)]) * r
        if kind == "bar":
            pts = [(c - tip[0], c - tip[1]), (c + tip[0], c + tip[1])]
        else:
            turn = {
                "bent": rng.choice([rng.uniform(15, 60), rng.uniform(120, 170)]),
                "hook": rng.uniform(140, 180),
                "corner": 90.0,
                "cross": 90.0,
            }[kind]
            b = a + np.deg2rad(turn)
            arm = rng.uniform(0.85, 1.0) if kind == "corner" else rng.uniform(0.3, 1.0)
            other = np.array([np.cos(b), np.sin(b)]) * r * arm
            if kind == "cross":
                cv2.line(canvas, _pt(c - other), _pt(c + other), 255, t, cv2.LINE_AA)
                pts = [(c - tip[0], c - tip[1]), (c + tip[0], c + tip[1])]
            else:
                pts = [(c + tip[0], c + tip[1]), (c, c), (c + other[0], c + other[1])]
        cv2.polylines(canvas, [np.array(pts, np.int32)], False, 255, t, cv2.LINE_AA)
    elif kind == "blob":
        axes = (int(r * rng.uniform(0.3, 1)), int(r * rng.uniform(0.3, 1)))
        cv2.ellipse(canvas, (c, c), axes, angle, 0, 360, 255, -1, cv2.LINE_AA)
    else:  # wave
        xs = np.linspace(-r, r, 40)
        ys = np.sin(xs / r * np.pi * rng.uniform(1, 3)) * r * rng.uniform(0.2, 0.6)
        a = np.deg2rad(angle)
        pts = np.stack(
            [c + xs * np.cos(a) - ys * np.sin(a), c + xs * np.sin(a) + ys * np.cos(a)], 1
        )
        cv2.polylines(canvas, [pts.astype(np.int32)], False, 255, t, cv2.LINE_AA)
    small = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    ys, xs = np.nonzero(small > 0.05)
    if ys.size == 0:
        return np.ones((4, 4), np.float32)
    return small[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(p[0]), int(p[1])


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    level = rng.uniform(0.05, 0.95)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grad = rng.normal(0, 0.15, 2) / max(h, w)
    bg = level + grad[0] * (xx - w / 2) + grad[1] * (yy - h / 2)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 4)
    bg = bg + texture * rng.uniform(0, 0.2)
    if rng.random() < 0.3:  # an anatomy edge across the crop
        a = rng.uniform(0, np.pi)
        d = (xx - w / 2) * np.cos(a) + (yy - h / 2) * np.sin(a) - rng.uniform(-0.3, 0.3) * w
        bg = bg + rng.uniform(-0.3, 0.3) / (1 + np.exp(-d / rng.uniform(1, 6)))
    return bg.astype(np.float32)


def _crop(rng: np.random.Generator, coverage: np.ndarray) -> ZoomCrop:
    """``coverage`` drawn on a random background as the detector would crop it."""
    h, w = coverage.shape
    pad = int(max(4, 0.5 * min(h, w) * rng.uniform(0.5, 1.0)))
    bg = _background(rng, h + 2 * pad, w + 2 * pad)
    alpha = np.zeros_like(bg)
    alpha[pad : pad + h, pad : pad + w] = coverage
    if rng.random() < 0.3:  # a flat label around the glyph
        m = int(pad * rng.uniform(0.3, 0.9))
        bg[pad - m : pad + h + m, pad - m : pad + w + m] = rng.choice(
            [rng.uniform(0.85, 1), rng.uniform(0, 0.12)]
        )
    surround = float(np.median(bg[alpha > 0.5])) if (alpha > 0.5).any() else 0.5
    contrast = rng.uniform(0.08, 0.8)
    ink = surround + contrast if (surround < 0.5) == (rng.random() < 0.8) else surround - contrast
    image = bg * (1 - alpha) + np.clip(ink, 0, 1) * alpha
    sigma = rng.uniform(0, 1.5) if rng.random() < 0.6 else 0.0
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image = image + rng.normal(0, rng.uniform(0, 0.02), image.shape).astype(np.float32)
    image = np.clip(image, 0, 1).astype(np.float32)
    if rng.random() < 0.3:
        _, data = cv2.imencode(
            ".jpg",
            np.round(image * 255).astype(np.uint8),
            [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 91))],
        )
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    core = alpha > rng.uniform(0.3, 0.7)
    if rng.random() < 0.3:  # strokes found only in part (thick strokes: their edges)
        core &= cv2.erode(core.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
    grow = int(rng.integers(3, 7))
    mask = cv2.dilate(core.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0
    return ZoomCrop(0, image, mask, core)


def _example(rng: np.random.Generator, coverage: np.ndarray) -> np.ndarray | None:
    """The shape the detector cuts from ``coverage`` on a random crop; None when it cuts none,
    or one that does not resemble the drawn shape (IoU of the letterboxed shapes under
    :data:`_MIN_READABLE_IOU`: an unreadable cut would teach the network that blobs are
    letters)."""
    shape = glyph_shape(_crop(rng, coverage))
    if shape is None:
        return None
    cut, drawn = letterbox(shape.mask), letterbox((coverage > 0.5).astype(np.uint8))
    inter = np.minimum(cut, drawn).sum()
    if inter < _MIN_READABLE_IOU * np.maximum(cut, drawn).sum():
        return None
    return glyph_input(shape)


def synthetic_examples(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples per class half (positives; other glyphs and shapes): shapes float32
    ``(M, 2, 32, 32)`` (see ``glyph_input``), labels float32 ``(M,)`` (1 side letter)."""
    rng = np.random.default_rng(seed)
    faces = [f for f in font_set("tuning") if f.renderer == "truetype"]
    shapes, labels = [], []
    for i in range(2 * n):
        cap = float(np.exp(rng.uniform(np.log(16), np.log(80))))
        if i % 2 == 0:
            coverage = _glyph(rng, faces, str(rng.choice(SIDE_LETTERS)), cap)
        elif rng.random() < 0.6:
            coverage = _glyph(rng, faces, str(rng.choice(OTHER_GLYPHS)), cap)
        else:
            coverage = _shape(rng, str(rng.choice(SHAPE_KINDS)), cap)
        example = _example(rng, coverage)
        if example is not None:
            shapes.append(example)
            labels.append(1.0 if i % 2 == 0 else 0.0)
    return np.stack(shapes), np.array(labels, np.float32)


def film_examples(films: int, seed: int = FILM_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Shapes of the detector's own proposals on synthetic films (256-2,048 px) carrying 3-6
    markers in the tuning faces (60% side letters, else another lone glyph, a word or a date;
    any angle, polarity, label, contrast, JPEG or resampling), half with device clutter of the
    kinds :data:`TRAIN_CLUTTER` (clips and ECG leads are left to the benchmark): float32
    ``(M, 2, 32, 32)`` and labels ``(M,)``. A proposal is a positive when at least 60% of its
    stroke pixels lie in a side letter's box, a negative when none do and it touches no other
    text; proposals on words and dates are left out."""
    config = VerifiedConfig()
    faces = list(font_set("tuning"))
    shapes, labels = [], []
    for i in range(films):
        rng = np.random.default_rng([seed, i])
        size = int(rng.choice([256, 512, 1024, 2048], p=[0.2, 0.3, 0.3, 0.2]))
        film = render_radiograph(rng, size, str(rng.choice(["normal", "pneumonia", "COVID-19"])))
        film = (np.round(film * 255) / 255).astype(np.float32)
        markers = []
        for _ in range(int(rng.integers(3, 7))):
            letter = rng.random() < 0.6
            kind = "letter" if letter or rng.random() < 0.5 else str(rng.choice(["word", "date"]))
            text = (
                str(rng.choice(SIDE_LETTERS))
                if letter
                else (str(rng.choice(OTHER_GLYPHS)) if kind == "letter" else wild_text(rng, kind))
            )
            top = 0.10 * size if kind == "letter" else 0.45 * size / (0.75 * len(text))
            cap = float(np.exp(rng.uniform(np.log(8), np.log(max(top, 9)))))
            film, marker = burn_wild_marker(
                film,
                rng,
                face=faces[int(rng.integers(len(faces)))],
                kind=kind,
                text=text,
                cap_px=cap,
                angle=_angle(rng) if rng.random() < 0.6 else 0.0,
                polarity=str(rng.choice(["bright", "dark"])),
                label=str(rng.choice(["none", "bright", "dark"], p=[0.6, 0.2, 0.2])),
                contrast=1.0 if rng.random() < 0.35 else float(rng.uniform(0.1, 0.5)),
                opacity=1.0 if rng.random() < 0.8 else float(rng.uniform(0.5, 0.9)),
                stencil=kind == "letter" and rng.random() < 0.2,
                avoid=[m.box for m in markers],
            )
            if marker is not None:
                markers.append(marker)
        if rng.random() < 0.5:
            kinds = list(rng.choice(TRAIN_CLUTTER, size=int(rng.integers(1, 3)), replace=False))
            film, _ = add_clutter(film, rng, kinds=kinds, avoid=[m.box for m in markers])
        film, _ = degrade(film, rng, str(rng.choice(["none", "jpeg", "resample"])))
        side = np.zeros(film.shape, bool)
        other = np.zeros(film.shape, bool)
        for m in markers:
            x0, y0, x1, y1 = m.box
            (side if m.text in SIDE_LETTERS else other)[y0:y1, x0:x1] = True
        regions = propose([film], config.proposals)
        views = view([film], regions, config=config)
        for j, crop in enumerate(views.crops):
            owner = views.owners[j]
            region = regions[0][owner[1]]
            if region.glyph < MIN_LETTER_GLYPH_PX or (j and views.owners[j - 1] == owner):
                continue
            xs, ys = region.points[:, 0], region.points[:, 1]
            on_side = side[ys, xs].mean()
            label = (
                1.0 if on_side >= 0.6 else 0.0 if on_side == 0 and not other[ys, xs].any() else None
            )
            if label is None:
                continue
            shape = glyph_shape(crop)
            if shape is not None:
                shapes.append(glyph_input(shape))
                labels.append(label)
    if not shapes:
        empty = np.zeros((0, IN_CHANNELS, SHAPE_PX, SHAPE_PX), np.float32)
        return empty, np.zeros((0,), np.float32)
    return np.stack(shapes), np.array(labels, np.float32)


def train(
    shapes: np.ndarray, labels: np.ndarray, weights: np.ndarray, *, epochs: int, seed: int
) -> tuple[LetterNet, np.ndarray]:
    """Adam, weighted BCE, random flips and quarter turns (both letters stay letters under
    them: a mirrored marker is still a marker), one-cycle schedule. 10% of the examples are
    held back: returns the network and the held-back indices."""
    torch.manual_seed(seed)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = len(order) // 10
    val, fit = order[:cut], order[cut:]
    x = torch.from_numpy(shapes)
    y = torch.from_numpy(labels)
    w = torch.from_numpy(weights.astype(np.float32))
    net = LetterNet()
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=epochs * (len(fit) // 256 + 1)
    )
    rng = np.random.default_rng(seed + 1)
    for _ in range(epochs):
        net.train()
        perm = torch.from_numpy(rng.permutation(fit))
        for start in range(0, len(perm), 256):
            idx = perm[start : start + 256]
            xb = torch.rot90(x[idx], int(rng.integers(4)), (2, 3))
            if rng.random() < 0.5:
                xb = xb.flip(3)
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb), y[idx], weight=w[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return net.eval(), val


def held_back_scores(net: LetterNet, shapes: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, recall and false-positive rate at 0.5 on held-back examples."""
    with torch.inference_mode():
        p = torch.sigmoid(net(torch.from_numpy(shapes))).numpy()
    truth = labels > 0.5
    if not len(labels):
        return {"examples": 0}
    return {
        "examples": len(labels),
        "accuracy": float(((p >= 0.5) == truth).mean()),
        "recall": float((p[truth] >= 0.5).mean()) if truth.any() else None,
        "false_positive_rate": float((p[~truth] >= 0.5).mean()) if (~truth).any() else None,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="train_letter_net", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8000, help="positives (and as many negatives)")
    p.add_argument("--films", type=int, default=480, help="synthetic films with markers")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(weights_path().parent))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    start = time.perf_counter()
    shapes, labels = synthetic_examples(args.n, args.seed)
    film_shapes, film_labels = film_examples(args.films)
    # the films' shapes are what the detector meets: they weigh as much as the drawn ones
    repeat = max(1.0, len(labels) / max(len(film_labels), 1))
    drawn = len(labels)
    shapes = np.concatenate([shapes, film_shapes])
    labels = np.concatenate([labels, film_labels])
    weights = np.where(np.arange(len(labels)) < drawn, 1.0, repeat)
    made = time.perf_counter() - start
    net, val = train(shapes, labels, weights, epochs=args.epochs, seed=args.seed)
    scores = {
        "held_back_drawn": held_back_scores(
            net, shapes[val[val < drawn]], labels[val[val < drawn]]
        ),
        "held_back_films": held_back_scores(
            net, shapes[val[val >= drawn]], labels[val[val >= drawn]]
        ),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "side_letter_net.pt"
    torch.save(net.state_dict(), weights)
    faces = [f.name for f in font_set("tuning") if f.renderer == "truetype"]
    card = {
        "sha256": file_sha256(weights),
        "command": " ".join(["python -m xraydebug.text.train_letter_net", *(argv or [])]),
        "examples": {
            "drawn_side_letters": int(labels[:drawn].sum()),
            "drawn_other_glyphs_and_shapes": int((labels[:drawn] == 0).sum()),
            "film_side_letters": int(film_labels.sum()),
            "film_other": int((film_labels == 0).sum()),
            "film_weight": round(float(repeat), 2),
        },
        "fonts": faces,
        "epochs": args.epochs,
        "seed": args.seed,
        **scores,
        "seconds": {"examples": round(made, 1), "total": round(time.perf_counter() - start, 1)},
        "torch": torch.__version__,
    }
    (out / "side_letter_net.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
