"""Tests of xraydebug.saliency: iGOS++ / I-GOS / Grad-CAM and the deletion/insertion metrics.

The workhorse is ``PatchNet``, a hand-built CNN whose class-1 logit depends only on the
brightness inside a known 8x8 square of a 32x32 image; every test image also carries an equally
bright "distractor" square elsewhere that the model ignores. A faithful saliency map must put its
mass on the patch and none on the distractor.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from xraydebug.saliency import (
    Explainer,
    GradCAMConfig,
    IGOSConfig,
    SaliencyResult,
    bilateral_tv,
    blur_baseline,
    deletion_insertion,
    describe_saliency,
    explainer_names,
    get_explainer,
    gradcam,
    igos,
    igospp,
    register_explainer,
    total_variation,
)

SIZE = 32
PATCH = (slice(6, 14), slice(18, 26))
DISTRACTOR = (slice(20, 28), slice(4, 12))
FAST = {"mask_size": 16, "iterations": 6, "ig_steps": 5}


def region(where: tuple[slice, slice]) -> torch.Tensor:
    out = torch.zeros(SIZE, SIZE)
    out[where] = 1.0
    return out


class PatchNet(nn.Module):
    """logit_1 = 20 * mean_patch(relu(avg3x3(x) - 0.5)) - 4, logit_0 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(SIZE * SIZE, 2)
        inside = region(PATCH).flatten()
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9)
            self.conv.bias.fill_(-0.5)
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1] = 20 * inside / inside.sum()
            self.head.bias[1] = -4.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.conv(x)).flatten(1))


def make_images(n: int, patch: bool = True, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, SIZE, SIZE, generator=g)
    x[..., DISTRACTOR[0], DISTRACTOR[1]] = 1.0
    if patch:
        x[..., PATCH[0], PATCH[1]] = 0.9 + 0.1 * torch.rand(n, 1, 8, 8, generator=g)
    return x


def mass_fraction(saliency: torch.Tensor, where: tuple[slice, slice]) -> torch.Tensor:
    """Share of each image's saliency ``(B, 1, H, W)`` that falls inside ``where`` -> ``(B,)``."""
    sal = saliency[:, 0]
    return (sal * region(where)).sum(dim=(1, 2)) / sal.sum(dim=(1, 2)).clamp_min(1e-12)


@pytest.fixture(scope="module")
def model() -> PatchNet:
    return PatchNet()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return make_images(4)


@pytest.fixture(scope="module")
def explained(model: PatchNet, images: torch.Tensor) -> SaliencyResult:
    return igospp(model, images, torch.ones(4, dtype=torch.long), mask_size=16, iterations=8)


def test_patch_model_sanity(model: PatchNet, images: torch.Tensor) -> None:
    with torch.no_grad():
        p_patch = model(images).softmax(1)[:, 1]
        p_plain = model(make_images(2, patch=False)).softmax(1)[:, 1]
        p_blur = model(blur_baseline(images)).softmax(1)[:, 1]
    assert (p_patch > 0.9).all() and (p_plain < 0.05).all() and (p_blur < 0.05).all()


# (1) iGOS++ finds the patch ----------------------------------------------------------------------
def test_igospp_mask_concentrates_on_patch(explained: SaliencyResult) -> None:
    area = region(PATCH).mean().item()  # 1/16
    sal = explained.saliency((SIZE, SIZE))
    assert sal.shape == (4, 1, SIZE, SIZE)
    assert sal.min() >= 0 and sal.max() <= 1
    assert (mass_fraction(sal, PATCH) > 3 * area).all()
    assert (mass_fraction(sal, DISTRACTOR) < 0.5 * area).all()
    ins = explained.insertion_saliency((SIZE, SIZE))
    assert (mass_fraction(ins, PATCH) > 3 * area).all()
    # Control: a random map puts about the area's share on the patch, far below the threshold.
    rand = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    assert (mass_fraction(rand, PATCH) < 2 * area).all()
    # Mean saliency: high on the patch, nil on the equally bright distractor.
    assert ((sal[:, 0] * region(PATCH)).sum(dim=(1, 2)) / 64 > 0.7).all()
    assert ((sal[:, 0] * region(DISTRACTOR)).sum(dim=(1, 2)) / 64 < 0.05).all()


