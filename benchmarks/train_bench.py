"""Classifier benchmark: does the small model learn, and does the text shortcut hurt on test?

    python benchmarks/train_bench.py   # synth 600/300 @ 512 into /tmp, train, evaluate
    python benchmarks/train_bench.py --data DIR --epochs 30 --json out.json

Prints: training time, validation (train distribution, held-out patients) per-class precision /
recall, test (text independent of class) per-class precision / recall, test metrics split by
whether the image carries burned-in text, and the one-epoch throughput of ``covidnext`` at 256 px.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from xraydebug.data.synth import SynthConfig, synthesize
from xraydebug.device import machine_line
from xraydebug.models.architectures import build_model, get_arch
from xraydebug.models.evaluate import EvaluateConfig, evaluate
from xraydebug.models.metrics import summary_metrics
from xraydebug.models.train import TrainConfig, train


def per_class_line(metrics: dict) -> str:
    parts = [
        f"{name}: P {row['precision']:.2f} R {row['recall']:.2f}"
        for name, row in metrics["per_class"].items()
    ]
    return f"acc {metrics['accuracy']:.3f} macro-F1 {metrics['macro_f1']:.3f} | " + "; ".join(parts)


def covidnext_throughput(n_images: int, batch_size: int) -> float:
    """Forward + backward + Adam step images/s of covidnext at its 256 px input on this CPU."""
    spec = get_arch("covidnext")
    size = spec.preprocessing.input_size
    model = build_model("covidnext", 3).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch_size,))
    steps = max(1, n_images // batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/xraydebug-bench/data"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/xraydebug-bench/small.pt"))
    parser.add_argument("--arch", default="small")
    # None: the architecture's recipe
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--covidnext-images", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    print(machine_line())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    if not (args.data / "train.txt").exists():
        t0 = time.perf_counter()
        synthesize(args.data, SynthConfig(n_train=600, n_test=300, size=512, seed=args.seed))
        print(f"synth 600/300 @ 512: {time.perf_counter() - t0:.1f} s")
    config = TrainConfig(
        arch=args.arch,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device="cpu",
    )
    result = train(args.data, args.out, config=config, resume=False)
    print(f"train {args.arch}: {result.seconds:.1f} s, best epoch {result.best_epoch}")
    print(f"validation (train distribution): {per_class_line(result.val_metrics)}")

    test = evaluate(
        args.data, args.out, "test", args.out.parent / "eval", config=EvaluateConfig(device="cpu")
    )
    print(f"test (text independent of class): {per_class_line(test.metrics)}")
    truth = json.loads((args.data / "ground_truth.json").read_text())
    table = test.predictions
    has_text = table["path"].map(lambda p: truth[p]["has_text"]).to_numpy()
    classes = list(result.val_metrics["per_class"])
    index = {c: i for i, c in enumerate(classes)}
    labels = table["label"].map(index).to_numpy()
    preds = table["pred"].map(index).to_numpy()
    by_text = {}
    for name, keep in (("with text", has_text), ("without text", ~has_text)):
        metrics = summary_metrics(labels[keep], preds[keep], classes)
        by_text[name] = metrics
        print(f"test {name} (n={int(keep.sum())}): {per_class_line(metrics)}")
    covid = index["COVID-19"]
    share = {
        name: float(np.mean(preds[keep] == covid))
        for name, keep in (("text", has_text), ("no text", ~has_text))
    }
    print(
        f"share predicted COVID-19: with text {share['text']:.2f}, without {share['no text']:.2f}"
    )
    throughput = covidnext_throughput(args.covidnext_images, 8)
    print(f"covidnext @256 train throughput on CPU: {throughput:.2f} images/s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "train_seconds": result.seconds,
                    "val": result.val_metrics,
                    "test": {k: test.metrics[k] for k in ("accuracy", "macro_f1", "per_class")},
                    "test_by_text": by_text,
                    "covid_share": share,
                    "covidnext_images_per_s": throughput,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
