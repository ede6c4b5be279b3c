"""The HTML audit report: content, accessibility basics, self-containment, size."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from tests.conftest import make_report_run, tree_digest
from xraydebug.audit import report
from xraydebug.audit.report import ReportConfig, build_report, find_parts
from xraydebug.cli import app
from xraydebug.errors import DatasetError
from xraydebug.runfolder import mask_filename
from xraydebug.stages.clean import CleanConfig, clean_dataset


class _Collector(HTMLParser):
    """Every start tag with its attributes, plus the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    return collector


_EXTERNAL = re.compile(r"^\s*(https?:|//|ftp:|file:|/|\.\./)", re.IGNORECASE)


def assert_self_contained(html: str) -> None:
    """Nothing in ``html`` points outside the file: no URL in a fetching attribute (src,
    href, action, data, poster, srcset entries), no external script or stylesheet link, no
    CSS ``url(...)`` other than data: and no ``@import``; and the CSP forbids requests."""
    doc = parse(html)
    for tag, attrs in doc.tags:
        for name, value in attrs.items():
            if not value:
                continue
            if name in ("src", "href", "action", "data", "poster"):
                assert not _EXTERNAL.match(value), (tag, name, value[:80])
            if name in ("srcset", "imagesrcset"):
                for entry in value.split(","):
                    assert entry.strip().startswith("data:"), (tag, name, entry[:80])
            if name == "style":
                assert "@import" not in value and "url(" not in value.replace("url(data:", ""), (
                    tag,
                    value[:80],
                )
        assert not (tag == "script" and attrs.get("src")), "external script"
        assert tag != "link", "external stylesheet or resource"
    for url in re.findall(r"url\(\s*['\"]?([^'\")]*)", html):
        assert url.startswith("data:"), f"CSS url() outside the file: {url[:80]}"
    assert "@import" not in html, "CSS @import"
    assert "default-src 'none'" in html  # CSP: the browser refuses any network request


def test_static_check_catches_each_kind_of_external_reference():
    page = "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'\">"
    assert_self_contained(page + '<img src="data:image/png;base64,AAAA">')
    for bad in (
        '<img src="https://x.org/a.png">',
        '<img srcset="data:image/png;base64,AA 1x, https://x.org/b.png 2x">',
        "<style>body { background: url(https://x.org/a.png) }</style>",
        '<div style="background: url(/etc/x.png)"></div>',
        "<style>@import 'https://x.org/a.css';</style>",
        '<link rel="stylesheet" href="a.css">',
        '<a href="file:///etc/passwd">x</a>',
    ):
        with pytest.raises(AssertionError):
            assert_self_contained(page + bad)


@pytest.fixture(scope="module")
def report_run(tmp_path_factory) -> tuple[Path, Path]:
    return make_report_run(tmp_path_factory.mktemp("report"))


def _flagged(scan_dir: Path) -> pd.DataFrame:
    table = pd.read_csv(scan_dir / "scan.csv", dtype=str, keep_default_na=False)
    return table[table["flagged"] == "true"]


def test_scan_report_content_and_accessibility(report_run, tmp_path: Path):
    data, scan_dir = report_run
    before = tree_digest(data)
    path = build_report(scan_dir, tmp_path / "report.html")
    html = path.read_text()
    doc = parse(html)
    flagged = _flagged(scan_dir)
    assert len(flagged) >= 2
    # every picture is inlined and described
    images = [attrs for tag, attrs in doc.tags if tag == "img"]
    assert images and all(a.get("src", "").startswith("data:image/") for a in images)
    assert all(len((a.get("alt") or "").strip()) > 20 for a in images)
    assert_self_contained(html)  # nothing can be fetched
    # summary first, then the gallery sorted by mass_in_text
    assert html.index('id="summary"') < html.index('id="flagged"') < html.index('id="sources"')
    ranks = [a["data-path"] for tag, a in doc.tags if tag == "article"]
    expected = flagged.assign(m=flagged["mass_in_text"].astype(float))
    expected = expected.sort_values(["m", "path"], ascending=[False, True])["path"].tolist()
    assert ranks == expected
    text = " ".join(doc.text)
    assert "May contain patient identifiers" in text
    assert "<dt>Patient id</dt>" not in html and "P0" not in re.sub(r"test/P0\d+_\d\.png", "", text)
    assert "truncated PNG file" in text and "test/broken.png" in text  # bad inputs listed
    assert f"{len(flagged)} flagged" in text.replace("\n", " ").replace("  ", " ")
    # the review widget: two choices per case, an export button, inline script only
    radios = [a for tag, a in doc.tags if tag == "input" and a.get("type") == "radio"]
    assert len(radios) == 2 * len(flagged)
    assert {a["value"] for a in radios} == {"shortcut", "not a shortcut"}
    assert 'id="export-csv"' in html and "text/csv" in html
    assert tree_digest(data) == before  # inputs untouched


