"""The READMEs' benchmark tables, written from the JSON files the benchmarks write.

A table lives in a README between two markers that name it::

    <!-- table:executor -->
    ...generated, do not edit...
    <!-- /table:executor -->

and :data:`TABLES` maps each name to a function of the ``benchmarks/`` folder that renders it
from that folder's JSON files. Run from the repository root::

    python -m benchmarks.tables           # rewrite every block of README.md, benchmarks/README.md
    python -m benchmarks.tables --check   # exit 1 naming every block that differs from its JSON

``tests/test_bench_tables.py`` runs the check, so a README number cannot drift from its JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.igospp_bench import compare
from benchmarks.text_sensitivity_bench import seed_spread
from xraydebug.device import machine_line

BENCHMARKS = Path(__file__).resolve().parent
READMES = (BENCHMARKS.parent / "README.md", BENCHMARKS / "README.md")
BLOCK = re.compile(  # a block keeps its opening marker's indent (a table inside a list item)
    r"^(?P<open>(?P<indent>[ ]*)<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"(?P<close>(?P=indent)<!-- /table:(?P=name) -->)",
    re.S | re.M,
)

Renderer = Callable[[Path], str]
TABLES: dict[str, Renderer] = {}


def table(name: str) -> Callable[[Renderer], Renderer]:
    """Register a renderer of the block ``name``."""

    def register(render: Renderer) -> Renderer:
        TABLES[name] = render
        return render

    return register


def _load(folder: Path, name: str) -> dict[str, Any]:
    return json.loads((folder / name).read_text())


def _rows(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A markdown table; ``align``: one letter per column, ``l`` or ``r`` (default ``l``)."""
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [header, rule, *rows]
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def cpu_words(machine: dict[str, Any]) -> str:
    """The CPU as a README names it, from a recorded ``machine_info()``."""
    return machine_line(machine).removeprefix("CPU: ")


# -- executor_bench ---------------------------------------------------------------------------


@table("executor")
def executor_tables(folder: Path) -> str:
    data = _load(folder, "executor_bench.json")
    rows = {(r["stage"], r["executor"]): r for r in data["summary"]}
    stages = list(dict.fromkeys(r["stage"] for r in data["summary"]))
    names = list(dict.fromkeys(r["executor"] for r in data["summary"]))
    cores, scan = data["cores"], data["scan"]
    label = {"local": "local", f"ray-1x{cores}": f"Ray 1 actor x {cores} threads"}
    label[f"ray-{cores}x1"] = f"Ray {cores} actors x 1 thread"
    what = {
        "scan": lambda r: f"scan ({r['images']} films, mask {scan['mask_size']}, {scan['preset']})",
        "clean": lambda r: f"clean ({r['images']} films)",
    }
    header = ["stage", *[label.get(n, n) for n in names]]

    def rate_table(key: str, overhead: str) -> str:
        body = []
        for stage in stages:
            cells = [what[stage](rows[(stage, "local")])]
            for name in names:
                cell = f"{rows[(stage, name)][key]:.3f} img/s"
                if name == f"ray-1x{cores}":
                    cell += f" ({100 * data['overhead'][stage][overhead]:+.1f}%)"
                cells.append(cell)
            body.append(cells)
        return _rows(header, body)

    startup = [
        [stage, *[f"{rows[(stage, n)]['startup_seconds']:.2f} s" for n in names]]
        for stage in stages
    ]
    hours = {(a["stage"], a["nodes"]): a for a in data["arithmetic"]}
    per_node = data["per_node_images_per_second"]

    def cluster(stage: str) -> str:
        one, many = hours[(stage, 1)], hours[(stage, 16)]
        return (
            f"a {one['films']:,}-film {'mask-56 scan' if stage == 'scan' else 'clean'} takes "
            f"{one['hours']:.1f} h on 1 node and {many['hours']:.2f} h on 16"
        )

    return (
        f"Machine: {cpu_words(data['machine'])}; {data['size']} px synthetic films; the median "
        f"of {data['repeats']} interleaved runs of each configuration; `ray.init` "
        f"{data['ray_init_seconds']:.1f} s once per command, in no figure below.\n\n"
        "**Steady state** (each run's seconds minus its own start-up, on both sides; in brackets "
        "Ray's overhead per image against local):\n\n"
        + rate_table("images_per_second", "steady")
        + "\n**Whole runs, start-up included** (in brackets: against local):\n\n"
        + rate_table("images_per_second_with_startup", "with_startup")
        + "\n**Start-up** (workers started, model and detector loaded; local: in this process):"
        "\n\n"
        + _rows(["stage", *[label.get(n, n) for n in names]], startup)
        + "\nMulti-node arithmetic from the best steady-state rate per node here "
        f"({per_node['scan']:.3f} scan, {per_node['clean']:.2f} clean images/s), with nodes "
        f"like this one: {cluster('scan')}; {cluster('clean')}.\n"
    )


