"""Tests of xraydebug.saliency.removal: the removal operators (blur, grey, noise, inpaint) and
MP2-G (Agarwal & Nguyen, ACCV 2020) in iGOS++ / I-GOS and the deletion/insertion metrics.

The model is a hand-built 2-layer CNN whose class-1 logit looks only at an 8x8 square of a
32x32 image (bright pixels there raise it); the images also carry an equally bright distractor.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

from xraydebug.inpaint import Inpainter, register_inpainter
from xraydebug.saliency import (
    REMOVAL_OPERATORS,
    IGOSConfig,
    Removal,
    RemovalConfig,
    blur_baseline,
    deletion_insertion,
    igos,
    igospp,
    remove,
)
from xraydebug.saliency.igos import IGOSPP_OBJECTIVE, _Optimizer, make_baseline
from xraydebug.saliency.removal import binarise_top

SIZE = 32
PATCH = (slice(6, 14), slice(18, 26))
DISTRACTOR = (slice(20, 28), slice(4, 12))


class TwoLayerNet(nn.Module):
    """conv(1->2: mean - 0.5, 0.4 - mean) -> relu -> conv(2->1: centre taps 1, 0.5) -> relu ->
    logit_1 = 20 * mean over the patch - 4, logit_0 = 0. A flat image at 0.45 is dead in both
    channels (no gradient at all)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 1, 3, padding=1)
        self.head = nn.Linear(SIZE * SIZE, 2)
        inside = torch.zeros(SIZE, SIZE)
        inside[PATCH] = 1.0
        inside = inside.flatten()
        with torch.no_grad():
            self.conv1.weight.fill_(1 / 9)
            self.conv1.weight[1] *= -1.0
            self.conv1.bias.copy_(torch.tensor([-0.5, 0.4]))
            self.conv2.weight.zero_()
            self.conv2.weight[0, 0, 1, 1] = 1.0
            self.conv2.weight[0, 1, 1, 1] = 0.5
            self.conv2.bias.zero_()
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1] = 20 * inside / inside.sum()
            self.head.bias[1] = -4.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        return self.head(torch.relu(self.conv2(x)).flatten(1))


def make_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, SIZE, SIZE, generator=g)
    x[..., DISTRACTOR[0], DISTRACTOR[1]] = 1.0
    x[..., PATCH[0], PATCH[1]] = 0.9 + 0.1 * torch.rand(n, 1, 8, 8, generator=g)
    return x


