"""The one-image-at-a-time iGOS++ of ``benchmarks/`` (the benchmark's baseline) against the engine.

The hand-built ``PatchNet`` of ``tests/test_saliency.py`` makes gradients large and predictable:
its class-1 logit depends only on the brightness inside a known 8x8 square of a 32x32 image.
With ``noise=0`` both implementations are deterministic, so the reference's gradient, stepped
with the engine's accepted step, must reproduce the engine's masks.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from benchmarks.igospp_bench import REFERENCE_SOURCES, ReferenceCache, verdict
from benchmarks.igospp_bench import main as bench_main
from benchmarks.igospp_reference import expected_counts, igospp_one_at_a_time
from tests.test_saliency import PATCH, SIZE, PatchNet
from xraydebug.saliency import igospp
from xraydebug.saliency.config import DEFAULT_PRESET, PRESETS


@pytest.fixture
def model() -> nn.Module:
    return PatchNet()


@pytest.fixture
def image() -> torch.Tensor:
    x = torch.full((1, 1, SIZE, SIZE), 0.2)
    x[..., PATCH[0], PATCH[1]] = 1.0
    x[..., 20:28, 4:12] = 1.0  # a distractor the model ignores
    return x


def test_runs_and_counts_match_the_formula(model: nn.Module, image: torch.Tensor) -> None:
    k, t = 3, 2
    m_del, m_ins, counts = igospp_one_at_a_time(
        model, image, 1, mask_size=8, iterations=t, ig_steps=k, noise=0.2, seed=3
    )
    for m in (m_del, m_ins):
        assert m.shape == (1, 1, 8, 8)
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    assert float((m_del * m_ins).min()) < 1.0  # something was found
    evals = counts["line_search_evaluations"]
    assert len(evals) == t and len(counts["step_sizes"]) == t
    assert all(1 <= e <= counts["max_line_search_evaluations"] for e in evals)
    assert counts["max_line_search_evaluations"] == 13  # 1000 * 0.2**n, n = 0..12
    fwd, bwd = expected_counts(k, evals)
    assert (counts["forward_images"], counts["backward_images"]) == (fwd, bwd)
    assert bwd == 4 * k * t
    assert counts["ig_forward_images"] == 4 * k * t
    assert counts["line_search_forward_images"] == 4 * k * (t + sum(evals))
    # model state is restored
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_first_gradient_agrees_with_the_engine(model: nn.Module, image: torch.Tensor) -> None:
    # amp=False: float32 like the reference (bf16 autocast on CPU would change the last digits)
    kw = {"mask_size": 8, "iterations": 1, "ig_steps": 3, "noise": 0.0, "init_step": 10.0}
    engine = igospp(model, image, [1], amp=False, **kw)
    step = engine.stats["step_sizes"][0][0]
    assert step > 0  # the engine accepted a step, so its masks are clamp(1 - step * g)
    _, _, counts = igospp_one_at_a_time(model, image, 1, keep_gradients=True, **kw)
    ((g_del, g_ins),) = counts["gradients"]
    assert float(g_del.abs().max()) > 1e-3 and float(g_ins.abs().max()) > 1e-3
    for g, m in ((g_del, engine.deletion_mask), (g_ins, engine.insertion_mask)):
        inside = (m > 0) & (m < 1)
        assert int(inside.sum()) >= 4  # enough unclamped cells to compare
        torch.testing.assert_close((1 - step * g).clamp(0, 1), m, atol=1e-5, rtol=0)


def test_same_fixed_steps_give_the_same_masks(model: nn.Module, image: torch.Tensor) -> None:
    """With one allowed step size accepted by both, three iterations (the later ones with
    non-constant masks, so the bilateral-TV and L1 gradients count) give the same masks."""
    kw = {
        "mask_size": 8,
        "iterations": 3,
        "ig_steps": 3,
        "noise": 0.0,
        "init_step": 3.0,
        "min_step": 3.0,
        "armijo_c": 0.0,
    }
    engine = igospp(model, image, [1], amp=False, **kw)
    m_del, m_ins, counts = igospp_one_at_a_time(model, image, 1, **kw)
    assert engine.stats["step_sizes"] == [[3.0, 3.0, 3.0]]
    assert counts["step_sizes"] == [3.0, 3.0, 3.0]
    assert int(((m_del > 0) & (m_del < 1)).sum()) >= 4
    torch.testing.assert_close(m_del, engine.deletion_mask, atol=1e-5, rtol=0)
    torch.testing.assert_close(m_ins, engine.insertion_mask, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ls_group", [1, 4])
def test_real_step_ladder_gives_the_same_steps_and_masks(
    model: nn.Module, image: torch.Tensor, ls_group: int
) -> None:
    """The full ladder (1000 x 0.2^n, Armijo with c = 1e-4): the line search must backtrack
    several rungs on some iterations, and the engine, trying ``ls_group`` rungs per batch, must
    accept the same step as the reference's one-at-a-time search every iteration."""
    kw = {"mask_size": 8, "iterations": 4, "ig_steps": 3, "noise": 0.0, "init_step": 1000.0}
    engine = igospp(model, image, [1], amp=False, ls_group=ls_group, **kw)
    m_del, m_ins, counts = igospp_one_at_a_time(model, image, 1, **kw)
    assert max(counts["line_search_evaluations"]) >= 5  # the ladder was really walked
    assert len(set(counts["step_sizes"])) >= 2
    torch.testing.assert_close(
        torch.tensor(engine.stats["step_sizes"][0]),
        torch.tensor(counts["step_sizes"], dtype=torch.float32),
        rtol=1e-5,
        atol=0,
    )
    torch.testing.assert_close(m_del, engine.deletion_mask, atol=1e-5, rtol=0)
    torch.testing.assert_close(m_ins, engine.insertion_mask, atol=1e-5, rtol=0)