def test_result_shapes_and_mask_product(explained: SaliencyResult, images: torch.Tensor) -> None:
    assert explained.method == "igospp"
    assert explained.mask.shape == (4, 1, 16, 16)
    assert explained.deletion_mask is not None and explained.insertion_mask is not None
    torch.testing.assert_close(explained.mask, explained.deletion_mask * explained.insertion_mask)
    for m in (explained.mask, explained.deletion_mask, explained.insertion_mask):
        assert m.min() >= 0 and m.max() <= 1
    assert explained.targets.tolist() == [1, 1, 1, 1]
    s = explained.stats
    assert s["forward_images"] == s["ig_forward_images"] + s["line_search_forward_images"]
    assert s["seconds"] > 0 and len(s["step_sizes"]) == 4
    # Armijo steps only go downhill: start objective is 2 * (f(image) - f(blur)) at M = 1.
    with torch.no_grad():
        p = PatchNet()(images).softmax(1)[:, 1] - PatchNet()(blur_baseline(images)).softmax(1)[:, 1]
    assert (torch.tensor(s["final_objective"]) < 2 * p).all()


def test_ig_gradient_matches_reference_formulation(model: PatchNet) -> None:
    """Without noise, the batched gradient equals the straightforward per-term autograd of
    ``0.5 * sum_t sign_t * mean_k f(compose_t(alpha_k * M_t)) + regulariser`` (reference maths:
    path masks ``alpha_k * M``, insertion terms with image and baseline swapped)."""
    from xraydebug.saliency.igos import IGOSPP_OBJECTIVE, _Optimizer

    x = make_images(2)
    base = blur_baseline(x)
    targets = torch.tensor([1, 0])
    cfg = IGOSConfig(mask_size=8, ig_steps=4, noise=0.0, batch_size=5, amp=False)
    masks = torch.rand(2, 2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    opt = _Optimizer(model, x, base, targets, IGOSPP_OBJECTIVE, cfg, [0, 1], x.device)
    got = opt.gradient(masks, torch.arange(2), it=0)

    leaf = masks.clone().requires_grad_(True)
    up = torch.nn.functional.interpolate(
        leaf.flatten(0, 1), size=(SIZE, SIZE), mode="bilinear", align_corners=True
    ).view(2, 2, 1, SIZE, SIZE)
    m_del, m_ins = up[:, 0], up[:, 1]
    total = torch.zeros(())
    for sign, m, insertion in [
        (1, m_del * m_ins, False),
        (-1, m_del * m_ins, True),
        (1, m_del, False),
        (-1, m_ins, True),
    ]:
        for k in range(1, 5):
            a = k / 4 * m
            inp = base * a + x * (1 - a) if insertion else x * a + base * (1 - a)
            p = model(inp).softmax(1).gather(1, targets.view(-1, 1)).sum()
            total = total + 0.5 * sign * p / 4
    m = leaf[:, 0] * leaf[:, 1]
    reg = (1 - m).abs().flatten(1).mean(1) + 20 * bilateral_tv(m, x)
    (want,) = torch.autograd.grad(total + reg.sum(), leaf)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_igos_single_mask_finds_patch(model: PatchNet, images: torch.Tensor) -> None:
    res = igos(model, images, 1, **FAST)
    assert res.method == "igos" and res.insertion_mask is None
    assert torch.equal(res.mask, res.deletion_mask)
    assert (mass_fraction(res.saliency((SIZE, SIZE)), PATCH) > 3 * region(PATCH).mean()).all()
    # No insertion mask: insertion_saliency falls back to the combined saliency.
    torch.testing.assert_close(res.insertion_saliency((8, 8)), res.saliency((8, 8)))


# (2) bilateral TV --------------------------------------------------------------------------------
def test_bilateral_tv_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 1, 5, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    image = torch.rand(2, 3, 10, 12, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda m: bilateral_tv(m, image), (mask,))
    assert torch.autograd.gradcheck(lambda m: bilateral_tv(m, image, 0.05, 1.5), (mask,))


def test_bilateral_tv_values() -> None:
    image = torch.rand(3, 3, 16, 16)
    assert torch.equal(bilateral_tv(torch.full((3, 1, 8, 8), 0.3), image), torch.zeros(3))
    mask = torch.rand(3, 1, 8, 8)
    # A flat image gives weights 1: half the plain total variation.
    flat = torch.full((3, 1, 16, 16), 0.5)
    torch.testing.assert_close(bilateral_tv(mask, flat), 0.5 * total_variation(mask))
    # Edge-aware: a mask edge on an image edge costs less than the same edge on a flat image.
    edge_image = torch.zeros(1, 1, 16, 16)
    edge_image[..., 8:, :] = 1.0
    edge_mask = torch.ones(1, 1, 8, 8)
    edge_mask[..., 4:, :] = 0.0
    assert bilateral_tv(edge_mask, edge_image) < 0.01 * bilateral_tv(edge_mask, flat[:1])


def test_blur_baseline() -> None:
    const = torch.full((2, 3, 20, 24), 0.7)
    torch.testing.assert_close(blur_baseline(const), const)
    x = make_images(2)
    blurred = blur_baseline(x)
    assert blurred.shape == x.shape
    assert blurred.std() < 0.3 * x.std()
    torch.testing.assert_close(blurred.mean(), x.mean(), atol=0.02, rtol=0)
    assert blur_baseline(torch.rand(1, 1, 3, 3)).shape == (1, 1, 3, 3)  # kernel clipped
    with pytest.raises(ValueError, match="odd kernel"):
        blur_baseline(x, kernel=50)


# (3) batching does not change the answer ---------------------------------------------------------
def test_batch_equals_single_runs(model: PatchNet) -> None:
    x = make_images(3)
    x[2] = make_images(1, patch=False, seed=5)[0]
    targets = torch.tensor([1, 1, 0])
    batch = igospp(model, x, targets, **FAST)
    for i in range(3):
        single = igospp(model, x[i : i + 1], targets[i : i + 1], **FAST)
        torch.testing.assert_close(
            single.deletion_mask, batch.deletion_mask[i : i + 1], atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            single.insertion_mask, batch.insertion_mask[i : i + 1], atol=1e-5, rtol=0
        )
    # Chunking (batch_size not a multiple of ig_steps) and order do not matter either.
    chunked = igospp(model, x, targets, batch_size=7, **FAST)
    torch.testing.assert_close(chunked.mask, batch.mask, atol=1e-5, rtol=0)
    flipped = igospp(model, x.flip(0), targets.flip(0), **FAST)
    torch.testing.assert_close(flipped.mask.flip(0), batch.mask, atol=1e-5, rtol=0)
    # A different seed draws different noise; explicit noise_seeds are honoured per image.
    other = igospp(model, x, targets, seed=1, **FAST)
    assert not torch.equal(other.mask, batch.mask)
    a = igospp(model, x[:2], targets[:2], noise_seeds=[10, 11], **FAST)
    b = igospp(model, x[1:2], targets[1:2], noise_seeds=[11], **FAST)
    torch.testing.assert_close(b.mask, a.mask[1:2], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="one per image"):
        igospp(model, x, targets, noise_seeds=[1], **FAST)


# (4) deletion / insertion ------------------------------------------------------------------------
def test_deletion_below_insertion(model: PatchNet, images: torch.Tensor, explained) -> None:
    d, i = deletion_insertion(model, images, explained.targets, explained)
    assert d.shape == i.shape == (4,)
    assert ((d >= 0) & (d <= 1) & (i >= 0) & (i <= 1)).all()
    assert (d < 0.15).all() and (i > 0.7).all() and (d < i).all()
    # Reversed saliency (least salient first) swaps the picture.
    d_rev, i_rev = deletion_insertion(model, images, 1, 1.0 - explained.saliency((SIZE, SIZE)))
    assert (d_rev > i_rev).all()
    # steps=1: the curves are just the two end points (image and blur), AUC = their mean.
    d1, i1 = deletion_insertion(model, images, 1, region(PATCH).expand(4, SIZE, SIZE), steps=1)
    with torch.no_grad():
        p_img = model(images).softmax(1)[:, 1]
        p_blur = model(blur_baseline(images)).softmax(1)[:, 1]
    torch.testing.assert_close(d1, (p_img + p_blur) / 2)
    torch.testing.assert_close(i1, (p_img + p_blur) / 2)
    with pytest.raises(ValueError, match="saliency"):
        deletion_insertion(model, images, 1, torch.rand(3, 1, 8, 8))


# (5) model state is restored ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["igospp", "igos", "gradcam", "metric"])
def test_model_state_restored(name: str) -> None:
    model = PatchNet()
    model.train()
    model.relu.eval()  # a deliberately mixed state must come back exactly
    model.head.bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    x = make_images(2)
    if name == "metric":
        deletion_insertion(model, x, 1, torch.rand(2, 1, 8, 8), steps=5)
    else:
        config = GradCAMConfig() if name == "gradcam" else IGOSConfig(**FAST)
        get_explainer(name).explain(model, x, 1, config)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    assert not model._forward_hooks and not model.conv._forward_hooks


def test_state_restored_on_error() -> None:
    model = PatchNet().train()
    with pytest.raises(ValueError, match="class indices"):
        igospp(model, make_images(1), 7, **FAST)
    assert model.training and all(p.requires_grad for p in model.parameters())


# (6) registry ------------------------------------------------------------------------------------
def test_registry() -> None:
    assert explainer_names() == ["gradcam", "igos", "igospp"]
    found = {n: (get_explainer(n).title, get_explainer(n).config_class) for n in explainer_names()}
    assert found == {
        "igospp": ("iGOS++", IGOSConfig),
        "igos": ("I-GOS", IGOSConfig),
        "gradcam": ("Grad-CAM", GradCAMConfig),
    }
    assert all(isinstance(get_explainer(n), Explainer) for n in explainer_names())
    with pytest.raises(
        ValueError, match="unknown explainer 'lime'; valid names: gradcam, igos, igospp"
    ):
        get_explainer("lime")


# (7) settings reach the code ---------------------------------------------------------------------
@pytest.mark.parametrize(("iterations", "ig_steps"), [(2, 3), (3, 2)])
def test_config_reaches_the_code(model: PatchNet, iterations: int, ig_steps: int) -> None:
    # The reference main.py swapped iterations and ig_iter; both orders must come out right.
    x = make_images(2)
    res = igospp(model, x, 1, mask_size=8, iterations=iterations, ig_steps=ig_steps)
    assert res.stats["iterations"] == [iterations, iterations]
    assert res.stats["backward_images"] == 2 * iterations * 4 * ig_steps
    assert res.stats["config"]["ig_steps"] == ig_steps
    assert res.mask.shape == (2, 1, 8, 8)
    single = igos(model, x, 1, mask_size=8, iterations=iterations, ig_steps=ig_steps)
    assert single.stats["backward_images"] == 2 * single.stats["iterations"][0] * ig_steps


def test_config_object_and_overrides(model: PatchNet) -> None:
    x = make_images(1)
    cfg = IGOSConfig(mask_size=8, iterations=1, ig_steps=2)
    assert igospp(model, x, 1, config=cfg).stats["iterations"] == [1]
    res = igospp(model, x, 1, config=cfg, iterations=3, ls_group=2)
    assert res.stats["iterations"] == [3] and res.stats["config"]["ls_group"] == 2
    assert IGOSConfig().step_ladder()[:3] == [1000.0, 200.0, 40.0]
    assert min(IGOSConfig().step_ladder()) >= IGOSConfig().min_step
    with pytest.raises(TypeError, match="unknown IGOS setting"):
        igospp(model, x, 1, iterashuns=3)
    with pytest.raises(ValueError, match="ig_steps"):
        IGOSConfig(ig_steps=0)
    with pytest.raises(ValueError, match=r"targets: expected shape \(1,\)"):
        igospp(model, x, [1, 1], **FAST)


def test_device_argument(model: PatchNet) -> None:
    x = make_images(1)
    res = igospp(model, x, 1, device="cpu", **FAST)
    assert res.stats["device"] == "cpu" and res.mask.device == x.device
    with pytest.raises(ValueError, match="model's parameters are on 'cpu'"):
        igospp(model, x, 1, device="meta", **FAST)


def test_zero_iterations_gives_identity_masks(model: PatchNet) -> None:
    res = igospp(model, make_images(2), 1, mask_size=8, iterations=0)
    assert torch.equal(res.mask, torch.ones(2, 1, 8, 8))
    assert res.stats["backward_images"] == 0 and res.stats["forward_images"] == 2 * 4


# (8) Grad-CAM ------------------------------------------------------------------------------------
def test_gradcam(model: PatchNet, images: torch.Tensor) -> None:
    res = gradcam(model, images, 1)
    assert res.method == "gradcam" and res.mask.shape == (4, 1, SIZE, SIZE)
    assert res.mask.min() >= 0 and res.mask.max() <= 1
    assert res.deletion_mask is None and res.insertion_mask is None
    assert not model.conv._forward_hooks and not model.conv._backward_hooks
    sal = res.saliency()
    assert torch.allclose(sal.flatten(1).max(dim=1).values, torch.ones(4))
    by_name = gradcam(model, images, 1, layer="conv")
    torch.testing.assert_close(by_name.mask, res.mask)
    with pytest.raises(ValueError, match="class indices"):
        gradcam(model, images, 2)
    with pytest.raises(ValueError, match=r"no nn\.Conv2d"):
        gradcam(nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 2)), images, 1)
    assert not model.conv._forward_hooks