# Reference values computed with the code as it was before ``removal`` existed (same model,
# images and settings; CPU, float32). The in-process comparisons below are bit for bit; these
# allow float rounding only (another CPU may pick other kernels).
REF = {"mask_size": 6, "iterations": 4, "ig_steps": 3, "amp": False, "tol": 0.0}
REF_FAST = IGOSConfig.preset("fast", mask_size=6, amp=False)
# fmt: off
IGOSPP_DEL = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0085567906498909, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.013850068673491478, 0.8885208368301392, 1.0, 0.0,
    0.0, 0.0, 0.0, 1.0, 0.9787185192108154, 0.0, 0.0, 0.0, 0.0, 0.9079602360725403,
    0.8448039889335632, 0.6354544162750244, 0.5694461464881897, 0.57793128490448,
    0.6836638450622559, 0.9255968332290649, 0.7278077602386475, 0.00047070664004422724,
    0.032166823744773865, 0.02934160828590393, 0.6117888689041138, 0.8906812071800232,
    0.7390101552009583, 0.0005384754622355103, 0.035898178815841675, 0.03213617578148842,
    0.6200144290924072, 1.0, 0.999441385269165, 0.7115450501441956, 0.0005056653753854334,
    0.0004268483316991478, 0.645632266998291, 1.0, 1.0, 0.9997955560684204, 0.7278993129730225,
    0.7238879799842834, 0.8437409400939941, 1.0, 1.0, 1.0, 0.8797532320022583,
    0.9206337332725525, 0.9145697355270386,
]
IGOSPP_INS = [
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 1.0, 1.0, 0.004101622849702835, 0.8885208368301392, 1.0, 0.0, 0.0, 0.0, 0.0,
    1.0, 0.9787185192108154, 0.0, 0.0, 0.0, 0.0, 0.9079602360725403, 0.8448039889335632,
    0.6433331370353699, 0.7446565628051758, 0.7488265037536621, 0.6817989945411682,
    0.9255968332290649, 0.7278077602386475, 0.0, 0.0, 0.0, 0.7526840567588806,
    0.8906812071800232, 0.7390101552009583, 0.0, 0.0, 0.0, 0.7482768297195435, 1.0,
    0.999441385269165, 0.7264966368675232, 0.0, 0.0, 0.6515523791313171, 1.0, 1.0,
    0.9997955560684204, 0.7278993129730225, 0.7238879799842834, 0.8437409400939941, 1.0, 1.0,
    1.0, 0.8797532320022583, 0.9206337332725525, 0.9145697355270386,
]
IGOSPP_FAST = [
    0.0, 0.0, 0.0, 0.0, 0.0, 3.3579805602812485e-12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.9999995231628418, 0.0, 0.0, 0.0, 2.840935264813993e-09,
    0.9999996423721313, 1.0, 0.9999996423721313, 0.0, 0.0, 0.0, 1.0, 0.9999998807907104, 0.0,
    0.0, 0.0, 0.0, 0.41767367720603943, 0.3339168131351471, 0.278309166431427,
    0.4314838647842407, 0.5227266550064087, 0.549136757850647, 0.357142835855484,
    0.2638433575630188, 1.5780584305957746e-07, 0.0, 0.0, 0.5206667184829712,
    0.41745737195014954, 0.25251439213752747, 0.0, 0.0, 0.0, 0.4244783818721771,
    0.6858500242233276, 0.9826257824897766, 0.15519967675209045, 0.0, 0.0, 0.27646729350090027,
    0.996427059173584, 1.0, 0.9947502613067627, 0.2380160391330719, 0.2532990276813507,
    0.32952171564102173, 1.0, 0.9969964027404785, 0.8486304879188538, 0.38776305317878723,
    0.34993401169776917, 0.4069531261920929,
]
IGOS_MASK = [
    1.0, 0.9995152354240417, 0.9908320903778076, 0.9446462392807007, 0.9473533034324646,
    0.9913053512573242, 1.0, 0.9973256587982178, 0.9476181268692017, 0.7759638428688049,
    0.786483108997345, 0.9474393129348755, 1.0, 0.9969282746315002, 0.9445217847824097,
    0.7648190259933472, 0.7750969529151917, 0.9439708590507507, 1.0, 0.9994407892227173,
    0.9902606010437012, 0.9443700313568115, 0.9468252658843994, 0.9906136393547058,
    0.9999998807907104, 1.0, 0.9994400143623352, 0.9969020485877991, 0.9971826672554016,
    0.9994972348213196, 1.0, 0.9999998807907104, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9999076724052429,
    0.9946565628051758, 0.956796407699585, 0.9628807902336121, 0.9974154829978943, 1.0,
    0.9987863302230835, 0.956434965133667, 0.7699524164199829, 0.7937149405479431,
    0.9629310369491577, 1.0, 0.9984555244445801, 0.9524543285369873, 0.7516008615493774,
    0.7740280032157898, 0.9576264023780823, 1.0, 0.9998899102210999, 0.9938884973526001,
    0.9527754187583923, 0.957462728023529, 0.9948170781135559, 1.0, 1.0, 0.9998907446861267,
    0.9985094666481018, 0.9989027380943298, 0.9999117851257324, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
]
DI_DEL = [0.30912795662879944, 0.12366153299808502]
DI_INS = [0.6275025606155396, 0.8524824380874634]
# fmt: on