def test_rejects_more_than_one_image(model: nn.Module, image: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"expected one image \(1, C, H, W\), got \(2, 1"):
        igospp_one_at_a_time(model, image.expand(2, -1, -1, -1), 1)
    with pytest.raises(TypeError, match="expected an int class index"):
        igospp_one_at_a_time(model, image, torch.tensor(1))


def test_bench_without_a_model_says_how_to_make_one(capsys: pytest.CaptureFixture) -> None:
    assert bench_main([]) == 2
    err = capsys.readouterr().err
    assert "xraydebug synth /tmp/bench-data" in err
    assert "xraydebug train /tmp/bench-data --out /tmp/bench.pt" in err


def _method(seconds: float, deletion: float, insertion: float) -> dict[str, float]:
    return {
        "name": "balanced",
        "seconds_per_image": seconds,
        "deletion_auc_mean": deletion,
        "insertion_auc_mean": insertion,
        "deletion_auc_sd": 0.01,
        "insertion_auc_sd": 0.02,
    }


@pytest.mark.parametrize(
    ("engine", "speedup", "deletion", "insertion", "checks"),
    [  # reference: 30 s/image, deletion 0.20, insertion 0.70; differences worked out by hand
        ((2.5, 0.205, 0.695), 12.0, +0.005, -0.005, (True, True, True)),
        ((3.0, 0.2095, 0.6905), 10.0, +0.0095, -0.0095, (True, True, True)),  # just inside
        ((4.0, 0.20, 0.70), 7.5, 0.0, 0.0, (False, True, True)),
        ((1.5, 0.225, 0.75), 20.0, +0.025, +0.05, (True, False, True)),
        ((1.0, 0.15, 0.67), 30.0, -0.05, -0.03, (True, True, False)),
    ],
)
def test_verdict_on_hand_computed_numbers(engine, speedup, deletion, insertion, checks) -> None:
    summary = verdict(_method(30.0, 0.20, 0.70), _method(*engine))
    assert summary["speedup"] == pytest.approx(speedup)
    assert summary["deletion_difference"] == pytest.approx(deletion, abs=1e-12)
    assert summary["insertion_difference"] == pytest.approx(insertion, abs=1e-12)
    assert tuple(summary["checks"][k] for k in ("speedup", "deletion", "insertion")) == checks
    assert summary["pass"] is all(checks)


