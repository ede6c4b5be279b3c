from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_png
from xraydebug.data.layouts import detect_layout, load_index, parse_covidx_line
from xraydebug.data.splits import grouped_split
from xraydebug.errors import DatasetError


def by_path(index):
    return {r.path: r for r in index.records}


def test_parse_covidx_line_messy_tokens():
    assert parse_covidx_line("3 a.jpeg COVID-19 cohen\r") == (
        "3",
        "a.jpeg",
        "COVID-19",
        "cohen",
        "COVID-19",
    )
    assert parse_covidx_line("7 b.png positive rsna extra")[2:4] == ("COVID-19", "rsna")
    assert parse_covidx_line("7 b.png weird")[2] is None
    with pytest.raises(ValueError, match="expected 'patient_id filename label"):
        parse_covidx_line("only two")


def test_covidx_index_reports_every_bad_entry(covidx_dir: Path):
    index = load_index(covidx_dir)
    assert index.layout == "covidx"
    recs = by_path(index)
    assert recs["train/p0_a.png"].usable and recs["train/p0_a.png"].source == "site-a"
    assert recs["train/p0_b.png"].label == "normal" and recs["train/p0_b.png"].patient_id == "P0"
    assert recs["train/p3_a.png"].label == "COVID-19" and recs["train/p3_a.png"].source == ""
    assert "file not found" in recs["train/missing.png"].message
    assert "outside the dataset" in recs["train/link.png"].message
    assert "outside the dataset" in recs["train/../../outside.png"].message
    assert "conflicting labels" in recs["train/p1_a.png"].message
    assert "unknown label 'tuberculosis'" in recs["train/p2_b.png"].message
    assert recs["train/unlisted.png"].status == "warning"
    assert any(r.path.startswith("train.txt:") and r.status == "error" for r in index.records)
    # upstream test_COVIDx*.txt name, 'positive' -> COVID-19
    assert recs["test/t3.png"].label == "COVID-19"
    assert {r.split for r in index.usable()} == {"train", "test"}
    for rec in index.records:
        assert rec.status != "error" or rec.message


def test_folders_layout(folders_dir: Path):
    assert detect_layout(folders_dir) == "folders"
    index = load_index(folders_dir)
    assert len(index.usable("train")) == 6 and len(index.usable("test")) == 6
    assert all(not r.path.endswith(".txt") for r in index.records)


def test_folders_without_split(tmp_path: Path):
    write_png(tmp_path / "d" / "normal" / "a.png")
    write_png(tmp_path / "d" / "covid-19" / "b.png")
    index = load_index(tmp_path / "d")
    assert sorted(r.label for r in index.records) == ["COVID-19", "normal"]
    assert {r.split for r in index.records} == {"train"}


def test_manifest(tmp_path: Path):
    root = tmp_path / "m"
    write_png(root / "img" / "a.png")
    write_png(root / "img" / "b.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,split,patient_id,source\n"
        "img/a.png,normal,test,P1,s1\nimg/b.png,COVID-19,,P2,s2\nimg/c.png,normal,,P3,s1\n"
        "../etc/passwd,normal,,P4,s1\n"
    )
    index = load_index(root, manifest)
    recs = by_path(index)
    assert recs["img/a.png"].split == "test" and recs["img/b.png"].split == "train"
    assert recs["img/c.png"].status == "error"
    assert "outside" in recs["../etc/passwd"].message
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\n")
    with pytest.raises(DatasetError, match="missing label, path"):
        load_index(root, bad)


def test_no_layout(tmp_path: Path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match="no dataset layout found"):
        load_index(tmp_path / "x")
    with pytest.raises(DatasetError, match="not found"):
        load_index(tmp_path / "nope")


def test_grouped_split_never_leaks_a_patient(covidx_dir: Path):
    from xraydebug.data.records import ImageRecord

    records = [
        ImageRecord(f"train/{p}_{k}.png", "train", label, patient_id=p)
        for i, label in enumerate(["normal", "pneumonia", "COVID-19"] * 20)
        for p in [f"P{i}"]
        for k in range(1 + i % 3)
    ]
    for seed in range(5):
        train, val = grouped_split(records, 0.2, seed)
        assert not {r.patient_id for r in train} & {r.patient_id for r in val}
        assert len(train) + len(val) == len(records)
        assert {r.label for r in val} == {"normal", "pneumonia", "COVID-19"}
        assert all(r.split == "val" for r in val)
    assert grouped_split(records, 0.2, 1) == grouped_split(records, 0.2, 1)
    with pytest.raises(ValueError, match="val_fraction"):
        grouped_split(records, 1.5)


def test_atomic_outputs_have_ordinary_permissions(tmp_path: Path):
    import os
    import stat

    from xraydebug.fsutil import atomic_write_text

    path = atomic_write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert not list(tmp_path.glob(".a.txt.*"))
