"""How to remove evidence from a chest film: blur, grey, noise or inpainting (Agarwal & Nguyen).

    python -m benchmarks.removal_bench --data /tmp/demo/data --model /tmp/demo/small.pt \
        --learned /tmp/inp/inpainter-256.pt --out benchmarks/removal_bench.json

Films: the test split of a synthetic set (``xraydebug synth``), as their text-free twins,
with a lesion (pneumonia or COVID-19) and classified correctly by the model. Each film's lesion
mask comes from :func:`xraydebug.data.synth.lesion_mask` (the film rendered again without its
lesions from the same random state).

Part 1, the paper's Table 1 on chest films: remove a region by each operator and count how
often the model still predicts the film's class (share with a Wilson 95% interval), and the
class probability's mean. Regions: the lesion, and the top 20% of the film's iGOS++ saliency
(the default explanation, blur removal).

Part 2, explanation quality under each operator: iGOS++ masks optimised with the blur filler
and with the inpainting filler (MP2-G, ``--inpainter``), three seeds each, each scored by the
deletion / insertion metrics under both operators (a 2x2 table: mean over films, the seeds'
spread as the sd of the seed means), lesion localisation (share of the saliency mass on the
lesion; pointing game: the most salient pixel on the lesion) and seconds per film (explanation
and metrics).

Decision rule (the issue's): inpainting becomes the default only if its masks improve both
deletion and insertion beyond twice the seed-to-seed spread under both scoring operators, and
the lesion localisation, at no more than twice the cost per film.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import command_line
from xraydebug.data.synth import SynthConfig, lesion_mask, plan_dataset, render_record
from xraydebug.data.torch_dataset import resize_gray
from xraydebug.device import machine_info, machine_line
from xraydebug.models.checkpoint import load_model
from xraydebug.saliency import IGOSConfig, deletion_insertion, igospp
from xraydebug.saliency.removal import Removal, RemovalConfig, binarise_top

SEEDS = (0, 1, 2)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a share ``k / n``."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def films(data: Path, model, n: int) -> dict[str, Any]:
    """Model inputs, targets and lesion masks (model frame) of the first ``n`` correctly
    classified lesion films of the test split."""
    truth = json.loads((data / "ground_truth.json").read_text())
    config = SynthConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in truth["_config"].items()}
    )
    prep = model.preprocessing
    size, crop = prep.input_size, prep.crop_top
    xs, targets, lesions, keys = [], [], [], []
    for record in plan_dataset(config):
        if record.split != "test" or record.label not in model.classes or len(xs) >= n:
            continue
        if record.label == "normal":
            continue
        clean = render_record(config, record).clean.astype(np.float32) / 255.0
        gray = torch.from_numpy(resize_gray(clean, size, crop))[None, None]
        x = prep.normalize(gray)
        target = model.classes.index(record.label)
        with torch.inference_mode():
            if int(model.model(x).argmax(1)) != target:
                continue
        mask = resize_gray(lesion_mask(config, record).astype(np.float32), size, crop) > 0.5
        xs.append(x[0])
        targets.append(target)
        lesions.append(torch.from_numpy(mask)[None])
        keys.append(record.key)
    return {
        "x": torch.stack(xs),
        "targets": torch.tensor(targets),
        "lesion": torch.stack(lesions).float(),
        "keys": keys,
    }


def still_predicted(model, x: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        probs = torch.softmax(model(x).float(), dim=1)
    kept = (probs.argmax(1) == targets).numpy()
    return kept, probs[torch.arange(len(targets)), targets].numpy()


def table1(model, batch: dict[str, Any], operators: dict[str, Removal], saliency_top: torch.Tensor):
    out: dict[str, Any] = {}
    for region, masks in (("lesion", batch["lesion"]), ("top20_saliency", saliency_top)):
        out[region] = {}
        for name, removal in operators.items():
            removed = removal(batch["x"], masks)
            kept, probs = still_predicted(model, removed, batch["targets"])
            k, n = int(kept.sum()), len(kept)
            out[region][name] = {
                "still_predicted": k / n,
                "ci95": wilson(k, n),
                "n": n,
                "mean_prob": float(probs.mean()),
            }
            print(
                f"table1 {region:15s} {name:16s} still predicted {k}/{n} = {k / n:.3f} "
                f"(mean p {probs.mean():.3f})",
                flush=True,
            )
    return out


def localisation(saliency: torch.Tensor, lesion: torch.Tensor) -> tuple[float, float]:
    """Mean share of saliency mass on the lesion, and the pointing-game hit rate."""
    sal = saliency.clamp_min(0).flatten(1)
    mass = (sal * lesion.flatten(1)).sum(1) / sal.sum(1).clamp_min(1e-12)
    top = sal.argmax(1)
    hits = lesion.flatten(1)[torch.arange(len(top)), top] > 0
    return float(mass.mean()), float(hits.float().mean())


def explanation_quality(
    model,
    batch: dict[str, Any],
    scorers: dict[str, Removal],
    fillers: dict[str, RemovalConfig],
    config: IGOSConfig,
) -> dict[str, Any]:
    x, targets = batch["x"], batch["targets"]
    size = tuple(x.shape[-2:])
    out: dict[str, Any] = {}
    for opt_name, removal in fillers.items():
        runs = []
        for seed in SEEDS:
            start = time.perf_counter()
            result = igospp(model, x, targets, config=config, seed=seed, removal=removal)
            explain_s = time.perf_counter() - start
            row: dict[str, Any] = {"seed": seed, "explain_seconds_per_film": explain_s / len(x)}
            for score_name, scorer in scorers.items():
                start = time.perf_counter()
                d, i = deletion_insertion(model, x, targets, result, removal=scorer)
                row[score_name] = {
                    "deletion": float(d.mean()),
                    "insertion": float(i.mean()),
                    "seconds_per_film": (time.perf_counter() - start) / len(x),
                }
            mass, pointing = localisation(result.saliency(size), batch["lesion"])
            row["lesion_mass"], row["pointing"] = mass, pointing
            row["refills"] = result.stats.get("refills")
            runs.append(row)
            print(f"quality optimised={opt_name} seed={seed}: {json.dumps(row)}", flush=True)
        out[opt_name] = {"runs": runs, "summary": summarise(runs, list(scorers))}
    return out


def summarise(runs: list[dict[str, Any]], scorers: list[str]) -> dict[str, Any]:
    def stat(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1))}

    out: dict[str, Any] = {
        "lesion_mass": stat([r["lesion_mass"] for r in runs]),
        "pointing": stat([r["pointing"] for r in runs]),
        "explain_seconds_per_film": stat([r["explain_seconds_per_film"] for r in runs]),
    }
    for scorer in scorers:
        out[scorer] = {
            metric: stat([r[scorer][metric] for r in runs]) for metric in ("deletion", "insertion")
        }
        out[scorer]["seconds_per_film"] = float(
            np.mean([r[scorer]["seconds_per_film"] for r in runs])
        )
    return out


def verdict(quality: dict[str, Any], scorers: list[str]) -> dict[str, Any]:
    """The issue's rule for making inpainting the default."""
    blur, inpaint = quality["blur"]["summary"], quality["inpaint"]["summary"]
    checks: dict[str, bool] = {}
    for scorer in scorers:
        for metric, better in (("deletion", -1), ("insertion", 1)):
            gain = better * (inpaint[scorer][metric]["mean"] - blur[scorer][metric]["mean"])
            spread = 2 * max(inpaint[scorer][metric]["sd"], blur[scorer][metric]["sd"])
            checks[f"{metric} under {scorer} beyond 2 sd"] = gain > spread
    checks["lesion mass higher"] = inpaint["lesion_mass"]["mean"] > blur["lesion_mass"]["mean"]
    cost = lambda s: s["explain_seconds_per_film"]["mean"] + s[scorers[0]]["seconds_per_film"]  # noqa: E731
    checks["cost at most 2x"] = cost(inpaint) <= 2 * cost(blur)
    return {"checks": checks, "inpaint_becomes_default": all(checks.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--learned", type=Path, help="a learned inpainter for Table 1")
    parser.add_argument("--inpainter", default="telea", help="MP2-G's inpainter (part 2)")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--mask-size", type=int, default=28)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/removal_bench.json"))
    args = parser.parse_args(argv)
    print(machine_line())
    torch.manual_seed(0)
    loaded = load_model(args.model)
    model = loaded.model.eval()
    batch = films(args.data, loaded, args.n)
    print(f"{len(batch['keys'])} correctly classified lesion films", flush=True)
    config = IGOSConfig.preset("balanced", mask_size=args.mask_size)

    operators = {name: Removal(RemovalConfig(operator=name)) for name in ("blur", "grey", "noise")}
    operators["inpaint-telea"] = Removal(RemovalConfig(operator="inpaint", inpainter="telea"))
    if args.learned:
        operators["inpaint-learned"] = Removal(
            RemovalConfig(
                operator="inpaint", inpainter="learned", inpainter_model=str(args.learned)
            )
        )
    default = igospp(model, batch["x"], batch["targets"], config=config)
    size = tuple(batch["x"].shape[-2:])
    top = binarise_top(default.saliency(size), 0.2).float()
    result: dict[str, Any] = {
        "machine": machine_info(),
        "command": command_line("benchmarks.removal_bench", argv),
        "model": str(args.model.name),
        "n_films": len(batch["keys"]),
        "lesion_area": float(batch["lesion"].mean()),
        "table1": table1(model, batch, operators, top),
    }
    inpaint = RemovalConfig(operator="inpaint", inpainter=args.inpainter)
    if args.inpainter == "learned":
        inpaint = RemovalConfig(
            operator="inpaint", inpainter="learned", inpainter_model=str(args.learned)
        )
    fillers = {"blur": RemovalConfig(), "inpaint": inpaint}
    scorers = {"blur": Removal(RemovalConfig()), "inpaint": Removal(inpaint)}
    result["quality"] = explanation_quality(model, batch, scorers, fillers, config)
    result["verdict"] = verdict(result["quality"], list(scorers))
    print(json.dumps(result["verdict"], indent=1))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