# (9) per-image convergence stopping --------------------------------------------------------------
def test_convergence_stopping(model: PatchNet) -> None:
    x = make_images(2)
    settings = {"mask_size": 8, "iterations": 12, "ig_steps": 3, "noise": 0.0}
    full = igospp(model, x, 1, tol=0, **settings)
    assert not any(full.stats["converged"])
    # A tolerance larger than any possible decrease freezes every image after tol_window steps.
    loose = igospp(model, x, 1, tol=10.0, tol_window=2, **settings)
    assert loose.stats["iterations"] == [2, 2]
    assert loose.stats["converged"] == [True, True] and all(loose.stats["stopped_early"])
    assert loose.stats["backward_images"] == 2 * 2 * 4 * 3
    hist = torch.tensor(loose.stats["objective_history"])
    assert hist.shape == (2, 3)  # initial objective + one per iteration run
    # Frozen images keep their masks: the first 2 iterations match the untruncated run.
    two = igospp(model, x, 1, tol=0, **{**settings, "iterations": 2})
    torch.testing.assert_close(loose.mask, two.mask)


def test_convergence_default_stops_converged_problem(model: PatchNet) -> None:
    # PatchNet saturates quickly: with the default tol the objective stalls well before 25
    # iterations, and tol=0 runs every iteration (no line-search failure is allowed to hide it).
    x = make_images(1)
    settings = {"mask_size": 8, "iterations": 25, "ig_steps": 3, "noise": 0.0, "ls_patience": 25}
    early = igospp(model, x, 1, **settings)
    assert early.stats["converged"] == [True]
    assert early.stats["iterations"][0] < 25
    hist = torch.tensor(early.stats["objective_history"][0])
    n, w = early.stats["iterations"][0], IGOSConfig().tol_window
    assert hist[n - w] - hist[n] <= IGOSConfig().tol * max(1.0, float(hist[n - w].abs()))
    full = igospp(model, x, 1, **{**settings, "tol": 0})
    assert full.stats["iterations"] == [25] and full.stats["converged"] == [False]
    with pytest.raises(ValueError, match="tol"):
        IGOSConfig(tol=-1)
    with pytest.raises(ValueError, match="tol_window"):
        IGOSConfig(tol_window=0)