# -- igospp_bench -----------------------------------------------------------------------------


def _igospp(folder: Path, mask: int) -> str:
    data = _load(folder, f"igospp_bench_{mask}.json")
    body = []
    for m in data["methods"]:
        name = m["name"]
        if name.startswith("reference"):
            label = "reference loop, paper settings"
        elif name == "paper":
            label = "preset `paper` (engine)"
        else:
            label = f"preset `{name}`"
        if name == data["summary"]["preset"]:
            label = f"**{label}**"
        body.append(
            [
                label,
                f"{m['seconds_per_image']:.2f}",
                f"{m['forward_images_per_image']:.0f}",
                f"{m['backward_images_per_image']:.0f}",
                f"{m['deletion_auc_mean']:.4f} ({m['deletion_auc_sd']:.4f})",
                f"{m['insertion_auc_mean']:.4f} ({m['insertion_auc_sd']:.4f})",
            ]
        )
    header = ["method", "s / image", "fwd images / image", "bwd images / image"]
    header += ["deletion AUC (sd)", "insertion AUC (sd)"]
    s, settings = data["summary"], data["settings"]
    ok = {True: "PASS", False: "**FAIL**"}
    paper = s.get("against_paper_preset")
    comparison = [
        [
            "the reference loop (paper's algorithm; targets)",
            f"{s['speedup']:.1f}x {ok[s['checks']['speedup']]}",
            f"{s['deletion_difference']:+.4f} {ok[s['checks']['deletion']]}",
            f"{s['insertion_difference']:+.4f} {ok[s['checks']['insertion']]}",
        ]
    ]
    if paper is not None:
        comparison.append(
            [
                "the engine's `paper` preset (stricter bar; no targets)",
                f"{paper['speedup']:.1f}x",
                f"{paper['deletion_difference']:+.4f}",
                f"{paper['insertion_difference']:+.4f}",
            ]
        )
    cached = s.get("reference_cached_images", 0)
    note = (
        f" The reference's seconds of {cached} of {s['reference_images']} image runs came from "
        "the cache (measured earlier on this machine and device)."
        if cached
        else ""
    )
    return (
        f"{settings['n_images']} images, {settings['reference_seeds']} reference and "
        f"{settings['engine_seeds']} engine seeds; "
        f"{cpu_words(data['environment']['machine'])}, {settings['precision']}.{note}\n\n"
        + _rows(header, body, "lrrrll")
        + f"\n`{s['preset']}` against:\n\n"
        + _rows(
            ["baseline", "speed-up (>= 10x)", "deletion (<= +0.01)", "insertion (>= -0.01)"],
            comparison,
        )
    )


for _mask in (28, 56, 112):
    table(f"igospp-{_mask}")(lambda folder, mask=_mask: _igospp(folder, mask))


