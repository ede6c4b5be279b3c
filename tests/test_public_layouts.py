"""Multi-label public layouts (NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG) on tiny fixtures
written in each release's real column format."""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import tree_digest
from xraydebug.cli import app
from xraydebug.data.inspect import INSPECT_COLUMNS, inspect_dataset, summarize_counts
from xraydebug.data.layouts import detect_layout, load_index
from xraydebug.data.public_layouts import CHEXPERT_OBSERVATIONS, NIH_FINDINGS, PUBLIC_LAYOUTS
from xraydebug.errors import DatasetError
from xraydebug.stages.clean import _copy_label_files

runner = CliRunner()

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
CHEXPERT_HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_OBSERVATIONS)
# MIMIC's label files list the same observations alphabetically
MIMIC_OBSERVATIONS = sorted(CHEXPERT_OBSERVATIONS)
MIMIC_META_HEADER = (
    "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,"
    "StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
    "PatientOrientationCodeSequence_CodeMeaning"
)


def write_image(path: Path, seed: int = 0, size: int = 32) -> Path:
    """A small 8-bit gray PNG or JPEG (by suffix) written with cv2."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(40, 200, size=(size, size), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def by_path(index):
    return {r.path: r for r in index.records}


def vector(names: tuple[str, ...], present: set[str]) -> tuple[float, ...]:
    return tuple(1.0 if n in present else 0.0 for n in names)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def nih_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ChestX-ray14"
    rows = [  # image, findings, patient, view, images_00N (None: not on disk)
        ("00000001_000.png", "Cardiomegaly", "1", "PA", 1),
        ("00000001_001.png", "Cardiomegaly|Emphysema", "1", "PA", 1),
        ("00000002_000.png", "No Finding", "2", "AP", 2),
        ("00000003_000.png", "Effusion|Infiltration|Pleural_Thickening", "3", "AP", 2),
        ("00000004_000.png", "Hernia", "4", "PA", 3),  # test list
        ("00000005_000.png", "Tuberculosis|Mass", "5", "PA", 3),  # unknown token
        ("00000006_000.png", "Nodule", "6", "PA", None),  # missing file
        ("00000007_000.png", "Mass", "7", "PA", 1),  # in neither list
        ("00000008_000.png", "Edema", "8", "AP", 1),  # in two folders, see below
    ]
    lines = [NIH_HEADER]
    for k, (image, findings, patient, view, folder) in enumerate(rows):
        lines.append(f"{image},{findings},0,{patient},{40 + k},M,{view},2500,2048,0.143,0.143,")
        if folder is not None:
            write_image(root / f"images_{folder:03d}" / "images" / image, seed=k)
    write_image(root / "images_002" / "images" / "00000008_000.png", seed=99)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    train = [r[0] for r in rows if r[0] not in {"00000004_000.png", "00000007_000.png"}]
    (root / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (root / "test_list.txt").write_text("00000004_000.png\n")
    return root


def chexpert_row(path: str, view: str, ap_pa: str, values: dict[str, str]) -> str:
    cells = [values.get(name, "") for name in CHEXPERT_OBSERVATIONS]
    return ",".join([path, "Female", "68", view, ap_pa, *cells])


@pytest.fixture
def chexpert_dir(tmp_path: Path) -> Path:
    root = tmp_path / "CheXpert-v1.0-small"
    prefix = "CheXpert-v1.0-small"
    train = [
        (
            "train/patient00001/study1/view1_frontal.jpg",
            "Frontal",
            "AP",
            {"Cardiomegaly": "1.0", "Edema": "-1.0", "Support Devices": "1.0"},
        ),
        (
            "train/patient00001/study1/view2_lateral.jpg",
            "Lateral",
            "",
            {"Cardiomegaly": "1.0", "Edema": "-1.0", "Support Devices": "1.0"},
        ),
        (
            "train/patient00002/study1/view1_frontal.jpg",
            "Frontal",
            "PA",
            {"No Finding": "1.0", "Pneumonia": "0.0"},
        ),
        (
            "train/patient00003/study2/view1_frontal.jpg",
            "Frontal",
            "AP",
            {"Pleural Effusion": "-1.0", "Lung Opacity": "1.0"},
        ),
        (
            "train/patient00004/study1/view1_frontal.jpg",
            "Frontal",
            "AP",
            {"Fracture": "yes"},
        ),  # not a CheXpert value
        ("train/patient00005/study1/view1_frontal.jpg", "Frontal", "PA", {}),  # missing file
    ]
    lines = [CHEXPERT_HEADER]
    for k, (rel, view, ap_pa, values) in enumerate(train):
        lines.append(chexpert_row(f"{prefix}/{rel}", view, ap_pa, values))
        if "patient00005" not in rel:
            write_image(root / rel, seed=k)
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    valid = "valid/patient64541/study1/view1_frontal.jpg"
    write_image(root / valid, seed=50)
    valid_values = {n: "0.0" for n in CHEXPERT_OBSERVATIONS} | {"Atelectasis": "1.0"}
    (root / "valid.csv").write_text(
        CHEXPERT_HEADER
        + "\n"
        + chexpert_row(f"{prefix}/{valid}", "Frontal", "PA", valid_values)
        + "\n"
    )
    return root


def mimic_files(root: Path, gz: bool, labels_stem: str = "mimic-cxr-2.0.0-chexpert") -> None:
    films = [  # dicom, subject, study, view, split (None: not listed), on disk
        ("d1a", "10000032", "50414267", "PA", "train", True),
        ("d1b", "10000032", "50414267", "LATERAL", "train", True),
        ("d2a", "10000764", "57375967", "AP", "validate", True),
        ("d3a", "11000011", "51000001", "AP", "test", True),
        ("d4a", "12000001", "52000001", "PA", "train", False),  # file missing
        ("d5a", "13000001", "53000001", "PA", None, True),  # not in the split file
    ]
    studies = {  # (subject, study) -> observations
        ("10000032", "50414267"): {"No Finding": "1.0"},
        ("10000764", "57375967"): {"Consolidation": "1.0", "Pneumonia": "-1.0"},
        ("11000011", "51000001"): {"Pleural Effusion": "1.0", "Support Devices": "1.0"},
        ("12000001", "52000001"): {"Edema": "0.0"},
        ("13000001", "53000001"): {"Atelectasis": "1.0"},
    }
    meta = [MIMIC_META_HEADER]
    split = ["dicom_id,study_id,subject_id,split"]
    for k, (dicom, subject, study, view, where, on_disk) in enumerate(films):
        meta.append(
            f"{dicom},{subject},{study},CHEST (PA AND LAT),{view},32,32,21800506,"
            f"213014.531,CHEST (PA AND LAT),postero-anterior,Erect"
        )
        if where is not None:
            split.append(f"{dicom},{study},{subject},{where}")
        if on_disk:
            write_image(
                root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg",
                seed=k,
            )
    labels = ["subject_id,study_id," + ",".join(MIMIC_OBSERVATIONS)]
    for (subject, study), values in studies.items():
        labels.append(",".join([subject, study, *(values.get(n, "") for n in MIMIC_OBSERVATIONS)]))
    for stem, lines in (
        ("mimic-cxr-2.0.0-metadata", meta),
        (labels_stem, labels),
        ("mimic-cxr-2.0.0-split", split),
    ):
        text = ("\n".join(lines) + "\n").encode()
        if gz:
            (root / f"{stem}.csv.gz").write_bytes(gzip.compress(text))
        else:
            (root / f"{stem}.csv").write_bytes(text)


@pytest.fixture(params=[False, True], ids=["csv", "csv.gz"])
def mimic_dir(tmp_path: Path, request) -> Path:
    root = tmp_path / "mimic-cxr-jpg"
    mimic_files(root, gz=request.param)
    return root


# --------------------------------------------------------------------------- detection


def test_detects_each_layout(nih_dir: Path, chexpert_dir: Path, mimic_dir: Path, tmp_path: Path):
    assert detect_layout(nih_dir) == "nih"
    assert detect_layout(chexpert_dir) == "chexpert"
    assert detect_layout(mimic_dir) == "mimic"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "train.csv").write_text("file,label\na.png,normal\n")  # no Path column
    (plain / "valid.csv").write_text("Path,label\na.png,normal\n")  # no observation column
    with pytest.raises(DatasetError, match="no dataset layout found") as caught:
        detect_layout(plain)
    message = str(caught.value)
    assert "Data_Entry_2017" in message and "CheXpert" in message and "MIMIC" in message


# --------------------------------------------------------------------------- NIH


def test_nih_findings_views_folders_and_splits(nih_dir: Path):
    index = load_index(nih_dir)
    assert (index.layout, index.multilabel, index.classes) == ("nih", True, NIH_FINDINGS)
    recs = by_path(index)
    first = recs["images_001/images/00000001_000.png"]
    assert first.findings == vector(NIH_FINDINGS, {"Cardiomegaly"})
    assert (first.label, first.source, first.patient_id, first.split) == (
        "Cardiomegaly",
        "PA",
        "1",
        "train",
    )
    three = recs["images_002/images/00000003_000.png"]  # images spread over images_00N/images/
    assert three.label == "Effusion|Infiltration|Pleural_Thickening"
    assert three.source == "AP" and three.usable
    normal = recs["images_002/images/00000002_000.png"]
    assert normal.label == "No Finding" and normal.findings == (0.0,) * 14
    assert recs["images_003/images/00000004_000.png"].split == "test"
    assert {r.split for r in index.usable()} == {"train", "test"}


def test_nih_bad_entries(nih_dir: Path):
    recs = by_path(load_index(nih_dir))
    unknown = recs["images_003/images/00000005_000.png"]
    assert unknown.status == "error" and "unknown finding 'Tuberculosis'" in unknown.message
    assert recs["00000006_000.png"].status == "error"
    assert "file not found" in recs["00000006_000.png"].message
    twice = recs["00000008_000.png"]
    assert twice.status == "error" and "found 2 times" in twice.message
    unlisted = recs["images_001/images/00000007_000.png"]
    assert unlisted.status == "warning" and not unlisted.usable
    assert "not in train_val_list.txt or test_list.txt" in unlisted.message
    for rec in recs.values():
        assert rec.status != "error" or rec.message


def test_nih_symlink_out_of_the_dataset_is_refused(nih_dir: Path, tmp_path: Path):
    outside = write_image(tmp_path / "elsewhere" / "00000009_000.png")
    (nih_dir / "images_001" / "images" / "00000009_000.png").symlink_to(outside)
    entry = "00000009_000.png,Mass,0,9,50,F,PA,2500,2048,0.143,0.143,\n"
    with open(nih_dir / "Data_Entry_2017_v2020.csv", "a") as handle:
        handle.write(entry)
    with open(nih_dir / "train_val_list.txt", "a") as handle:
        handle.write("00000009_000.png\n")
    rec = by_path(load_index(nih_dir))["images_001/images/00000009_000.png"]
    assert rec.status == "error" and "outside the dataset" in rec.message


def test_unknown_uncertain_policy(nih_dir: Path):
    with pytest.raises(DatasetError, match=r"--uncertain must be one of zeros\|ones\|ignore"):
        load_index(nih_dir, uncertain="maybe")


def test_nih_without_list_files_is_all_train(nih_dir: Path):
    (nih_dir / "train_val_list.txt").unlink()
    (nih_dir / "test_list.txt").unlink()
    index = load_index(nih_dir)
    assert {r.split for r in index.usable()} == {"train"}
    assert by_path(index)["images_001/images/00000007_000.png"].usable


def test_nih_requested_classes_follow_the_callers_order(nih_dir: Path):
    index = load_index(nih_dir, None, ("Emphysema", "cardiomegaly", "Pleural Thickening"))
    assert index.classes == ("Emphysema", "cardiomegaly", "Pleural Thickening")
    recs = by_path(index)
    assert recs["images_001/images/00000001_001.png"].findings == (1.0, 1.0, 0.0)
    assert recs["images_001/images/00000001_001.png"].label == "Emphysema|cardiomegaly"
    three = recs["images_002/images/00000003_000.png"]
    assert three.findings == (0.0, 0.0, 1.0) and three.label == "Pleural Thickening"
    # a finding of the release outside the request is not reported
    assert recs["images_003/images/00000004_000.png"].label == "No Finding"


def test_requested_class_the_layout_lacks_is_one_line(nih_dir: Path, chexpert_dir: Path):
    with pytest.raises(DatasetError) as caught:
        load_index(nih_dir, classes=("Effusion", "COVID-19"))
    message = str(caught.value)
    assert message.startswith(f"{nih_dir}: the NIH ChestX-ray14 layout has no finding 'COVID-19'")
    assert "(it has: Atelectasis, Cardiomegaly" in message and "\n" not in message
    with pytest.raises(DatasetError, match="the CheXpert layout has no finding 'Infiltration'"):
        load_index(chexpert_dir, classes=("Infiltration",), uncertain="zeros")
    # NIH's "Effusion" is CheXpert's "Pleural Effusion": found, under the caller's name
    index = load_index(chexpert_dir, classes=("Effusion",), uncertain="zeros")
    assert index.classes == ("Effusion",)


def test_nih_reads_a_trailing_comma_free_header_and_extra_columns(tmp_path: Path):
    root = tmp_path / "nih"
    write_image(root / "a" / "x.png")
    (root / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Patient ID,View Position,Extra\nx.png,Mass|Nodule,9,AP,1,2,3\n"
    )
    (rec,) = load_index(root).records
    assert (rec.path, rec.label, rec.source, rec.patient_id) == (
        "a/x.png",
        "Mass|Nodule",
        "AP",
        "9",
    )


# --------------------------------------------------------------------------- CheXpert


def test_chexpert_refuses_uncertain_labels_without_a_policy(chexpert_dir: Path):
    with pytest.raises(DatasetError) as caught:
        load_index(chexpert_dir)
    message = str(caught.value)
    assert "\n" not in message
    assert str(chexpert_dir / "train.csv") in message
    assert "3 uncertain label(s)" in message
    assert "--uncertain zeros|ones|ignore" in message
    # only the selected findings count: without Edema and Pleural Effusion there is none
    index = load_index(chexpert_dir, classes=("Cardiomegaly", "Support Devices"))
    assert by_path(index)["train/patient00001/study1/view1_frontal.jpg"].findings == (1.0, 1.0)


@pytest.mark.parametrize(("policy", "edema"), [("zeros", 0.0), ("ones", 1.0), ("ignore", None)])
def test_chexpert_uncertain_policies(chexpert_dir: Path, policy: str, edema: float | None):
    index = load_index(chexpert_dir, uncertain=policy)
    assert (index.layout, index.multilabel, index.classes) == (
        "chexpert",
        True,
        CHEXPERT_OBSERVATIONS,
    )
    rec = by_path(index)["train/patient00001/study1/view1_frontal.jpg"]  # prefix stripped
    value = rec.findings[CHEXPERT_OBSERVATIONS.index("Edema")]
    assert math.isnan(value) if edema is None else value == edema
    assert rec.findings[CHEXPERT_OBSERVATIONS.index("Cardiomegaly")] == 1.0
    assert rec.findings[CHEXPERT_OBSERVATIONS.index("Pneumonia")] == 0.0  # blank = negative
    expected = (
        "Cardiomegaly|Edema|Support Devices"
        if policy == "ones"
        else ("Cardiomegaly|Support Devices")
    )
    assert rec.label == expected


def test_chexpert_paths_views_patients_and_splits(chexpert_dir: Path):
    index = load_index(chexpert_dir, uncertain="zeros")
    recs = by_path(index)
    views = {p.split("/")[1] + "/" + p.rsplit("/", 1)[1]: r.source for p, r in recs.items()}
    assert views["patient00001/view1_frontal.jpg"] == "AP"
    assert views["patient00001/view2_lateral.jpg"] == "Lateral"
    assert views["patient00002/view1_frontal.jpg"] == "PA"
    normal = recs["train/patient00002/study1/view1_frontal.jpg"]
    assert normal.label == "No Finding" and normal.patient_id == "patient00002"
    valid = recs["valid/patient64541/study1/view1_frontal.jpg"]
    assert valid.split == "test" and valid.label == "Atelectasis" and valid.usable
    bad = recs["train/patient00004/study1/view1_frontal.jpg"]
    assert bad.status == "error" and "Fracture = 'yes'" in bad.message
    missing = recs["train/patient00005/study1/view1_frontal.jpg"]
    assert missing.status == "error" and missing.message == "file not found"
    assert len(index.usable()) == 5


def test_chexpert_paths_relative_to_root_and_refused_outside(tmp_path: Path):
    root = tmp_path / "chex"
    write_image(root / "train" / "patient00009" / "study1" / "view1_frontal.jpg")
    write_image(tmp_path / "secret.jpg")
    (root / "train.csv").write_text(
        CHEXPERT_HEADER
        + "\n"
        + chexpert_row("train/patient00009/study1/view1_frontal.jpg", "Frontal", "PA", {})
        + "\n"
        + chexpert_row("../secret.jpg", "Frontal", "PA", {})
        + "\n"
        + chexpert_row("CheXpert-v1.0/train/../../../secret.jpg", "Frontal", "PA", {})
        + "\n"
    )
    recs = by_path(load_index(root))
    assert recs["train/patient00009/study1/view1_frontal.jpg"].usable
    assert "outside the dataset" in recs["../secret.jpg"].message
    outside = [r for p, r in recs.items() if p.endswith("../secret.jpg") and p != "../secret.jpg"]
    assert outside and all("outside the dataset" in r.message for r in outside)


# --------------------------------------------------------------------------- MIMIC


def test_mimic_layout(mimic_dir: Path):
    with pytest.raises(DatasetError, match=r"mimic-cxr-2\.0\.0-chexpert\.csv.*1 uncertain"):
        load_index(mimic_dir)
    index = load_index(mimic_dir, uncertain="ignore")
    assert (index.layout, index.multilabel, index.classes) == ("mimic", True, CHEXPERT_OBSERVATIONS)
    recs = by_path(index)
    lateral = recs["files/p10/p10000032/s50414267/d1b.jpg"]
    assert (lateral.source, lateral.patient_id, lateral.split, lateral.label) == (
        "LATERAL",
        "10000032",
        "train",
        "No Finding",
    )
    val = recs["files/p10/p10000764/s57375967/d2a.jpg"]
    assert val.split == "val" and val.source == "AP" and val.label == "Consolidation"
    assert math.isnan(val.findings[CHEXPERT_OBSERVATIONS.index("Pneumonia")])
    test = recs["files/p11/p11000011/s51000001/d3a.jpg"]
    assert test.split == "test" and test.label == "Pleural Effusion|Support Devices"
    assert recs["files/p12/p12000001/s52000001/d4a.jpg"].message == "file not found"
    unlisted = recs["files/p13/p13000001/s53000001/d5a.jpg"]
    assert unlisted.status == "warning" and not unlisted.usable
    assert {r.split for r in index.usable()} == {"train", "val", "test"}


def test_mimic_negbio_labels_and_no_split_file(tmp_path: Path):
    root = tmp_path / "m"
    mimic_files(root, gz=False, labels_stem="mimic-cxr-2.0.0-negbio")
    (root / "mimic-cxr-2.0.0-split.csv").unlink()
    index = load_index(root, classes=("Atelectasis", "No Finding"))
    assert {r.split for r in index.usable()} == {"train"}
    rec = by_path(index)["files/p13/p13000001/s53000001/d5a.jpg"]
    assert rec.findings == (1.0, 0.0) and rec.label == "Atelectasis"


# --------------------------------------------------------------------------- clean, inspect


def test_clean_copies_each_layouts_label_files(
    nih_dir: Path, chexpert_dir: Path, mimic_dir: Path, tmp_path: Path
):
    ext = ".csv.gz" if any(mimic_dir.glob("*.csv.gz")) else ".csv"
    expected = {
        "nih": {"Data_Entry_2017_v2020.csv", "train_val_list.txt", "test_list.txt"},
        "chexpert": {"train.csv", "valid.csv"},
        "mimic": {f"mimic-cxr-2.0.0-{s}{ext}" for s in ("metadata", "chexpert", "split")},
    }
    for layout, data in (("nih", nih_dir), ("chexpert", chexpert_dir), ("mimic", mimic_dir)):
        out = tmp_path / f"{layout}-clean"
        out.mkdir()
        before = tree_digest(data)
        _copy_label_files(data, out, layout, None)
        assert {p.name for p in out.iterdir()} == expected[layout]
        for path in out.iterdir():
            assert path.read_bytes() == (data / path.name).read_bytes()
        assert tree_digest(data) == before
        assert PUBLIC_LAYOUTS[layout].name == layout


def test_cleaned_chexpert_copy_keeps_the_layout(chexpert_dir: Path, tmp_path: Path):
    out = tmp_path / "CheXpert-v1.0-small-clean"  # the CSVs still say CheXpert-v1.0-small/...
    out.mkdir()
    _copy_label_files(chexpert_dir, out, "chexpert", None)
    source = load_index(chexpert_dir, uncertain="zeros")
    for rec in source.usable():
        (out / rec.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(chexpert_dir / rec.path, out / rec.path)
    copy = load_index(out, uncertain="zeros")
    assert copy.layout == "chexpert"
    assert {(r.path, r.label, r.source) for r in copy.usable()} == {
        (r.path, r.label, r.source) for r in source.usable()
    }


def test_cli_inspect_nih(nih_dir: Path, tmp_path: Path):
    out = tmp_path / "inspect.csv"
    before = tree_digest(nih_dir)
    result = runner.invoke(app, ["inspect", str(nih_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "nih layout" in result.output and "Traceback" not in result.output
    assert tree_digest(nih_dir) == before
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(table.columns) == INSPECT_COLUMNS
    rows = table.set_index("path")
    row = rows.loc["images_002/images/00000003_000.png"]
    assert row["label"] == "Effusion|Infiltration|Pleural_Thickening"
    assert (row["status"], row["source"], row["height"], row["format"]) == ("ok", "AP", "32", "PNG")
    assert rows.loc["00000006_000.png", "status"] == "error"


def test_inspect_uncertain_policy(chexpert_dir: Path, tmp_path: Path):
    out = tmp_path / "i.csv"
    refused = runner.invoke(app, ["inspect", str(chexpert_dir), "--out", str(out)])
    assert refused.exit_code == 1
    assert "--uncertain zeros|ones|ignore" in refused.output and "Traceback" not in refused.output
    ok = runner.invoke(
        app, ["inspect", str(chexpert_dir), "--out", str(out), "--uncertain", "ones"]
    )
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["inspect", str(chexpert_dir), "--uncertain", "maybe"])
    assert bad.exit_code != 0
    result = inspect_dataset(chexpert_dir, uncertain="ones")
    counts = summarize_counts(result.table, multilabel=True)
    assert counts.loc["train", "Edema"] == 2 and counts.loc["train", "total"] == 4
    assert counts.loc["test", "Atelectasis"] == 1