def test_objective_history_is_a_record_not_an_alias():
    """Regression: on CPU ``loss.cpu()`` returned the same tensor, so every history entry was
    the final objective and convergence stopping fired after ``tol_window`` iterations."""
    model = PatchNet()
    images = make_images(2)
    result = igospp(
        model, images, torch.tensor([1, 1]), mask_size=8, iterations=4, ig_steps=3, tol=0
    )
    history = torch.tensor(result.stats["objective_history"])
    assert not torch.allclose(history[:, 0], history[:, -1])
    assert (history[:, 1:] <= history[:, :-1] + 1e-6).all()  # Armijo: never increases


# (10) speed options: BatchNorm folding, bf16 autocast on CPU -------------------------------------
class BNNet(nn.Module):
    """Conv-BN-ReLU blocks (nn.Sequential, as in the project's CNNs) plus a conv-BN pair outside
    any Sequential, which must be left alone."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():  # the same weights in every test run
            torch.manual_seed(0)
            self.features = nn.Sequential(
                nn.Sequential(
                    nn.Conv2d(1, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
                ),
                nn.ReLU(),
                nn.Conv2d(8, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
            )
            self.side = nn.Conv2d(8, 8, 1)
            self.side_bn = nn.BatchNorm2d(8)
            self.head = nn.Linear(8, 2)
        with torch.no_grad():
            for bn in (self.features[0][1], self.features[3], self.side_bn):
                bn.running_mean.copy_(torch.randn(8, generator=g))
                bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
                bn.weight.copy_(torch.randn(8, generator=g))
                bn.bias.copy_(torch.randn(8, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.side_bn(self.side(self.features(x))).mean(dim=(2, 3)))


def test_fold_batchnorm() -> None:
    from xraydebug.saliency.runtime import fold_batchnorm

    model = BNNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, pairs = fold_batchnorm(model)
    assert pairs == 2 and folded is not model
    assert isinstance(folded.features[0][1], nn.Identity)
    assert isinstance(folded.features[3], nn.Identity)
    assert isinstance(folded.side_bn, nn.BatchNorm2d)  # not in a Sequential: untouched
    assert not any(p.requires_grad for p in folded.parameters())
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    # The caller's model is not modified.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.features[3], nn.BatchNorm2d)
    # Nothing to fold: the model itself comes back, no copy.
    same, n = fold_batchnorm(PatchNet().eval())
    assert n == 0 and isinstance(same, PatchNet)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(BNNet())


def test_fold_bn_option_gives_the_same_masks() -> None:
    model = BNNet()
    x = make_images(2)
    # no regulariser: BNNet's gradients are small, and the masks must move for a real comparison
    kw = {"mask_size": 8, "iterations": 3, "ig_steps": 3, "noise": 0.0, "amp": False, "tol": 0}
    kw |= {"l1": 0.0, "l2": 0.0}
    plain = igospp(model, x, [0, 1], fold_bn=False, **kw)
    folded = igospp(model, x, [0, 1], **kw)
    assert plain.stats["folded_batchnorms"] == 0 and folded.stats["folded_batchnorms"] == 2
    assert folded.stats["config"]["fold_bn"] is True
    assert (plain.mask - 1).abs().mean() > 1e-3
    torch.testing.assert_close(folded.mask, plain.mask, atol=1e-4, rtol=0)
    assert model.training and isinstance(model.features[3], nn.BatchNorm2d)  # restored, intact


def test_amp_on_cpu() -> None:
    from xraydebug.device import cpu_has_native_bf16
    from xraydebug.saliency.runtime import autocast_context

    cpu = torch.device("cpu")
    with autocast_context(cpu, True):  # metrics' call: CPU autocast only when asked for
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context(cpu, False, cpu=True):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context(cpu, True, cpu=True):
        assert torch.is_autocast_enabled("cpu") == cpu_has_native_bf16()


def test_bf16_engine_matches_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default engine path (bf16 autocast where the CPU has it natively) against float32.
    bf16 autocast runs on any CPU (emulated, slowly, without AVX512-BF16/AMX), so the engine
    is made to take its bf16 path here whatever the CPU."""
    from xraydebug.saliency import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    with runtime.autocast_context(torch.device("cpu"), True, cpu=True):
        if not torch.is_autocast_enabled("cpu"):
            pytest.skip("this torch build cannot run bf16 autocast on CPU")
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16
    # bf16 gradient passes stay close to float32; the objective is float32.
    model, x = PatchNet(), make_images(2)
    kw = {**FAST, "noise": 0.0, "tol": 0}
    f32 = igospp(model, x, 1, amp=False, **kw)
    amp = igospp(model, x, 1, amp=True, **kw)
    assert amp.stats["config"]["amp"] is True and f32.stats["config"]["amp"] is False
    assert (f32.mask - 1).abs().mean() > 0.05  # the masks moved: a real comparison
    assert (amp.mask - f32.mask).abs().mean() < 0.01
    assert (mass_fraction(amp.saliency((SIZE, SIZE)), PATCH) > 3 * region(PATCH).mean()).all()


