"""``scripts/compare_runs.py`` on two tiny run folders (a CSV, a JSON, an npz)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

FILES = ["scan/scan.csv", "retrain/before_after.json", "scan/masks/**/*.npz"]


def _load_script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py"
    spec = importlib.util.spec_from_file_location("compare_runs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


compare_runs = _load_script()


def _make_run(root: Path) -> Path:
    (root / "scan" / "masks" / "test").mkdir(parents=True)
    (root / "retrain").mkdir()
    table = pd.DataFrame(
        {
            "path": ["test/a.png", "test/b.png"],
            "prob": ["0.5", "0.25"],
            "boxes": ["[[1, 2, 3, 4]]", "[]"],
            "error": ["", ""],
        }
    )
    table.to_csv(root / "scan" / "scan.csv", index=False)
    result = {
        "macro_f1": 0.75,
        "per_class": {"COVID-19": {"precision": 0.5, "support": 6}},
        "flags": [True, None, "x"],
        "seconds": 12.5,  # ignored by default
        "baseline": {"path": str(root / "models" / "m.pt")},  # a path of the run: ignored
        "machine": {"cpu": "cpu"},
        "warnings": [f"the baseline {root / 'models' / 'm.pt'} was not trained on {root}/data"],
    }
    (root / "retrain" / "before_after.json").write_text(json.dumps(result))
    rng = np.random.default_rng(0)
    np.savez(
        root / "scan" / "masks" / "test" / "a.png.npz",
        deletion=rng.random((4, 5)).astype(np.float32),
        target=np.int64(2),
    )
    return root


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a = _make_run(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    result = json.loads((b / "retrain" / "before_after.json").read_text())
    result["seconds"] = 99.0
    result["baseline"]["path"] = str(b / "models" / "m.pt")
    result["warnings"] = [f"the baseline {b / 'models' / 'm.pt'} was not trained on {b}/data"]
    (b / "retrain" / "before_after.json").write_text(json.dumps(result))
    return a, b


def _run(a: Path, b: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = compare_runs.main([str(a), str(b), "--files", *FILES])
    return code, capsys.readouterr().out


def _edit_json(run: Path, change) -> None:
    path = run / "retrain" / "before_after.json"
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def _edit_npz(run: Path, delta: float) -> None:
    path = run / "scan" / "masks" / "test" / "a.png.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["deletion"] = arrays["deletion"].astype(np.float64)
    arrays["deletion"][1, 2] += delta
    np.savez(path, **arrays)


def test_identical_runs(runs, capsys):
    code, out = _run(*runs, capsys)
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0] == "scan/scan.csv: same"
    assert lines[1].startswith("retrain/before_after.json: same (ignored keys: ")
    assert "baseline.path" in lines[1] and "seconds" in lines[1] and "machine" in lines[1]
    assert lines[2] == "scan/masks/test/a.png.npz: same"
    assert lines[-1] == "3 files compared, 0 differ"


def test_csv_cell_changed(runs, capsys):
    a, b = runs
    table = pd.read_csv(b / "scan" / "scan.csv", dtype=str, keep_default_na=False)
    table.loc[1, "prob"] = "0.250001"
    table.to_csv(b / "scan" / "scan.csv", index=False)
    code, out = _run(a, b, capsys)
    assert code == 1
    assert (
        "scan/scan.csv: differs: row 2 (path='test/b.png') column 'prob': '0.25' != '0.250001'"
        in out
    )
    assert out.strip().endswith("3 files compared, 1 differ")


def test_csv_columns_changed(runs, capsys):
    a, b = runs
    table = pd.read_csv(b / "scan" / "scan.csv", dtype=str, keep_default_na=False)
    table.drop(columns=["error"]).to_csv(b / "scan" / "scan.csv", index=False)
    code, out = _run(a, b, capsys)
    assert code == 1 and "only in A ['error']" in out


@pytest.mark.parametrize(("delta", "same"), [(1e-12, True), (1e-6, False)])
def test_json_number_tolerance(runs, capsys, delta, same):
    a, b = runs
    _edit_json(b, lambda v: v["per_class"]["COVID-19"].update(precision=0.5 + delta))
    code, out = _run(a, b, capsys)
    assert code == (0 if same else 1), out
    if not same:
        assert "per_class.COVID-19.precision: 0.5 != 0.500001" in out


def test_json_strings_and_bools_exact(runs, capsys):
    a, b = runs
    _edit_json(b, lambda v: v.update(flags=[1, None, "x"]))  # True -> 1 is not a match
    code, out = _run(a, b, capsys)
    assert code == 1 and "flags[0]: True != 1" in out
    code = compare_runs.main([str(a), str(b), "--files", FILES[1], "--ignore-keys"])
    out = capsys.readouterr().out
    assert code == 1 and "seconds: 12.5 != 99.0" in out  # nothing ignored


@pytest.mark.parametrize(("delta", "same"), [(1e-6, True), (1e-3, False)])
def test_npz_tolerance(runs, capsys, delta, same):
    a, b = runs
    _edit_npz(b, delta)
    code, out = _run(a, b, capsys)
    assert code == (0 if same else 1), out
    if not same:
        assert "scan/masks/test/a.png.npz: differs: deletion: max abs diff 0.001" in out


def test_npz_keys_and_shapes(runs, capsys):
    a, b = runs
    np.savez(b / "scan" / "masks" / "test" / "a.png.npz", deletion=np.zeros((5, 4)))
    code, out = _run(a, b, capsys)
    assert code == 1
    assert "array 'target' only in A" in out and "deletion: shape (4, 5) in A, (5, 4) in B" in out


def test_missing_files(runs, capsys):
    a, b = runs
    (b / "scan" / "scan.csv").unlink()
    (a / "scan" / "masks" / "test" / "a.png.npz").rename(a / "scan" / "masks" / "test" / "c.npz")
    code, out = _run(a, b, capsys)
    assert code == 1
    assert "scan/scan.csv: differs: missing in B" in out
    assert "scan/masks/test/a.png.npz: differs: missing in A" in out
    assert "scan/masks/test/c.npz: differs: missing in B" in out
    assert out.strip().endswith("4 files compared, 3 differ")


def test_not_a_folder(tmp_path, capsys):
    assert compare_runs.main([str(tmp_path), str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