@table("igospp-summary")
def igospp_summary(folder: Path) -> str:
    """Every mask size in one table: each method against the reference and, for the presets
    other than ``paper``, against the engine's ``paper`` preset."""
    body = []
    for mask in (28, 56, 112):
        data = _load(folder, f"igospp_bench_{mask}.json")
        methods = {m["name"]: m for m in data["methods"]}
        reference = next(m for name, m in methods.items() if name.startswith("reference"))
        default = data["summary"]["preset"]
        for name, m in methods.items():
            if m is reference:
                label, against_ref, against_paper = "reference loop", "", ""
            else:
                label = f"**preset `{name}`**" if name == default else f"preset `{name}`"
                against_ref = _difference(reference, m, bold=name == default)
                against_paper = "" if name == "paper" else _difference(methods["paper"], m)
            body.append(
                [
                    str(mask),
                    label,
                    f"{m['seconds_per_image']:.2f}",
                    f"{m['deletion_auc_mean']:.4f}",
                    f"{m['insertion_auc_mean']:.4f}",
                    against_ref,
                    against_paper,
                ]
            )
    header = ["mask", "method", "s / image", "deletion AUC", "insertion AUC"]
    header += ["vs reference: speed-up, deletion / insertion", "vs preset `paper`"]
    return _rows(header, body, "llrrrll")


def _difference(base: dict[str, Any], method: dict[str, Any], bold: bool = False) -> str:
    """``method`` against ``base`` as the bench computes it (:func:`compare`)."""
    d = compare(base, method)
    times = f"**{d['speedup']:.1f}x**" if bold else f"{d['speedup']:.1f}x"
    return f"{times}, {d['deletion_difference']:+.4f} / {d['insertion_difference']:+.4f}"


# -- text_sensitivity_bench -------------------------------------------------------------------

_TS_MODELS = {
    "shortcut": "shortcut",
    "oracle": "oracle (text-free twin)",
    "clean": "clean",
    "clean+decorrelate": "clean + decorrelate",
}


@table("text-sensitivity")
def text_sensitivity_table(folder: Path) -> str:
    data = _load(folder, "text_sensitivity_bench.json")
    body, lines = [], []
    for result in data["seeds"]:
        for key, label in _TS_MODELS.items():
            r = result[key]
            ci = f" [{r['ci'][0]:+.2f}, {r['ci'][1]:+.2f}]" if r["ci"] else ""
            sensitivity = f"{r['sensitivity']:+.2f}"
            if key == "shortcut":
                sensitivity = f"**{sensitivity}**"
            body.append(
                [
                    str(result["seed"]) if key == "shortcut" else "",
                    label,
                    f"{r['accuracy']:.3f}",
                    f"{r['macro_f1']:.3f}",
                    f"{r['gap']:+.2f}" if "gap" in r else "-",
                    sensitivity + ci,
                ]
            )
        targets, two = result["targets"], result["two_sided"]
        failed = [name for name, ok in targets.items() if not ok]
        distance = ", ".join(
            f"{key.replace('_', '-')} {t['abs_diff_from_oracle']:.3f} "
            f"({'within' if t['within_0.05'] else '**outside**'} 0.05)"
            for key, t in two.items()
        )
        lines.append(
            f"* seed {result['seed']}: {len(targets) - len(failed)} of {len(targets)} targets"
            + (f" (failed: {'; '.join(failed)})" if failed else "")
            + f"; two-sided |decorrelate - oracle|: {distance}; over-correction flags: "
            + ("; ".join(result["flags"]) or "none")
        )
    v = data["verdict"]
    header = ["seed", "model", "accuracy", "macro-F1", "gap", "sensitivity [95% CI]"]
    return (
        f"{cpu_words(data['header'])}.\n\n"
        + _rows(header, body, "llrrrl")
        + "\n"
        + "\n".join(lines)
        + f"\n\nIn all: {v['targets_passed']} of {v['targets']} targets passed, "
        f"{v['flags']} over-correction flag(s).\n"
    )


