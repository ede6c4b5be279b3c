"""The audit report as a clinician sees it: headless Chromium, offline, screenshot.

Debian's ``chromium`` is installed by ``scripts/ensure-chromium.sh`` when missing (root and the
Debian package registry needed); where that is impossible the test is skipped with the reason.
The screenshot is kept at ``reports/browser/report.png`` for a person to look at.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cdp import Browser
from tests.conftest import make_report_run
from xraydebug.audit.report import build_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    script = ROOT / "scripts" / "ensure-chromium.sh"
    try:
        done = subprocess.run(
            ["bash", str(script)], capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.skip("installing Chromium took over 10 minutes")
    if done.returncode != 0:
        pytest.skip(f"Chromium cannot be installed here: {done.stderr.strip()[-300:]}")
    return done.stdout.strip().splitlines()[-1]


EXPORT_JS = """
(async () => {
  let captured = null;
  const original = URL.createObjectURL;
  URL.createObjectURL = (blob) => { captured = blob; return original.call(URL, blob); };
  document.querySelector('article.card input[value="shortcut"]').click();
  const note = document.querySelector('article.card input[type="text"]');
  note.value = 'marker "L", top left';
  note.dispatchEvent(new Event('input', { bubbles: true }));
  const counter = document.getElementById('review-count').textContent;
  document.getElementById('export-csv').click();
  return { counter: counter, csv: await captured.text() };
})()
"""


def test_report_in_headless_chromium(chromium: str, tmp_path: Path):
    _data, scan_dir = make_report_run(tmp_path)
    report = build_report(scan_dir)
    browser = Browser(chromium, tmp_path / "profile")
    try:
        session = browser.open(report.resolve().as_uri(), 1200, 2400)
        text = browser.evaluate(session, "document.body.innerText")
        n_cards = browser.evaluate(session, "document.querySelectorAll('article.card').length")
        assert n_cards >= 2
        for needle in (
            "Summary",
            "May contain patient identifiers",
            "Flagged cases",
            "By source",
            f"0 of {n_cards} reviewed",  # the inline script ran
        ):
            assert needle in text
        broken = browser.evaluate(
            session,
            "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length",
        )
        assert broken == 0, "an inlined image did not decode"

        # a reviewer marks the first case and exports the decisions
        exported = browser.evaluate(session, EXPORT_JS)
        assert exported["counter"] == f"1 of {n_cards} reviewed"
        lines = exported["csv"].strip().splitlines()
        assert lines[0] == "rank,path,label,model_answer,mass_in_text,decision,note,target"
        assert len(lines) == n_cards + 1
        assert lines[1].startswith("1,test/") and ',shortcut,"marker ""L"", top left"' in lines[1]

        # no request left the page: only the file itself and inlined data
        urls = browser.requested_urls(session)
        assert any(u.startswith("file:") for u in urls)
        external = [u for u in urls if not u.startswith(("file:", "data:", "blob:"))]
        assert not external, f"the report made network requests: {external[:5]}"

        # a screenshot for people to look at
        shot_dir = ROOT / "reports" / "browser"
        shot_dir.mkdir(parents=True, exist_ok=True)
        shot = browser.screenshot(session, shot_dir / "report.png")
    finally:
        browser.close()
    with Image.open(shot) as image:
        assert image.size == (1200, 2400)
        pixels = image.convert("L").resize((60, 120))
        assert len(np.unique(np.asarray(pixels))) > 10, "the screenshot is blank"


def test_clean_and_retrain_reports_in_headless_chromium(
    chromium: str, tiny_model, tiny_covidx: Path, tmp_path: Path
):
    from rich.console import Console

    from xraydebug.audit.retrain import RetrainConfig, retrain
    from xraydebug.stages.clean import CleanConfig, clean_dataset

    data, scan_dir = make_report_run(tmp_path / "scan-run")
    config = CleanConfig.from_options({"scan": str(scan_dir), "device": "cpu"})
    cleaned = clean_dataset(data, tmp_path / "clean", config=config)
    copy = tmp_path / "covidx-clean"
    shutil.copytree(tiny_covidx, copy)
    retrained = retrain(
        copy,
        tiny_model.checkpoint,
        test_data=tiny_covidx,
        out=tmp_path / "after.pt",
        run_dir=tmp_path / "retrain",
        config=RetrainConfig(n_boot=50, device="cpu"),
        console=Console(quiet=True),
    )
    browser = Browser(chromium, tmp_path / "profile")
    try:
        for report, needle in (
            (build_report(cleaned.out), "had their detected text removed"),
            (retrained.report_path, "Does the model react to burned-in text?"),
        ):
            session = browser.open(report.resolve().as_uri(), 1200, 1600)
            assert needle in browser.evaluate(session, "document.body.innerText")
            broken = browser.evaluate(
                session,
                "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length",
            )
            assert broken == 0, f"{report}: an inlined image did not decode"
            urls = browser.requested_urls(session)
            external = [u for u in urls if not u.startswith(("file:", "data:", "blob:"))]
            assert not external, f"{report} made network requests: {external[:5]}"
    finally:
        browser.close()