def test_reference_cache_is_keyed_by_device_and_reference_code(tmp_path, monkeypatch) -> None:
    image, settings = torch.zeros(1, 8, 8), {"mask_size": 8, "seed": 0}
    cpu = ReferenceCache(tmp_path, "model", "cpu (cpu)")
    cpu.put(image, settings, {"counts": {"seconds": 1.0}})
    assert cpu.get(image, settings) == {"counts": {"seconds": 1.0}}
    assert ReferenceCache(tmp_path, "model", "cuda:0 (NVIDIA H100)").get(image, settings) is None
    for k, source in enumerate(REFERENCE_SOURCES):  # the loop and the modules it imports
        edited = tmp_path / f"edited-{k}.py"
        edited.write_text(source.read_text() + "# edited\n")
        sources = (*REFERENCE_SOURCES[:k], edited, *REFERENCE_SOURCES[k + 1 :])
        with monkeypatch.context() as m:
            m.setattr("benchmarks.igospp_bench.REFERENCE_SOURCES", sources)
            assert ReferenceCache(tmp_path, "model", "cpu (cpu)").get(image, settings) is None
    assert ReferenceCache(tmp_path, "model", "cpu (cpu)").get(image, settings) is not None


def test_bench_end_to_end_on_an_untrained_model(tmp_path, capsys: pytest.CaptureFixture) -> None:
    """No preset option: the scan's default preset against the reference at the given paper
    settings and against the engine's 'paper' preset, all rerun with other seeds; the JSON
    keeps the summary keys; a rerun reading the reference from the cache says so."""
    out = tmp_path / "bench.json"
    argv = ["--random-model", "tiny", "--n-images", "2", "--mask-size", "8"]
    argv += ["--iterations", "1", "--ig-steps", "2", "--reference-seeds", "2"]
    argv += ["--engine-seeds", "2", "--json", str(out), "--cache", str(tmp_path / "cache")]
    assert bench_main(argv) == 0
    text = capsys.readouterr().out
    assert "reference (1 image)" in text and "speed-up" in text
    assert f"preset '{DEFAULT_PRESET}' against" in text
    assert "the reference at paper settings" in text and "the engine, preset paper" in text
    assert "read from the cache" not in text
    capability = torch.backends.cpu.get_cpu_capability()
    assert text.startswith("CPU: ") and f"torch capability {capability}" in text.splitlines()[0]
    data = json.loads(out.read_text())
    assert data["environment"]["machine"]["cpu_capability"] == capability
    assert data["environment"]["torch_threads"] == 2
    assert data["settings"]["iterations"] == 1 and data["settings"]["ig_steps"] == 2
    ref, paper, eng = data["methods"]
    assert ref["backward_images_per_image"] == 4 * 2 * 1 and ref["seeds"] == 2
    assert paper["name"] == "paper" and paper["runs"][0]["config"]["ig_steps"] == 2
    assert eng["name"] == DEFAULT_PRESET and eng["seeds"] == 2
    assert eng["runs"][0]["config"]["ig_steps"] == PRESETS[DEFAULT_PRESET]["ig_steps"]
    assert eng["runs"][1]["config"]["seed"] != eng["runs"][0]["config"]["seed"]
    assert len(ref["runs"][0]["deletion_auc"]) == 2 and len(eng["runs"][0]["insertion_auc"]) == 2
    summary = data["summary"]
    assert {"speedup", "deletion_difference", "insertion_difference"} <= set(summary)
    assert set(summary["checks"]) == {"speedup", "deletion", "insertion"}
    assert set(summary["against_paper_preset"]) == {
        "speedup",
        "deletion_difference",
        "insertion_difference",
    }
    assert (summary["reference_cached_images"], summary["reference_images"]) == (0, 4)

    # the curve: every preset; the reference now comes from the cache (same masks, same AUC)
    argv += ["--curve", "--plot", str(tmp_path / "curve.png")]
    assert bench_main(argv) == 0
    text = capsys.readouterr().out
    assert "2 image(s) from the cache" in text and "reference seed set" in text
    assert "NOTE: the reference's seconds of 4 of 4 image runs were read from the cache" in text
    curve = json.loads(out.read_text())
    assert [m["name"] for m in curve["methods"]] == ["reference (1 image)", *PRESETS]
    assert curve["methods"][0]["deletion_auc_mean"] == ref["deletion_auc_mean"]
    assert curve["summary"]["reference_cached_images"] == 4
    assert (tmp_path / "curve.png").stat().st_size > 1000