@table("text-sensitivity-summary")
def text_sensitivity_summary(folder: Path) -> str:
    """The README's line: per model, the sensitivity of every seed and the accuracy's mean
    and sd over seeds, then the verdict."""
    data = _load(folder, "text_sensitivity_bench.json")
    seeds = data["seeds"]
    cells = []
    for key, label in _TS_MODELS.items():
        mean, sd = seed_spread(seeds, key)["accuracy"]  # as the bench prints it
        sensitivity = ", ".join(f"{r[key]['sensitivity']:+.2f}" for r in seeds)
        cells.append(f"{label}: sensitivity {sensitivity}, accuracy {mean:.2f} ± {sd:.2f}")
    v = data["verdict"]
    return (
        f"Seeds {', '.join(str(r['seed']) for r in seeds)}, toward COVID-19 (text minus "
        "placebo pastes), accuracy as mean ± sd over the seeds; "
        + "; ".join(cells)
        + f". {v['targets_passed']} of {v['targets']} targets passed, {v['flags']} "
        "over-correction flag(s).\n"
    )


# -- train_recipe_bench -----------------------------------------------------------------------


@table("train-recipe")
def train_recipe_table(folder: Path) -> str:
    data = _load(folder, "train_recipe_bench.json")
    body, seen = [], set()
    for r in data["runs"]:
        seed = str(r["seed"])
        if r["seed"] not in seen:
            seed += " (held out)" if r["held_out"] else " (tuning)"
            seen.add(r["seed"])
        epochs = str(r["epochs_run"]) + (" (stopped)" if r["stopped_early"] else "")
        body.append(
            [
                seed,
                r["run"],
                f"{r['test_accuracy']:.3f}",
                f"{r['test_macro_f1']:.3f}",
                epochs,
                str(r["best_epoch"]),
                f"{r['seconds']:.0f}",
            ]
        )
    header = ["seed", "run", "test accuracy", "macro-F1", "epochs run", "best epoch", "seconds"]
    return _rows(header, body)


# -- import_bench -----------------------------------------------------------------------------

_FORMATS = {
    "state_dict": "state_dict (native)",
    "torchscript": "TorchScript",
    "exported_program": "torch.export",
    "onnx": "ONNX",
}


def _auc_diffs(row: dict[str, Any], bold_exact: bool = False) -> str:
    """``deletion / insertion`` largest per-image differences; with ``bold_exact``, an
    imported format with none at all in bold."""
    cells = " / ".join(
        "0" if x == 0 else f"{x:.3f}" for x in (row["max_deletion_diff"], row["max_insertion_diff"])
    )
    exact = bold_exact and row["format"] != "state_dict" and cells == "0 / 0"
    return f"**{cells}**" if exact else cells


@table("import")
def import_table(folder: Path) -> str:
    bf16 = _load(folder, "import_bench.json")["rows"]
    fp32 = {r["format"]: r for r in _load(folder, "import_bench_fp32.json")["rows"]}
    body = [
        [
            _FORMATS.get(r["format"], r["format"]),
            f"{r['seconds_per_image']:.2f}",
            f"{r['ratio_to_native']:.2f}",
            _auc_diffs(r),
            _auc_diffs(fp32[r["format"]]),
        ]
        for r in bf16
    ]
    header = ["format", "s/image (bf16 passes)", "vs native"]
    header += ["max per-image AUC diff, deletion / insertion (bf16)", "same, fp32"]
    return _rows(header, body)


@table("import-no-fold")
def import_no_fold_table(folder: Path) -> str:
    rows = _load(folder, "import_bench_no_fold.json")["rows"]
    body = [
        [
            _FORMATS.get(r["format"], r["format"]),
            f"{r['seconds_per_image']:.2f}",
            f"{r['ratio_to_native']:.2f}",
            _auc_diffs(r, bold_exact=True),
        ]
        for r in rows
    ]
    header = ["format", "s/image", "vs native", "max per-image AUC diff, deletion / insertion"]
    return _rows(header, body)