def as_ref(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(2, 1, 6, 6)


@pytest.fixture(scope="module")
def model() -> TwoLayerNet:
    return TwoLayerNet()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return make_images(2)


ONES = torch.ones(2, dtype=torch.long)
BLURS = [None, "blur", RemovalConfig(), RemovalConfig("blur", top=0.5, every=1)]


# (1) blur / None: the old code path, bit for bit ---------------------------------------------
def test_igospp_blur_is_unchanged(model: TwoLayerNet, images: torch.Tensor) -> None:
    plain = igospp(model, images, ONES, **REF)
    torch.testing.assert_close(plain.deletion_mask, as_ref(IGOSPP_DEL), atol=1e-6, rtol=0)
    torch.testing.assert_close(plain.insertion_mask, as_ref(IGOSPP_INS), atol=1e-6, rtol=0)
    fast = igospp(model, images, ONES, config=REF_FAST)
    torch.testing.assert_close(fast.mask, as_ref(IGOSPP_FAST), atol=1e-6, rtol=0)
    for removal in BLURS:
        res = igospp(model, images, ONES, removal=removal, **REF)
        assert torch.equal(res.deletion_mask, plain.deletion_mask)
        assert torch.equal(res.insertion_mask, plain.insertion_mask)
        assert res.stats["objective_history"] == plain.stats["objective_history"]
        assert res.stats["refills"] == [0, 0] and res.stats["refill_seconds"] == 0.0
        assert res.stats["removal"]["operator"] == "blur"
        res = igospp(model, images, ONES, config=REF_FAST, removal=removal)
        assert torch.equal(res.mask, fast.mask)


def test_igos_blur_is_unchanged(model: TwoLayerNet, images: torch.Tensor) -> None:
    plain = igos(model, images, ONES, **REF)
    torch.testing.assert_close(plain.mask, as_ref(IGOS_MASK), atol=1e-6, rtol=0)
    for removal in BLURS:
        assert torch.equal(igos(model, images, ONES, removal=removal, **REF).mask, plain.mask)


def test_deletion_insertion_blur_is_unchanged(model: TwoLayerNet, images: torch.Tensor) -> None:
    sal = igospp(model, images, ONES, **REF).saliency((SIZE, SIZE))
    d, i = deletion_insertion(model, images, ONES, sal, steps=8)
    torch.testing.assert_close(d, torch.tensor(DI_DEL), atol=1e-6, rtol=0)
    torch.testing.assert_close(i, torch.tensor(DI_INS), atol=1e-6, rtol=0)
    for removal in BLURS:
        d2, i2 = deletion_insertion(model, images, ONES, sal, steps=8, removal=removal)
        assert torch.equal(d2, d) and torch.equal(i2, i)


# (2) MP2-G refills on schedule ---------------------------------------------------------------
SPY = "test-removal-spy"


@register_inpainter
class SpyInpainter(Inpainter):
    """Fills the mask with the mean of the pixels outside it and records every call."""

    name = SPY
    description = "test spy: fills with the mean of the known pixels, records calls"
    calls: ClassVar[list[tuple[torch.Tensor, torch.Tensor]]] = []

    def inpaint_tensor(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        type(self).calls.append((images.clone(), masks.clone()))
        fill = masks > 0.5
        known = (~fill).to(images.dtype)
        mean = (images * known).sum(dim=(1, 2, 3), keepdim=True) / known.sum(
            dim=(1, 2, 3), keepdim=True
        ).clamp_min(1)
        return torch.where(fill, mean.expand_as(images), images)


def spy_removal(**kwargs: object) -> Removal:
    SpyInpainter.calls.clear()
    return Removal(RemovalConfig("inpaint", inpainter=SPY, **kwargs))


def three_images() -> torch.Tensor:
    """Two images with a patch and one flat at 0.45 (no gradient: never any salient pixel)."""
    return torch.cat([make_images(2), torch.full((1, 1, SIZE, SIZE), 0.45)])


SCHEDULE = {"mask_size": 8, "iterations": 6, "ig_steps": 3, "amp": False, "noise": 0.0}


def test_mp2g_refills_on_schedule(model: TwoLayerNet) -> None:
    x = three_images()
    removal = spy_removal(every=2)
    res = igospp(model, x, 1, removal=removal, tol=0.0, **SCHEDULE)
    assert res.stats["iterations"] == [6, 6, 6]
    assert res.stats["refills"] == [2, 2, 0]  # at it = 2 and 4; image 2 has no salient pixel
    assert res.stats["refill_seconds"] > 0 and removal.calls == 2
    assert (res.deletion_mask[2] == 1).all()
    calls = SpyInpainter.calls
    assert len(calls) == 2  # one batched call per refill
    k = round(0.2 * SIZE * SIZE)
    for imgs, masks in calls:
        assert torch.equal(imgs, x[:2])
        area = (masks > 0.5).flatten(1).sum(dim=1)
        assert ((area > 0) & (area <= k)).all()
    described = res.stats["removal"]
    assert described["operator"] == "inpaint" and described["inpainter"] == SPY
    assert described["every"] == 2 and described["top"] == 0.2
    # I-GOS too; the refill count follows the global iteration over coarse-to-fine stages.
    res = igos(model, x, 1, removal=spy_removal(every=2), tol=0.0, **SCHEDULE)
    assert res.stats["refills"][2] == 0 and min(res.stats["refills"][:2]) >= 1
    staged = igospp(
        model, x[:2], 1, removal=spy_removal(every=3), tol=0.0, coarse=((4, 2),), **SCHEDULE
    )
    assert staged.stats["refills"] == [2, 2]  # global iterations 3 and 6 of 0..7


def test_mp2g_baseline_objective_and_binarised_mask(model: TwoLayerNet) -> None:
    """After a refill the baseline is the inpainter's fill of the top-``top`` mask, ``diff``
    follows, and the line search compares against the objective under the new baseline."""
    x = make_images(2)
    cfg = IGOSConfig(**SCHEDULE, tol=0.0)
    base = make_baseline(x, "blur", cfg.blur_kernel, cfg.blur_sigma)
    removal = spy_removal(every=2, top=0.1)
    opt = _Optimizer(model, x, base, ONES, IGOSPP_OBJECTIVE, cfg, [0, 1], x.device, removal=removal)
    fresh = []
    line_search = opt.line_search

    def spy_line_search(masks, grad, loss, idx, first):
        fresh.append(torch.allclose(loss, opt.objective(masks, idx), atol=1e-6, rtol=0))
        return line_search(masks, grad, loss, idx, first)

    opt.line_search = spy_line_search
    seen = []
    refill = opt.refill

    def spy_refill(masks: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        sal = 1.0 - torch.nn.functional.interpolate(
            masks[active, 0], size=(SIZE, SIZE), mode="bilinear", align_corners=True
        )
        seen.append(binarise_top(sal, 0.1))
        return refill(masks, active)

    opt.refill = spy_refill
    _, stats = opt.run()
    assert stats["refills"] == [2, 2] and len(seen) == 2
    assert all(fresh)  # every line search, refill iterations included, saw F at its baseline
    assert torch.equal(base, make_baseline(x, "blur", cfg.blur_kernel, cfg.blur_sigma))  # kept
    imgs, last = SpyInpainter.calls[-1]
    assert torch.equal(last > 0.5, seen[-1])
    assert (seen[-1].flatten(1).sum(dim=1) == round(0.1 * SIZE * SIZE)).all()
    expected = SpyInpainter().inpaint_tensor(imgs, last)
    torch.testing.assert_close(opt.baseline, expected, atol=0, rtol=0)
    torch.testing.assert_close(opt.diff, x - expected, atol=0, rtol=0)
    assert torch.equal(opt.baseline[~seen[-1].expand_as(x)], x[~seen[-1].expand_as(x)])


def test_mp2g_tol_measures_progress_not_the_refill_jump(model: TwoLayerNet) -> None:
    """With a huge ``tol`` every image stalls as soon as the window allows (after it = 2 with
    ``tol_window=3``), refilled or not: a refill's jump of the objective is taken out of the
    history (shifted), so convergence is judged on the optimisation's own progress."""
    x = three_images()
    common = dict(tol=10.0, tol_window=3, **SCHEDULE)
    blur = igospp(model, x, 1, **common)
    assert blur.stats["iterations"] == [3, 3, 3] and all(blur.stats["converged"])
    res = igospp(model, x, 1, removal=spy_removal(every=2), **common)
    assert res.stats["refills"] == [1, 1, 0]
    assert res.stats["iterations"] == [3, 3, 3] and all(res.stats["converged"])
    history = torch.tensor(res.stats["objective_history"])
    plain = torch.tensor(blur.stats["objective_history"])
    # images 0 and 1 were refilled before it = 2: their history up to then is shifted; the
    # image without salient pixels is the blur run's
    assert not torch.allclose(history[:2, :3], plain[:2, :3])
    torch.testing.assert_close(history[2], plain[2])


# (3) remove() --------------------------------------------------------------------------------
def soft_mask(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(n, 1, SIZE, SIZE)
    m[..., 4:20, 10:28] = torch.rand(n, 1, 16, 18, generator=g)
    m[..., 8:16, 14:24] = 1.0
    return m


@pytest.mark.parametrize("operator", REMOVAL_OPERATORS)
def test_remove_keeps_pixels_outside_the_mask(operator: str) -> None:
    x = make_images(3) * 2 - 0.7  # any value range
    m = soft_mask(3)
    out = remove(x, m, operator)
    assert out.shape == x.shape and out.dtype == x.dtype
    outside = (m == 0).expand_as(x)
    assert torch.equal(out[outside], x[outside])
    assert not torch.equal(out, x)


def test_remove_fillers() -> None:
    x = make_images(2)
    m = soft_mask(2)
    inside = (m == 1).expand_as(x)
    assert (remove(x, m, "grey")[inside] == 0).all()
    torch.testing.assert_close(remove(x, m, "grey"), x * (1 - m))  # soft masks blend linearly
    blur = blur_baseline(x, 51, 50.0)
    torch.testing.assert_close(remove(x, m, "blur"), x * (1 - m) + blur * m)
    torch.testing.assert_close(
        remove(x, m, "blur", blur_kernel=5, blur_sigma=2.0),
        x * (1 - m) + blur_baseline(x, 5, 2.0) * m,
    )
    # noise: same seed same output, another seed another; per image, whatever the batch
    a, b = remove(x, m, "noise", seed=3), remove(x, m, "noise", seed=3)
    assert torch.equal(a, b) and not torch.equal(a, remove(x, m, "noise", seed=4))
    assert torch.equal(remove(x[1:], m[1:], "noise", seed=3), a[1:])
    assert torch.equal(remove(x, m, "noise", seed=[7, 8]), remove(x, m, "noise", seed=[7, 8]))
    noise = (a[inside] - x[inside]) / 1.0
    assert 0.7 < float(noise.std()) < 1.3  # a standard Gaussian inside


def test_remove_inpaint() -> None:
    x = make_images(3)
    m = torch.zeros(3, 1, SIZE, SIZE)
    m[0] = 1.0  # fully removed: nothing to fill from -> the blurred image
    m[1, :, PATCH[0], PATCH[1]] = 1.0  # the patch, filled from its dark surroundings
    # m[2] empty: the image itself
    removal = Removal("inpaint")  # telea, the default
    out = removal(x, m, blur_kernel=51, blur_sigma=50.0)
    assert torch.equal(out[0], blur_baseline(x[:1])[0])
    assert torch.equal(out[2], x[2])
    keep = m[1] == 0
    assert torch.equal(out[1][keep], x[1][keep])
    assert (
        float(out[1][:, PATCH[0], PATCH[1]].mean())
        < 0.5
        < float(x[1][:, PATCH[0], PATCH[1]].mean())
    )
    assert removal.calls == 1 and removal.seconds > 0
    # soft masks: the fill of the binarised mask, blended; <= 0.5 leaves the image
    soft = m[1:2] * 0.8
    torch.testing.assert_close(removal(x[1:2], soft), x[1:2] * (1 - soft) + out[1:2] * soft)
    torch.testing.assert_close(removal(x[1:2], m[1:2] * 0.4), x[1:2])
    # the inpainter comes from the registry; a model file for a classical one is refused
    with pytest.raises(TypeError, match="model"):
        Removal(RemovalConfig("inpaint", inpainter_model="weights.pt"))
    with pytest.raises(ValueError, match="unknown inpainter"):
        Removal(RemovalConfig("inpaint", inpainter="no-such-inpainter"))


def test_removal_config() -> None:
    cfg = RemovalConfig("inpaint", inpainter="ns", top=0.3, every=2)
    assert RemovalConfig(**cfg.to_dict()) == cfg
    learned = RemovalConfig("inpaint", inpainter="learned", inpainter_model=Path("w.pt"))
    assert learned.inpainter_model == "w.pt" and learned.to_dict()["inpainter_model"] == "w.pt"
    described = cfg.describe()
    assert described["operator"] == "inpaint" and described["inpainter"] == "ns"
    assert described["top"] == 0.3 and described["every"] == 2 and "ns" in described["summary"]
    assert RemovalConfig("grey").describe()["operator"] == "grey"
    assert "inpainter" not in RemovalConfig("noise").describe()
    for bad, match in [
        ({"operator": "smudge"}, "operator"),
        ({"top": 0.0}, "top"),
        ({"top": 1.5}, "top"),
        ({"every": 0}, "every"),
        ({"every": 1.5}, "every"),
        ({"inpainter": ""}, "inpainter"),
        ({"inpainter_model": 3}, "inpainter_model"),
    ]:
        with pytest.raises(ValueError, match=match):
            RemovalConfig(**bad)


# (4) grey / noise baselines in iGOS++; inpaint in the metrics ----------------------------------
def test_fixed_fillers_as_igos_baseline(model: TwoLayerNet, images: torch.Tensor) -> None:
    blur = igospp(model, images, ONES, **REF)
    for operator in ("grey", "noise"):
        res = igospp(model, images, ONES, removal=operator, **REF)
        assert res.mask.shape == blur.mask.shape and not torch.equal(res.mask, blur.mask)
        assert res.stats["refills"] == [0, 0]
        again = igospp(model, images, ONES, removal=RemovalConfig(operator), **REF)
        assert torch.equal(again.mask, res.mask)
    grey_tensor = igospp(model, images, ONES, baseline=torch.zeros(1), **REF)
    assert torch.equal(igospp(model, images, ONES, removal="grey", **REF).mask, grey_tensor.mask)
    with pytest.raises(ValueError, match="baseline"):
        igospp(model, images, ONES, removal="grey", baseline=torch.zeros(1), **REF)


def test_deletion_insertion_with_inpainting(model: TwoLayerNet, images: torch.Tensor) -> None:
    """Deleting the patch into its (dark) surroundings removes the evidence; the blur of the
    patch keeps some of it. The end points are the image and the blurred image, as with blur."""
    sal = torch.zeros(2, 1, SIZE, SIZE)
    sal[..., PATCH[0], PATCH[1]] = 1.0
    sal += 0.01 * torch.arange(SIZE * SIZE).view(1, 1, SIZE, SIZE) / (SIZE * SIZE)
    d_blur, i_blur = deletion_insertion(model, images, ONES, sal, steps=16)
    removal = Removal("inpaint")
    d, i = deletion_insertion(model, images, ONES, sal, steps=16, removal=removal)
    assert d.shape == i.shape == (2,) and ((d >= 0) & (d <= 1) & (i >= 0) & (i <= 1)).all()
    assert (d < d_blur - 0.01).all()
    assert removal.calls >= 1
    # steps=1: the two end points only, the same with either removal
    d1, i1 = deletion_insertion(model, images, ONES, sal, steps=1, removal=removal)
    d1b, i1b = deletion_insertion(model, images, ONES, sal, steps=1)
    torch.testing.assert_close(d1, d1b)
    torch.testing.assert_close(i1, i1b)
    # small chunks (several inpainter calls): the same numbers
    d2, _ = deletion_insertion(model, images, ONES, sal, steps=16, removal=removal, batch_size=5)
    torch.testing.assert_close(d2, d)
    for operator in ("grey", "noise"):
        dg, ig = deletion_insertion(model, images, ONES, sal, steps=16, removal=operator)
        assert not torch.equal(dg, d_blur) or not torch.equal(ig, i_blur)
