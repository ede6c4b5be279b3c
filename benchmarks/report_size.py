"""How big and how slow is the HTML audit report when many images are flagged?

Takes a finished scan folder (and optionally the cleaned dataset), copies it to a temporary
folder, rewrites the copy's ``scan.csv`` so that ``--n-flagged`` rows are flagged (its readable
rows repeated in turn, with falling ``mass_in_text``), builds the report for a few
``--max-gallery`` values and prints the file size and build time. The input folders are only read.

    python -m benchmarks.report_size --scan demo-run/scan --clean demo-run/data-clean \\
        --n-flagged 1000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from xraydebug.audit.report import ReportConfig, build_report, has_detected_text
from xraydebug.device import machine_line
from xraydebug.runfolder import CLEAN_STATE


def inflate(scan_dir: Path, work: Path, n_flagged: int, clean_dir: Path | None) -> Path:
    """A copy of ``scan_dir`` under ``work`` whose scan.csv has ``n_flagged`` flagged rows."""
    copy = work / "scan"
    shutil.copytree(scan_dir, copy)
    table = pd.read_csv(copy / "scan.csv", dtype=str, keep_default_na=False)
    ok = table[table["status"] == "ok"]
    if ok.empty:
        raise SystemExit(f"{scan_dir}: no readable rows to repeat")
    with_text = ok[has_detected_text(ok)]
    pool = (with_text if not with_text.empty else ok).to_dict("records")
    rows = []
    for i in range(n_flagged):
        row = dict(pool[i % len(pool)])
        row.update(flagged="true", mass_in_text=f"{0.9 - 0.8 * i / max(n_flagged, 1):.6f}")
        rows.append(row)
    pd.DataFrame(rows, columns=table.columns).to_csv(copy / "scan.csv", index=False)
    if clean_dir is not None:  # a stand-in cleaned folder that points at this copy
        cleaned = work / "clean"
        cleaned.mkdir()
        shutil.copy(clean_dir / "cleaning.csv", cleaned / "cleaning.csv")
        state = json.loads((clean_dir / CLEAN_STATE).read_text())
        state["config"]["scan"] = str(copy)
        (cleaned / CLEAN_STATE).write_text(json.dumps(state))
        for row in rows:  # the report reads cleaned pictures from the cleaned folder
            target = cleaned / row["path"]
            if not target.exists() and (clean_dir / row["path"]).exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(clean_dir / row["path"], target)
        return cleaned
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", type=Path, required=True, help="a finished scan folder")
    parser.add_argument("--clean", type=Path, help="its cleaned dataset (adds cleaned pictures)")
    parser.add_argument("--n-flagged", type=int, default=1000)
    parser.add_argument("--max-gallery", type=int, nargs="+", default=[0, 50, 100])
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = inflate(args.scan, Path(tmp), args.n_flagged, args.clean)
        print(f"{args.n_flagged} flagged images (pictures from {args.scan})")
        print(f"{'max_gallery':>12} {'size MB':>9} {'seconds':>8}")
        for cap in args.max_gallery:
            start = time.perf_counter()
            path = build_report(run_dir, Path(tmp) / f"r{cap}.html", ReportConfig(max_gallery=cap))
            seconds = time.perf_counter() - start
            print(f"{cap:>12} {path.stat().st_size / 1e6:>9.2f} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