# -- foreign_shortcut_bench -------------------------------------------------------------------


@table("foreign-shortcut")
def foreign_shortcut_table(folder: Path) -> str:
    runs = [
        _load(folder, "foreign_shortcut_bench.json"),
        _load(folder, "foreign_shortcut_bench_multilabel.json"),
    ]

    def percent(x: float) -> str:
        return f"{100 * x:+.1f}%"

    def scanned(r: dict[str, Any]) -> str:
        target = f", `--target {r['shortcut']}`" if r["kind"] == "multilabel" else ""
        return (
            f"{r['flagged']} flagged, {r['flagged_with_text']} of them with text "
            f"({r['scanned_with_text']} of the {r['scanned']} carry text{target})"
        )

    def auroc(r: dict[str, Any]) -> str:
        nih = r.get("nih_layout")
        if nih is None:
            return ""
        cells = [
            f"{f} {a:.3f} [{nih['auroc_ci'][f][0]:.3f}, {nih['auroc_ci'][f][1]:.3f}]"
            for f, a in nih["auroc"].items()
        ]
        return ", ".join(cells) + f"; largest difference {nih['max_gap']:.0e}"

    rows = [
        ["shortcut", *[r["shortcut"] for r in runs]],
        ["training (outside xraydebug)", *[f"{r['train_seconds']:.0f} s" for r in runs]],
        [
            "text sensitivity: text / placebo",
            *[f"{100 * r['text']:.1f}% / {100 * r['placebo']:.1f}%" for r in runs],
        ],
        [
            "sensitivity [95% CI]",
            *[
                f"**{percent(r['sensitivity'])} [{percent(r['ci'][0])}, {percent(r['ci'][1])}]**"
                for r in runs
            ],
        ],
        [
            f"scan of {runs[0]['scanned']} test films (default preset and detector)",
            *[scanned(r) for r in runs],
        ],
        ["per-finding AUROC from `evaluate` vs scikit-learn", *[auroc(r) for r in runs]],
        ["target met", *["yes" if r["met"] else "**no**" for r in runs]],
    ]
    return _rows(["", "softmax (COVIDx layout)", "multi-label (NIH layout)"], rows)


# -- inpaint_bench, removal_bench, shortcut_move_bench -------------------------------------------


def _inpaint_sets(folder: Path, name: str) -> str:
    run = _load(folder, name)
    labels = list(next(iter(run["sets"].values()))["inpainters"])
    header = ["set (films)", "before", *labels]
    rows = []
    for key, block in run["sets"].items():
        cells = [f"{key} ({block['n_films']})", f"{block['before']['psnr_in']:.2f}"]
        best = max(row["psnr_in"] for row in block["inpainters"].values())
        for label in labels:
            row = block["inpainters"].get(label)
            if row is None:
                cells.append("–")
                continue
            text = f"{row['psnr_in']:.2f} / {row['ssim_in']:.3f} / {row['seconds_per_film']:.3f}"
            cells.append(f"**{text}**" if row["psnr_in"] == best else text)
        rows.append(cells)
    return _rows(header, rows, "l" + "r" * (len(header) - 1))


@table("inpaint-quality")
def inpaint_quality_table(folder: Path) -> str:
    """In-box PSNR (dB) / SSIM / seconds per film of each inpainter, held-out seed."""
    return _inpaint_sets(folder, "inpaint_bench.json")


@table("inpaint-timing")
def inpaint_timing_table(folder: Path) -> str:
    run = _load(folder, "inpaint_bench.json")
    labels = sorted({label for row in run["timing"].values() for label in row})
    rows = [
        [f"{size} px", *[f"{row[label]:.3f}" if label in row else "–" for label in labels]]
        for size, row in run["timing"].items()
    ]
    outside = max(
        row["outside_max_change"]
        for block in run["sets"].values()
        for row in block["inpainters"].values()
    )
    note = f"\nLargest change outside the holes, every set and inpainter: {outside} grey levels.\n"
    return _rows(["film", *labels], rows, "l" + "r" * len(labels)) + note