def test_tv_and_btv_on_a_3x3_example_worked_by_hand():
    from xraydebug.saliency.masks import bilateral_tv, total_variation

    mask = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]).view(1, 1, 3, 3)
    image = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]).view(1, 1, 3, 3)
    # vertical pairs: |dM|^2 = 1 at (0,1)->(1,1) with flat image (w = 1) and at (1,1)->(2,1)
    # across the image edge (w = exp(-1 / sigma2) = e^-1); 6 vertical pairs in all.
    # horizontal pairs: |dM|^2 = 1 twice in the middle row, image flat there (w = 1); 6 pairs.
    assert total_variation(mask).item() == pytest.approx(2 / 6 + 2 / 6)
    expected = 0.5 * ((1 + math.exp(-1)) / 6 + 2 / 6)  # = (3 + e^-1) / 12
    assert bilateral_tv(mask, image, sigma2=1.0).item() == pytest.approx(expected)


# (11) one explainer contract: config objects, several targets, sigmoid models, plug-ins ---------
def test_keyword_equal_to_its_default_overrides_the_config(model: PatchNet) -> None:
    """Regression: keywords used to override a config only when they differed from their
    defaults, so ``mask_size=28`` or ``seed=0`` silently left the config's value in place."""
    x = make_images(1)
    cfg = IGOSConfig(mask_size=8, iterations=1, ig_steps=2, seed=3)
    res = igospp(model, x, 1, config=cfg, mask_size=28, seed=0)  # both equal the defaults
    assert res.mask.shape == (1, 1, 28, 28)
    assert res.stats["config"]["seed"] == 0 and res.stats["config"]["iterations"] == 1


