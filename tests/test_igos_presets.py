"""iGOS++ presets and the knobs they turn: alpha placement, shared noise, warm-started line
search, coarse-to-fine stages; the scan's preset option and cost per image."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.test_saliency import PatchNet, make_images
from xraydebug.saliency import IGOSConfig, deletion_insertion, get_explainer, igospp
from xraydebug.saliency.config import DEFAULT_PRESET, PRESETS
from xraydebug.saliency.igos import IGOSPP_OBJECTIVE, _Optimizer, make_baseline

#: Every knob the documentation states per preset, written out from the docs (not from
#: ``PRESETS``): the table "What the presets change" in ``benchmarks/README.md`` (iterations,
#: IG points, points on the path, noise, where the line search starts, when it stops), its
#: notes (shared noise and coarse-to-fine "in no preset") and the ``IGOSConfig`` docstrings
#: (``uniform`` / one draw per term / ``ls_warm=None`` / ``coarse=()`` are the paper's).
DOCUMENTED_PRESETS = {
    "paper": {  # 20 | 15 | k/K | one draw per term | at 1000 every iteration | all iterations
        "iterations": 20,
        "ig_steps": 15,
        "alphas": "uniform",
        "shared_noise": False,
        "init_step": 1000.0,
        "ls_warm": None,
        "tol": 0.0,
        "coarse": (),
    },
    "balanced": {  # 12 | 4 | stratified | one draw per term | one rung above | tol 1e-3 over 3
        "iterations": 12,
        "ig_steps": 4,
        "alphas": "stratified",
        "shared_noise": False,
        "init_step": 1000.0,
        "ls_warm": 1,
        "tol": 1e-3,
        "tol_window": 3,
        "coarse": (),
    },
    "fast": {  # 10 | 3 | stratified | one draw per term | one rung above | `tol` (as above)
        "iterations": 10,
        "ig_steps": 3,
        "alphas": "stratified",
        "shared_noise": False,
        "init_step": 1000.0,
        "ls_warm": 1,
        "tol": 1e-3,
        "tol_window": 3,
        "coarse": (),
    },
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED_PRESETS))
def test_presets_resolve_as_documented(name: str) -> None:
    """Each preset sets the documented knobs and leaves every other setting at the default
    (the table lists what the presets change); ``mask_size`` is not part of a preset."""
    documented = DOCUMENTED_PRESETS[name]
    cfg = IGOSConfig.preset(name, mask_size=56)
    assert {knob: getattr(cfg, knob) for knob in documented} == documented
    assert cfg == dataclasses.replace(IGOSConfig(), mask_size=56, **documented)
    assert cfg.preset_name == name


def test_preset_names_default_and_overrides() -> None:
    """The documented presets are all there are (README: ``--preset balanced|fast|paper``),
    ``balanced`` is the scan default, and overrides go on top of a preset."""
    assert set(PRESETS) == {"paper", "balanced", "fast"} == set(DOCUMENTED_PRESETS)
    assert DEFAULT_PRESET == "balanced"
    short = IGOSConfig.preset("balanced", iterations=3)
    assert (short.iterations, short.ig_steps, short.tol) == (3, 4, 1e-3)
    with pytest.raises(ValueError, match=r"unknown iGOS\+\+ preset 'quick'.*balanced"):
        IGOSConfig.preset("quick")


def test_preset_name_is_a_label_not_a_setting() -> None:
    """``IGOSConfig.preset`` remembers its name for ``describe`` (run.json, the report); the
    name changes neither the settings dict (the scan's identity) nor equality."""
    fast = IGOSConfig.preset("fast", mask_size=56)
    assert fast.preset_name == "fast" and IGOSConfig().preset_name is None
    assert "preset_name" not in fast.to_dict()
    plain = IGOSConfig(**fast.to_dict())
    assert plain == fast and hash(plain) == hash(fast) and plain.preset_name is None
    assert get_explainer("igospp").describe(fast)["preset"] == "fast"
    assert get_explainer("igos").describe(plain)["preset"] is None
    with pytest.raises(ValueError, match="preset_name"):
        IGOSConfig(preset_name="quick")
    with pytest.raises(TypeError, match="unknown IGOS setting"):
        igospp(PatchNet(), make_images(1), 1, preset_name="fast")


def test_scan_and_cli_default_to_the_default_preset() -> None:
    from xraydebug.cli import app
    from xraydebug.stages.scan import ScanConfig

    # the scan and the CLI default to the same preset, and the scan resolves through it
    assert ScanConfig().saliency.preset_name == DEFAULT_PRESET
    assert ScanConfig().saliency == IGOSConfig.preset(DEFAULT_PRESET, mask_size=56)
    assert ScanConfig.from_options({}) == ScanConfig()  # the CLI's path gives the same config
    scan_help = CliRunner().invoke(app, ["scan", "--help"], terminal_width=200).output
    assert f"[default: {DEFAULT_PRESET}]" in scan_help
    with pytest.raises(ValueError, match="preset"):
        ScanConfig.from_options({"preset": "quick"})


def test_config_rejects_bad_knobs() -> None:
    with pytest.raises(ValueError, match="alphas"):
        IGOSConfig(alphas="random")
    with pytest.raises(ValueError, match="ls_warm"):
        IGOSConfig(ls_warm=-1)
    with pytest.raises(ValueError, match="coarse"):
        IGOSConfig(coarse=((14, 0),))
    # JSON lists (run.json) come back as the same hashable config
    cfg = IGOSConfig(coarse=[[7, 2], [14, 3]])
    assert cfg.coarse == ((7, 2), (14, 3)) and IGOSConfig(**cfg.to_dict()) == cfg


def _optimizer(cfg: IGOSConfig, n: int = 2) -> _Optimizer:
    model = PatchNet().eval()
    x = make_images(n)
    base = make_baseline(x, "blur", 31, 30.0)
    targets = torch.ones(n, dtype=torch.long)
    seeds = list(range(n))
    dev = torch.device("cpu")
    return _Optimizer(model, x, base, targets, IGOSPP_OBJECTIVE, cfg, seeds, dev)


def test_stratified_alphas_cover_each_stratum_and_vary() -> None:
    k = 4
    opt = _optimizer(IGOSConfig(mask_size=8, ig_steps=k, alphas="stratified"))
    draws = torch.stack([opt._alphas(0, it, 0) for it in range(50)])  # (50, K)
    lower = torch.arange(k) / k
    assert ((draws > lower) & (draws <= lower + 1 / k)).all()  # one point per stratum
    u = k * (1 / k - draws[:, 0])
    assert u.std() > 0.2 and 0.3 < u.mean() < 0.7  # ~U(0, 1), a fresh draw per iteration
    assert not torch.equal(opt._alphas(0, 0, 0), opt._alphas(0, 0, 1))  # per term
    assert not torch.equal(opt._alphas(0, 0, 0), opt._alphas(1, 0, 0))  # per image
    uniform = _optimizer(IGOSConfig(mask_size=8, ig_steps=k))
    torch.testing.assert_close(uniform._alphas(0, 3, 2), (torch.arange(k) + 1.0) / k)


def test_shared_noise_is_one_draw_per_image_and_iteration() -> None:
    def noise(opt: _Optimizer, term: int) -> torch.Tensor:
        out = torch.empty(3, *opt.images.shape[1:])
        opt._noise_block(0, 0, term, 0, 3, out)
        return out

    shared = _optimizer(IGOSConfig(mask_size=8, ig_steps=3, shared_noise=True))
    own = _optimizer(IGOSConfig(mask_size=8, ig_steps=3))
    assert torch.equal(noise(shared, 0), noise(shared, 3))
    assert torch.equal(shared._alphas(0, 0, 0), shared._alphas(0, 0, 3))
    assert not torch.equal(noise(own, 0), noise(own, 3))


TOLERANCE = 0.03  # deletion/insertion AUC, default preset vs paper preset (tiny fixture)
KNOBS = {"mask_size": 8, "ig_steps": 3, "noise": 0.0, "amp": False, "tol": 0, "iterations": 6}


def test_warm_start_walks_fewer_rungs_for_the_same_steps() -> None:
    """Warm starts begin one rung above the last accepted step: the same accepted steps where
    the step does not grow, for fewer line-search forwards."""
    model, x = PatchNet(), make_images(3)
    cold = igospp(model, x, 1, **KNOBS)
    warm = igospp(model, x, 1, ls_warm=1, **KNOBS)
    assert warm.stats["line_search_forward_images"] < cold.stats["line_search_forward_images"]
    assert warm.stats["backward_images"] == cold.stats["backward_images"]
    for c, w in zip(cold.stats["step_sizes"], warm.stats["step_sizes"], strict=True):
        assert w[0] == c[0]  # the first iteration starts at the top
        assert all(b <= a / IGOSConfig().step_decay * 1.0001 for a, b in itertools.pairwise(w))
    # never bigger than one rung above the previous accepted step; the masks still do the job
    d_cold, i_cold = deletion_insertion(model, x, 1, cold, steps=16)
    d_warm, i_warm = deletion_insertion(model, x, 1, warm, steps=16)
    assert float(d_warm.mean()) <= float(d_cold.mean()) + 0.05
    assert float(i_warm.mean()) >= float(i_cold.mean()) - 0.05


def test_coarse_stages_feed_the_fine_stage() -> None:
    model, x = PatchNet(), make_images(2)
    staged = igospp(model, x, 1, coarse=((4, 2),), **KNOBS)
    st = staged.stats
    assert [s["mask_size"] for s in st["stages"]] == [4, 8]
    assert staged.deletion_mask.shape == (2, 1, 8, 8)
    coarse, fine = (s["iterations"] for s in st["stages"])
    assert st["iterations"] == [a + b for a, b in zip(coarse, fine, strict=True)]
    assert len(st["step_sizes"][0]) == st["iterations"][0]
    # zero fine iterations: the coarse masks come back upsampled (bilinear, corners aligned)
    coarse_only = igospp(model, x, 1, coarse=((4, 2),), **{**KNOBS, "iterations": 0})
    four = igospp(model, x, 1, **{**KNOBS, "mask_size": 4, "iterations": 2})
    up = torch.nn.functional.interpolate(
        four.deletion_mask, size=(8, 8), mode="bilinear", align_corners=True
    )
    torch.testing.assert_close(coarse_only.deletion_mask, up)


def test_default_preset_keeps_the_paper_presets_quality(tiny_model, tiny_covidx: Path) -> None:
    """The scan's default preset against the paper's settings on a trained model's test
    images (same mask size): deletion no worse than paper + TOLERANCE, insertion no worse
    than paper - TOLERANCE, for a fraction of its model passes; masks left unoptimised fail
    the same tolerance, so it tells explanations apart on this fixture."""
    from xraydebug.data.layouts import load_index
    from xraydebug.data.torch_dataset import load_resized
    from xraydebug.models.checkpoint import load_model

    loaded = load_model(tiny_model.checkpoint, torch.device("cpu"))
    pre = loaded.preprocessing
    records = load_index(tiny_covidx).usable("test")
    gray = [
        torch.from_numpy(load_resized(tiny_covidx / r.path, pre.input_size, pre.crop_top))
        for r in records
    ]
    x = pre.normalize(torch.stack(gray).unsqueeze(1))
    model = loaded.model
    with torch.no_grad():
        targets = model(x).argmax(1)
    scores = {}
    configs = {
        "paper": IGOSConfig.preset("paper", mask_size=16, amp=False),
        DEFAULT_PRESET: IGOSConfig.preset(DEFAULT_PRESET, mask_size=16, amp=False),
        # the control: masks left at 1, no explanation at all
        "unoptimised": IGOSConfig.preset("paper", mask_size=16, amp=False, iterations=0),
    }
    for name, cfg in configs.items():
        res = igospp(model, x, targets, config=cfg)
        d, i = deletion_insertion(model, x, targets, res, steps=32)
        scores[name] = (float(d.mean()), float(i.mean()), res.stats["backward_images"])
    d_paper, i_paper, passes_paper = scores["paper"]
    d_fast, i_fast, passes_fast = scores[DEFAULT_PRESET]
    assert d_fast <= d_paper + TOLERANCE, scores
    assert i_fast >= i_paper - TOLERANCE, scores
    assert passes_fast * 5 < passes_paper, scores
    # the tolerance tells explanations apart on this fixture: no optimisation fails it
    d_none, i_none, _ = scores["unoptimised"]
    assert d_none > d_paper + TOLERANCE or i_none < i_paper - TOLERANCE, scores


def test_scan_records_preset_settings_and_cost(tiny_model, tiny_covidx: Path, tmp_path: Path):
    from xraydebug.audit.report import build_report
    from xraydebug.stages.scan import ScanConfig, scan

    options = dict(
        preset="fast",
        mask_size=8,
        iterations=2,
        split="test",
        limit=4,
        metric_steps=8,
        device="cpu",
        text=False,
    )
    config = ScanConfig.from_options(options)
    result = scan(tiny_covidx, tiny_model.checkpoint, tmp_path / "scan", config=config)
    build_report(tmp_path / "scan")
    run = json.loads((tmp_path / "scan" / "run.json").read_text())
    saliency = run["saliency"]
    assert saliency["preset"] == "fast" and saliency["method"] == "igospp"
    settings = IGOSConfig(**saliency["settings"])
    assert settings == IGOSConfig.preset("fast", mask_size=8, iterations=2)
    cost = run["cost_per_image"]
    assert cost["backward_images"] > 0 and cost["forward_images"] >= cost["backward_images"]
    # 2 iterations x 4 terms x K points at most
    assert cost["backward_images"] <= 2 * 4 * PRESETS["fast"]["ig_steps"]
    assert cost["seconds"] >= cost["explain_seconds"] > 0
    assert result.run["cost_per_image"] == cost
    # another preset is another scan: a rerun into the same folder refuses to mix them
    with pytest.raises(Exception, match="other settings or another model"):
        scan(
            tiny_covidx,
            tiny_model.checkpoint,
            tmp_path / "scan",
            config=ScanConfig.from_options({**options, "preset": "paper"}),
        )
    html = (tmp_path / "scan" / "report.html").read_text()
    assert "iGOS++ preset fast: mask 8, 2 iterations" in html


def test_scan_cli_prints_the_cost_per_image(tiny_model, tiny_covidx: Path, tmp_path: Path):
    from xraydebug.cli import app

    out = tmp_path / "scan"
    argv = ["scan", str(tiny_covidx), "--model", str(tiny_model.checkpoint), "--out", str(out)]
    argv += ["--preset", "balanced", "--mask-size", "8", "--iterations", "1", "--limit", "2"]
    argv += ["--no-text", "--device", "cpu"]
    res = CliRunner().invoke(app, argv, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "Cost per image (iGOS++ preset balanced: mask 8, 1 iterations" in res.output
    assert "backward model passes" in res.output
    bad = CliRunner().invoke(app, [*argv[:6], "--out", str(tmp_path / "b"), "--preset", "x"])
    assert bad.exit_code != 0 and "unknown iGOS++ preset 'x'" in bad.output


def test_cuda_chunk_rows_follow_the_measured_memory() -> None:
    """The arithmetic behind the CUDA chunk size (the probe itself needs a GPU)."""
    from xraydebug.saliency.masks import rows_that_fit

    gib = 1 << 30
    # 100 GiB free, 0.2 GiB per row at 480 px: half the free memory holds 250 rows -> 248 (K=4)
    assert rows_that_fit(100 * gib, gib // 5, multiple_of=4) == 248
    assert rows_that_fit(1000 * gib, gib // 5, multiple_of=3) == 1023  # capped at 1024
    assert rows_that_fit(gib, 2 * gib, multiple_of=4) == 1  # never zero
    assert rows_that_fit(8 * gib, gib, multiple_of=15) == 4  # fewer than K: no rounding