@table("removal-table1")
def removal_table1(folder: Path) -> str:
    run = _load(folder, "removal_bench.json")
    operators = list(run["table1"]["lesion"])
    rows = []
    for region, block in run["table1"].items():
        cells = [region.replace("_", " ")]
        for op in operators:
            r = block[op]
            lo, hi = r["ci95"]
            cells.append(f"{100 * r['still_predicted']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]")
        rows.append(cells)
    return _rows(["region removed", *operators], rows, "l" + "r" * len(operators))


@table("removal-quality")
def removal_quality_table(folder: Path) -> str:
    run = _load(folder, "removal_bench.json")
    rows = []
    for optimised, block in run["quality"].items():
        summary = block["summary"]
        for scorer in ("blur", "inpaint"):
            d, i = summary[scorer]["deletion"], summary[scorer]["insertion"]
            rows.append(
                [
                    optimised,
                    scorer,
                    f"{d['mean']:.4f} ± {d['sd']:.4f}",
                    f"{i['mean']:.4f} ± {i['sd']:.4f}",
                    f"{summary['lesion_mass']['mean']:.3f}",
                    f"{summary['pointing']['mean']:.2f}",
                    f"{summary['explain_seconds_per_film']['mean']:.2f} + "
                    f"{summary[scorer]['seconds_per_film']:.2f}",
                ]
            )
    header = [
        "masks optimised with",
        "scored with",
        "deletion ↓",
        "insertion ↑",
        "saliency on lesion",
        "pointing game",
        "s/film (explain + metrics)",
    ]
    checks = run["verdict"]["checks"]
    failed = [name for name, ok in checks.items() if not ok]
    verdict = (
        "inpainting meets every condition of the default rule"
        if run["verdict"]["inpaint_becomes_default"]
        else "inpainting does not meet the default rule: " + "; ".join(failed) + " failed"
    )
    return (
        _rows(header, rows, "llrrrrr")
        + f"\n{run['n_films']} films, {cpu_words(run['machine'])}; {verdict}.\n"
    )


@table("shortcut-move")
def shortcut_move_table(folder: Path) -> str:
    run = _load(folder, "shortcut_move_bench.json")
    smudges = list(next(iter(run["models"].values())))
    rows = []
    for model, block in run["models"].items():
        cells = [model]
        for smudge in smudges:
            r = block[smudge]
            lo, hi = r["delta_prob_ci95"]
            ilo, ihi = r["into_covid_ci95"]
            cells.append(
                f"{r['delta_prob']:+.3f} [{lo:+.3f}, {hi:+.3f}]; "
                f"{100 * r['into_covid']:.1f}% [{100 * ilo:.1f}, {100 * ihi:.1f}]"
            )
        rows.append(cells)
    header = [
        "model trained on data cleaned by",
        *[f"{s} smudge: ΔP(COVID-19); into COVID-19" for s in smudges],
    ]
    return _rows(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    args = parser.parse_args(argv)
    stale = []
    for readme in READMES:
        text = readme.read_text()

        def render(match: re.Match[str], readme: Path = readme) -> str:
            name = match["name"]
            if name not in TABLES:
                raise SystemExit(f"{readme}: no renderer for the block '{name}'")
            body = "".join(
                match["indent"] + line for line in TABLES[name](BENCHMARKS).splitlines(True)
            )
            if body != match["body"]:
                root = BENCHMARKS.parent
                shown = readme.relative_to(root) if readme.is_relative_to(root) else readme
                stale.append(f"{shown}: {name}")
            return match["open"] + body + match["close"]

        new = BLOCK.sub(render, text)
        if new != text and not args.check:
            readme.write_text(new)
    verb = "differ from their JSON" if args.check else "rewritten"
    for line in stale:
        print(f"{verb}: {line}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