def test_explain_takes_a_config_object(model: PatchNet) -> None:
    x = make_images(2)
    explainer = get_explainer("igospp")
    cfg = IGOSConfig(**FAST)
    res = explainer.explain(model, x, 1, cfg)
    torch.testing.assert_close(res.mask, igospp(model, x, 1, **FAST).mask, atol=0, rtol=0)
    with pytest.raises(TypeError, match="expected a config of type IGOSConfig"):
        explainer.explain(model, x, 1, GradCAMConfig())
    with pytest.raises(ValueError, match="activation"):
        explainer.explain(model, x, 1, cfg, activation="tanh")
    with pytest.raises(TypeError, match="expected a config of type GradCAMConfig"):
        get_explainer("gradcam").explain(model, x, 1, cfg)


def test_default_config_and_describe() -> None:
    from xraydebug.saliency.config import DEFAULT_PRESET

    igospp_ = get_explainer("igospp")
    cfg = igospp_.default_config(preset="fast", mask_size=56, iterations=None, ig_steps=None)
    assert cfg == IGOSConfig.preset("fast", mask_size=56)  # None values mean "the default"
    assert igospp_.default_config() == IGOSConfig.preset(DEFAULT_PRESET)
    assert igospp_.describe(cfg) == {
        "method": "igospp",
        "preset": "fast",
        "settings": IGOSConfig.preset("fast", mask_size=56).to_dict(),
    }
    assert igospp_.describe(IGOSConfig())["preset"] is None
    with pytest.raises(TypeError, match=r"unknown igospp setting\(s\) \['iterashuns'\].*preset"):
        igospp_.default_config(iterashuns=3)
    cam = get_explainer("gradcam")
    assert cam.default_config(layer="conv", batch_size=None) == GradCAMConfig(layer="conv")
    assert cam.describe(GradCAMConfig(layer="conv")) == {
        "method": "gradcam",
        "settings": {"layer": "conv", "batch_size": None},
    }
    with pytest.raises(TypeError, match=r"valid settings: \['batch_size', 'layer'\]"):
        cam.default_config(mask_size=8)
    with pytest.raises(ValueError, match="batch_size"):
        GradCAMConfig(batch_size=0)
    # run.json entries in words: what scan wrote before, and what describe() writes now
    old = {"method": "igospp", "preset": "fast", "settings": cfg.to_dict()}
    assert describe_saliency(old) == "iGOS++ preset fast: mask 56, 10 iterations, 3 IG points"
    assert describe_saliency(igospp_.describe(cfg)) == describe_saliency(old)
    assert describe_saliency(igospp_.describe(IGOSConfig())).startswith("iGOS++: mask 28, 20")
    assert describe_saliency({"method": "gradcam"}) == "Grad-CAM"
    assert describe_saliency(cam.describe(GradCAMConfig())) == "Grad-CAM"