def test_patient_ids_only_with_show_ids(report_run, tmp_path: Path):
    data, scan_dir = report_run
    html = build_report(
        scan_dir, tmp_path / "r.html", config=ReportConfig(show_ids=True)
    ).read_text()
    truth = json.loads((data / "ground_truth.json").read_text())
    first = _flagged(scan_dir)["path"].iloc[0]
    assert "<dt>Patient id</dt>" in html and truth[first]["patient_id"] in html


def test_paths_only_with_show_paths(report_run, tmp_path: Path, tmp_path_factory):
    """Reports travel by e-mail: by default the dataset, model and run folders appear by name,
    never where they lie on disk; ``--show-paths`` prints the full paths."""
    data, scan_dir = report_run
    base = str(tmp_path_factory.getbasetemp())  # above the dataset, the scan and tmp_path
    html = build_report(scan_dir, tmp_path / "r.html").read_text()
    assert str(data) not in html and str(scan_dir) not in html
    assert base not in html and str(tmp_path) not in html
    assert f"<code>{data.name}</code>" in html and f"<code>{scan_dir.name}</code>" in html
    assert "<code>xraydebug report RUN_FOLDER --show-ids</code>" in html  # works from anywhere
    argv = ["report", str(scan_dir), "--out", str(tmp_path / "full.html"), "--show-paths"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    full = (tmp_path / "full.html").read_text()
    assert f"<code>{data}</code>" in full and f"<code>{scan_dir}</code>" in full
    assert f'"data": "{data}"' in full  # the settings, as run.json recorded them
    assert f"<code>xraydebug report {scan_dir} --show-ids</code>" in full


def test_gallery_cap_lists_the_rest(report_run, tmp_path: Path):
    _data, scan_dir = report_run
    n = len(_flagged(scan_dir))
    html = build_report(
        scan_dir, tmp_path / "r.html", config=ReportConfig(max_gallery=1)
    ).read_text()
    doc = parse(html)
    assert sum(1 for tag, _ in doc.tags if tag == "article") == 1
    assert f"{n - 1} more flagged image" in html
    rows = re.findall(r"<tr><td>(\d+)</td><td class=\"l\"><code>", html)
    assert rows == [str(i) for i in range(2, n + 1)]


def test_report_follows_clean_to_scan_and_shows_cleaned(report_run, tmp_path: Path):
    data, scan_dir = report_run
    result = clean_dataset(
        data,
        tmp_path / "clean",
        config=CleanConfig.from_options({"scan": str(scan_dir), "device": "cpu"}),
    )
    assert build_report(result.out) == tmp_path / "clean" / "report.html"
    parts = find_parts(tmp_path / "clean")
    assert parts.clean == tmp_path / "clean" and parts.scan == scan_dir
    html = (result.out / "report.html").read_text()
    assert_self_contained(html)
    assert html.count("Cleaned (text inpainted)") == len(_flagged(scan_dir))
    assert "had their detected text removed" in html
    assert str(tmp_path) not in html and str(data) not in html and str(scan_dir) not in html
    # the cleaned dataset still reads as a dataset (the report does not get in the way)
    from xraydebug.data.layouts import load_index

    assert len(load_index(tmp_path / "clean").usable()) == len(load_index(data).usable())


def test_missing_originals_are_explained_not_fatal(report_run, tmp_path: Path):
    _data, scan_dir = report_run
    moved = tmp_path / "scan"
    shutil.copytree(scan_dir, moved)
    run = json.loads((moved / "run.json").read_text())
    run["data"] = str(tmp_path / "gone")
    (moved / "run.json").write_text(json.dumps(run))
    html = build_report(moved).read_text()
    assert "original not available: gone/test/" in html  # named, not located
    assert str(tmp_path) not in html


def test_report_of_unknown_folder_fails_clearly(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"holds no scan\.csv"):
        build_report(tmp_path)
    with pytest.raises(DatasetError, match="no such run folder"):
        build_report(tmp_path / "nope")


def test_report_stays_small_for_many_flags(tmp_path: Path):
    """200 flagged rows, 50 with pictures: well under the e-mail limit (size is recorded)."""
    data, scan_dir = make_report_run(tmp_path, n_test=6)
    table = pd.read_csv(scan_dir / "scan.csv", dtype=str, keep_default_na=False)
    template = table[table["flagged"] == "true"].iloc[0].to_dict()
    rows = []
    for i in range(200):
        path = f"test/copy_{i}.png"
        shutil.copy(data / template["path"], data / path)
        (scan_dir / mask_filename(path)).write_bytes(
            (scan_dir / template["mask_file"]).read_bytes()
        )
        rows.append(
            dict(template, path=path, mask_file=mask_filename(path), mass_in_text=0.2 + i * 1e-4)
        )
    big = pd.DataFrame(rows, columns=table.columns)
    big.to_csv(scan_dir / "scan.csv", index=False)
    html = build_report(scan_dir, config=ReportConfig(max_gallery=50)).read_text()
    size_mb = len(html.encode()) / 1e6
    assert html.count("<article") == 50
    assert "150 more flagged images" in html
    assert size_mb < 5.0, size_mb


def test_scan_csv_saved_by_pandas_keeps_its_flags(report_run, tmp_path: Path):
    _data, scan_dir = report_run
    n = len(_flagged(scan_dir))
    copy = tmp_path / "scan"
    shutil.copytree(scan_dir, copy)
    # a notebook user: read with pandas defaults, save back (flagged becomes True/False)
    table = pd.read_csv(copy / "scan.csv")
    table.to_csv(copy / "scan.csv", index=False)
    assert ",True," in (copy / "scan.csv").read_text()
    assert f"Flagged cases ({n})" in build_report(copy, tmp_path / "r.html").read_text()
    table["flagged"] = table["flagged"].astype(object)
    table.loc[1, "flagged"] = "maybe"
    table.to_csv(copy / "scan.csv", index=False)
    with pytest.raises(DatasetError, match=r"scan.csv: row 3 \(.*\): flagged is 'maybe'"):
        build_report(copy, tmp_path / "r2.html")


def _card_pictures(html: str, path: str) -> list[str]:
    """The ``data:`` URIs of the pictures on the gallery card of ``path``, in order."""
    card = re.search(rf'<article [^>]*data-path="{re.escape(path)}".*?</article>', html, re.S)
    assert card, f"no card for {path}"
    return re.findall(r'<img src="(data:[^"]+)"', card.group(0))


def test_report_refuses_files_outside_its_run(
    report_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data, scan_dir = report_run
    copy = tmp_path / "scan"
    shutil.copytree(scan_dir, copy)
    # a readable image and a mask outside the dataset and the scan, unlike anything in them
    secret = tmp_path / "secret.png"
    image = Image.open(data / _flagged(scan_dir)["path"].iloc[0]).convert("L")
    ImageOps.invert(image).save(secret)
    secret_mask = tmp_path / "secret.npz"
    checkerboard = np.indices((8, 8)).sum(axis=0) % 2
    np.savez(secret_mask, deletion=checkerboard, insertion=checkerboard)
    table = pd.read_csv(copy / "scan.csv", dtype=str, keep_default_na=False)
    rows = table.index[table["flagged"] == "true"]
    dotdot = "../" * (len(data.relative_to(tmp_path.anchor).parts) + 1) + str(secret)[1:]
    table.loc[rows[0], "path"] = dotdot  # a ../ path
    table.loc[rows[1], "path"] = str(secret)  # an absolute path
    table.loc[rows[2], "mask_file"] = "../" + secret_mask.name  # a mask outside the scan
    table.to_csv(copy / "scan.csv", index=False)
    html = build_report(copy, tmp_path / "r.html").read_text()
    assert html.count("resolves outside") == 3, html.count("resolves outside")
    # the absolute row path is named by its file's name, like every location in a message
    assert f"image path &#39;{secret.name}&#39; resolves outside {data.name} (refused)" in html
    assert f"mask file &#39;../{secret_mask.name}&#39; resolves outside scan (refused)" in html
    # the refused files' contents are nowhere in the report: not their bytes (base64, as
    # the report would inline them), not the pictures the report makes of them (taken from
    # a build with the check switched off)
    for refused in (secret, secret_mask):
        assert base64.b64encode(refused.read_bytes()).decode() not in html
    monkeypatch.setattr(report, "resolves_inside", lambda root, relative: True)
    unchecked = build_report(copy, tmp_path / "unchecked.html").read_text()
    leaks = _card_pictures(unchecked, dotdot) + _card_pictures(unchecked, str(secret))
    original, overlay = _card_pictures(unchecked, table.loc[rows[2], "path"])[:2]
    assert len(leaks) == 4  # original and saliency overlay of the secret image, twice
    assert not [uri for uri in [*leaks, overlay] if uri in html]
    assert original in html  # the card itself still shows its own radiograph


def test_report_refuses_a_symlink_loop_in_its_run(report_run, tmp_path: Path):
    _data, scan_dir = report_run
    copy = tmp_path / "scan"
    shutil.copytree(scan_dir, copy)
    (copy / "loop.npz").symlink_to(copy / "loop.npz")  # resolving it never ends
    table = pd.read_csv(copy / "scan.csv", dtype=str, keep_default_na=False)
    table.loc[table.index[table["flagged"] == "true"][0], "mask_file"] = "loop.npz"
    table.to_csv(copy / "scan.csv", index=False)
    html = build_report(copy, tmp_path / "r.html").read_text()
    assert "mask file &#39;loop.npz&#39; cannot be resolved" in html


def test_messages_name_folders_and_files_without_their_location() -> None:
    """A message keeps a file's path below a known run folder, and names any other absolute
    path (a baseline model, a dataset elsewhere) by its last part; fractions, "a/b" pairs and
    URLs stay as they are."""
    message = (
        "the baseline /root/models/covidnet.pt was trained on /data/covidx, not on "
        "/tmp/run/data-clean/train (1/2 of films; text/placebo; https://x.org/a/b; +/-)"
    )
    assert report._hide_roots(message, [Path("/tmp/run")]) == (
        "the baseline covidnet.pt was trained on covidx, not on "
        "run/data-clean/train (1/2 of films; text/placebo; https://x.org/a/b; +/-)"
    )