def test_several_targets_per_image(model: PatchNet) -> None:
    """(B, 2) targets: B*2 rows, image 0's targets first, each row what a single-target call
    gives (the image's repeats share its noise stream, as a single call would draw it)."""
    x = make_images(3)
    both = torch.tensor([[1, 0], [0, 1], [1, 1]])
    multi = igospp(model, x, both, **FAST)
    assert multi.mask.shape == (6, 1, 16, 16) and multi.targets.tolist() == [1, 0, 0, 1, 1, 1]
    assert multi.stats["images"] == 6 and multi.stats["targets_per_image"] == 2
    for t in range(2):
        single = igospp(model, x, both[:, t], **FAST)
        for got, want in [
            (multi.deletion_mask[t::2], single.deletion_mask),
            (multi.insertion_mask[t::2], single.insertion_mask),
        ]:
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        cam = gradcam(model, x, both[:, t])
        torch.testing.assert_close(gradcam(model, x, both).mask[t::2], cam.mask)
    d, i = deletion_insertion(model, x, both, multi, steps=8)
    d0, i0 = deletion_insertion(model, x, both[:, 0], multi.saliency()[0::2], steps=8)
    assert d.shape == i.shape == (6,)
    torch.testing.assert_close(d[0::2], d0)
    torch.testing.assert_close(i[0::2], i0)
    # explicit noise seeds are one per image and follow its repeats
    seeded = igospp(model, x, both, noise_seeds=[4, 5, 6], **FAST)
    alone = igospp(model, x[1:2], both[1:2, 1], noise_seeds=[5], **FAST)
    torch.testing.assert_close(seeded.mask[3:4], alone.mask, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"\(3,\) or \(3, T\)"):
        igospp(model, x, torch.ones(2, 2, dtype=torch.long), **FAST)


class FindingsNet(nn.Module):
    """Two per-finding logits (multi-label, sigmoid): finding 0 = the patch, finding 1 = the
    "distractor" square; each logit is 20 * mean(relu(avg3x3(x) - 0.5)) over its square - 4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(SIZE * SIZE, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9)
            self.conv.bias.fill_(-0.5)
            for k, where in enumerate((PATCH, DISTRACTOR)):
                inside = region(where).flatten()
                self.head.weight[k] = 20 * inside / inside.sum()
            self.head.bias.fill_(-4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def test_sigmoid_activation_on_a_multi_label_model() -> None:
    model, x = FindingsNet(), make_images(2)
    with torch.no_grad():
        logits, blur_logits = model(x), model(blur_baseline(x))
    assert (torch.sigmoid(logits) > 0.9).all()  # both findings present: softmax would split them
    both = torch.tensor([[0, 1], [0, 1]])
    res = igospp(model, x, both, activation="sigmoid", **FAST)
    sal = res.saliency((SIZE, SIZE))
    area = region(PATCH).mean()
    assert (mass_fraction(sal[0::2], PATCH) > 3 * area).all()  # finding 0: the patch
    assert (mass_fraction(sal[1::2], DISTRACTOR) > 3 * area).all()  # finding 1: the square
    softmax = igospp(model, x, both, **FAST)
    assert not torch.equal(softmax.mask, res.mask)
    # deletion / insertion read sigmoid probabilities: with steps=1 the curves are the image
    # and the blur, AUC = their mean
    d1, i1 = deletion_insertion(model, x, both, res, steps=1, activation="sigmoid")
    want = ((torch.sigmoid(logits) + torch.sigmoid(blur_logits)) / 2).flatten()
    torch.testing.assert_close(d1, want)
    torch.testing.assert_close(i1, want)
    d_soft, _ = deletion_insertion(model, x, both, res, steps=1)
    assert not torch.allclose(d_soft, want)
    d, i = deletion_insertion(model, x, both, res, steps=8, activation="sigmoid")
    assert (d < i).all()
    with pytest.raises(ValueError, match="activation"):
        deletion_insertion(model, x, both, res, activation="relu")


def test_an_explainer_registered_from_outside(
    monkeypatch: pytest.MonkeyPatch, model: PatchNet
) -> None:
    """A plug-in explainer (here: saliency = the image's own brightness) registers with the
    public decorator and is then listed and run by name like the built-in ones."""
    from dataclasses import dataclass

    from xraydebug.saliency import registry

    monkeypatch.setattr(registry, "EXPLAINERS", dict(registry.EXPLAINERS))

    @dataclass(frozen=True)
    class BrightnessConfig:
        gamma: float = 1.0

    @register_explainer
    class Brightness(Explainer):
        name = "brightness"
        title = "Brightness"
        config_class = BrightnessConfig

        def explain(
            self, model, images, targets, config=None, *, device=None, activation="softmax"
        ):
            cfg = self.checked(config)
            sal = images.mean(dim=1, keepdim=True).clamp(0, 1) ** cfg.gamma
            t = torch.as_tensor(targets).expand(images.shape[0])
            return SaliencyResult(None, None, 1 - sal, t, self.name, {"iterations": None})

    assert explainer_names() == ["brightness", "gradcam", "igos", "igospp"]
    explainer = get_explainer("brightness")
    assert isinstance(explainer, Brightness) and explainer.title == "Brightness"
    x = make_images(2)
    res = explainer.explain(model, x, 1, explainer.default_config(gamma=2.0))
    assert res.method == "brightness" and res.mask.shape == (2, 1, SIZE, SIZE)
    d, i = deletion_insertion(model, x, 1, res, steps=8)
    assert d.shape == i.shape == (2,)
    assert explainer.describe(BrightnessConfig()) == {
        "method": "brightness",
        "settings": {"gamma": 1.0},
    }
    assert describe_saliency(explainer.describe(BrightnessConfig())) == "Brightness"
    with pytest.raises(ValueError, match="already registered"):
        register_explainer(Brightness())
    register_explainer(Brightness(), overwrite=True)
    with pytest.raises(TypeError, match="Explainer"):
        register_explainer(object())
