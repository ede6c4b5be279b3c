"""Architecture registry, preprocessing and init-weight loading.

The two big models run at full resolution once each (batch 1, with an input gradient) and
otherwise at small inputs, so the file stays fast on a shared CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnext50_32x4d

from xraydebug.errors import CheckpointError
from xraydebug.models import architectures as arch_mod
from xraydebug.models.architectures import (
    ArchSpec,
    Preprocessing,
    build_model,
    get_arch,
    list_archs,
    load_init_weights,
    register_arch,
)

BIG = {"covidnext", "covidnet"}
SMALL_INPUT = 64  # used for the big archs' batch-2 / train-mode checks


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: build_model(name) for name in list_archs()}


def _input_grad(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and d(logit of class 1)/d(input) with every parameter frozen (saliency setup)."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        x = x.clone().requires_grad_(True)
        logits = model(x)
        logits[:, 1].sum().backward()
        assert all(p.grad is None for p in model.parameters())
        return logits.detach(), x.grad
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def test_builtin_archs_registered():
    assert {"covidnext", "covidnet", "small", "tiny"} <= set(list_archs())
    assert list_archs() == sorted(list_archs())
    for name in list_archs():
        spec = get_arch(name)
        assert spec.name == name and spec.description


@pytest.mark.parametrize("name", list_archs())
def test_full_size_batch1_and_input_gradient(models, name):
    model = models[name].eval()
    prep = get_arch(name).preprocessing
    torch.manual_seed(1)
    gray = torch.rand(1, 1, prep.input_size, prep.input_size)
    x = prep.apply(gray).contiguous(memory_format=torch.channels_last)
    logits, grad = _input_grad(model, x)
    assert logits.shape == (1, 3)  # batch 1 keeps its batch dimension (no squeeze)
    assert grad.shape == x.shape
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", list_archs())
def test_batch2_train_and_eval(models, name):
    model = models[name]
    prep = get_arch(name).preprocessing
    size = SMALL_INPUT if name in BIG else prep.input_size
    torch.manual_seed(2)
    x = torch.randn(2, prep.in_channels, size, size)
    model.train()
    try:
        out = model(x)
        assert out.shape == (2, 3)
        out.sum().backward()  # parameter gradients flow in train mode too
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    with torch.no_grad():
        plain = model(x)
        cl = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(plain, cl, atol=1e-4, rtol=1e-4)
    _, grad = _input_grad(model, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_num_classes_and_attributes():
    model = build_model("tiny", num_classes=2)
    assert model.num_classes == 2 and model.arch_name == "tiny"
    assert model(torch.randn(3, 1, 64, 64)).shape == (3, 2)
    assert model(torch.randn(2, 1, 40, 56)).shape == (2, 2)  # any size (global pooling)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        build_model("tiny", num_classes=0)
    with pytest.raises(ValueError, match=r"expected model input \(B, 1, H, W\)"):
        model(torch.randn(2, 3, 64, 64))


def test_parameter_budgets(models):
    counts = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    assert 3_000 <= counts["tiny"] <= 8_000
    assert 100_000 <= counts["small"] <= 300_000
    assert counts["covidnext"] > 25_000_000  # ResNeXt-50 (32x4d) backbone alone is ~23M
    assert counts["tiny"] < counts["small"] < counts["covidnet"] < counts["covidnext"]


def test_no_inplace_relu(models):
    for name, model in models.items():
        inplace = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU) and m.inplace]
        assert not inplace, f"{name}: in-place ReLU at {inplace[:3]}"


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet9'.*covidnet, covidnext"):
        get_arch("resnet9")
    with pytest.raises(ValueError, match="small, tiny"):
        build_model("resnet9")


def test_register_custom_arch(monkeypatch):
    monkeypatch.setattr(arch_mod, "_REGISTRY", dict(arch_mod._REGISTRY))
    spec = ArchSpec(
        "mine", lambda k: arch_mod.TinyCNN(k), Preprocessing(32, 1, (0.5,), (0.25,)), "test"
    )
    register_arch(spec)
    assert "mine" in list_archs()
    assert build_model("mine", 4)(torch.randn(1, 1, 32, 32)).shape == (1, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_arch(spec)
    register_arch(spec, overwrite=True)


# --- Preprocessing ---------------------------------------------------------------------------


def test_apply_shapes_and_dtype():
    prep = Preprocessing(48, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    out = prep.apply(torch.rand(3, 1, 100, 80))
    assert out.shape == (3, 3, 48, 48) and out.dtype == torch.float32
    assert prep.apply(torch.rand(2, 1, 30, 20).half()).dtype == torch.float32  # upsampling too
    gray = torch.rand(2, 1, 48, 48)
    assert torch.equal(prep.apply(gray), prep.normalize(gray))  # right size: no resampling
    with pytest.raises(ValueError, match=r"expected gray images \(B, 1, H, W\)"):
        prep.apply(torch.rand(2, 3, 48, 48))
    with pytest.raises(ValueError, match=r"got shape \(48, 48\)"):
        prep.apply(torch.rand(48, 48))
    with pytest.raises(TypeError, match="expected a float tensor"):
        prep.apply(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


def test_apply_channel_repeat_and_mean_std():
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    prep = Preprocessing(32, 3, mean, std)
    gray = torch.rand(2, 1, 64, 64)
    out = prep.apply(gray)
    undone = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert torch.allclose(undone[:, 0], undone[:, 1], atol=1e-6)
    assert torch.allclose(undone[:, 0], undone[:, 2], atol=1e-6)
    # bilinear: a ramp stays a ramp sampled at the output pixel centres (away from borders)
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 1, 64, 64)
    row = Preprocessing(32, 1, (0.0,), (1.0,)).apply(ramp)[0, 0, 0]
    expected = ((torch.arange(32) + 0.5) * 2 - 0.5) / 63
    assert torch.allclose(row[2:-2], expected[2:-2], atol=1e-5)
    # anti-aliased: 1-pixel stripes shrunk 3x average out (plain sampling would give 0 or 1)
    stripes = torch.zeros(1, 1, 96, 96)
    stripes[..., ::2] = 1.0
    shrunk = Preprocessing(32, 1, (0.0,), (1.0,)).apply(stripes)
    assert (shrunk - 0.5).abs().max() < 0.1
    const = prep.apply(torch.full((1, 1, 50, 70), 0.5))
    for c in range(3):
        assert torch.allclose(const[0, c], torch.tensor((0.5 - mean[c]) / std[c]), atol=1e-5)
    gray_prep = Preprocessing(16, 1, (0.5,), (0.25,))
    assert torch.allclose(
        gray_prep.apply(torch.ones(1, 1, 16, 16)), torch.full((1, 1, 16, 16), 2.0)
    )


def test_apply_crop_top():
    gray = torch.zeros(2, 1, 100, 60)
    gray[:, :, :8] = 1.0  # a bright header in the top 8% of rows
    plain = Preprocessing(50, 1, (0.0,), (1.0,))
    cropped = Preprocessing(50, 1, (0.0,), (1.0,), crop_top=0.08)
    assert plain.apply(gray)[:, :, :3].min() > 0.9  # header present without the crop
    assert cropped.apply(gray).abs().max() == 0  # header gone with it
    assert cropped.crop_rows(100) == 8 and cropped.crop_rows(480) == 38
    assert get_arch("covidnet").preprocessing.crop_top == 0.08
    # the remaining rows are stretched to the full height
    ramp = torch.linspace(0, 1, 100).view(1, 1, 100, 1).expand(1, 1, 100, 10)
    out = Preprocessing(46, 1, (0.0,), (1.0,), crop_top=0.08).apply(ramp)
    assert out[0, 0, 0, 0] > 0.08 and out[0, 0, -1, 0] > 0.98


@pytest.mark.parametrize("name", list_archs())
def test_preprocessing_round_trip(name):
    prep = get_arch(name).preprocessing
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    assert Preprocessing.from_dict(json.loads(json.dumps(prep.to_dict()))) == prep
    assert prep.to_dict()["input_size"] == prep.input_size


def test_preprocessing_validation():
    with pytest.raises(ValueError, match="mean needs one value per channel"):
        Preprocessing(64, 3, (0.5,), (0.25, 0.25, 0.25))
    with pytest.raises(ValueError, match="in_channels must be 1 or 3"):
        Preprocessing(64, 2, (0.5, 0.5), (0.25, 0.25))
    with pytest.raises(ValueError, match="crop_top must be in"):
        Preprocessing(64, 1, (0.5,), (0.25,), crop_top=1.0)
    with pytest.raises(ValueError, match="std values must be positive"):
        Preprocessing(64, 1, (0.5,), (0.0,))
    d = get_arch("tiny").preprocessing.to_dict()
    with pytest.raises(ValueError, match=r"unknown preprocessing keys \['flip'\]"):
        Preprocessing.from_dict({**d, "flip": True})
    with pytest.raises(ValueError, match=r"lacks \['std'\]"):
        Preprocessing.from_dict({k: v for k, v in d.items() if k != "std"})


# --- init weights ----------------------------------------------------------------------------


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_init_weights_round_trip_and_wrappers(tmp_path: Path):
    torch.manual_seed(3)
    source = build_model("tiny")
    source.state_dict()["features.0.1.running_mean"].fill_(0.25)  # buffers travel too
    state = source.state_dict()
    variants = {
        "raw.pt": state,
        "prefixed.pt": {f"module.{k}": v for k, v in state.items()},
        "wrapped.pt": {"state_dict": state, "epoch": 3},
        "model_key.pt": {"model": {f"module.{k}": v for k, v in state.items()}},
    }
    for filename, payload in variants.items():
        torch.save(payload, tmp_path / filename)
        torch.manual_seed(99)
        target = build_model("tiny", init_weights=tmp_path / filename)
        assert _same_weights(source, target), filename
    no_counter = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(no_counter, tmp_path / "old.pt")
    assert load_init_weights(build_model("tiny"), tmp_path / "old.pt") == "model"


def test_init_weights_mismatch_errors(tmp_path: Path):
    state = build_model("tiny").state_dict()
    missing = {k: v for k, v in state.items() if k != "head.weight"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"1 missing.*missing e\.g\. head\.weight"):
        build_model("tiny", init_weights=tmp_path / "missing.pt")
    torch.save({**state, "extra.weight": torch.zeros(2)}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match=r"1 unexpected.*extra\.weight"):
        build_model("tiny", init_weights=tmp_path / "extra.pt")
    torch.save(build_model("tiny", num_classes=2).state_dict(), tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match=r"head\.weight: file \(2, 32\) vs model \(3, 32\)"):
        build_model("tiny", init_weights=tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match="arch 'small'"):
        build_model("small", init_weights=tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="not found"):
        build_model("tiny", init_weights=tmp_path / "nope.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pt")
    with pytest.raises(CheckpointError, match="expected a state_dict"):
        build_model("tiny", init_weights=tmp_path / "nostate.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable init weights file"):
        build_model("tiny", init_weights=tmp_path / "junk.pt")


class _Payload:
    """An arbitrary object: pickled into a file, it must never be unpickled."""


def test_init_weights_loaded_with_weights_only(tmp_path: Path):
    state = build_model("tiny").state_dict()
    torch.save({"state_dict": state, "extra": _Payload()}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        build_model("tiny", init_weights=tmp_path / "unsafe.pt")


def test_covidnext_backbone_only_weights(models, tmp_path: Path):
    model = models["covidnext"]
    torch.manual_seed(4)
    reference = resnext50_32x4d(weights=None)  # what a user saves from torchvision
    path = tmp_path / "resnext50.pt"
    torch.save(reference.state_dict(), path)
    extra_before = {k: v.clone() for k, v in model.extra.state_dict().items()}
    assert load_init_weights(model, path) == "backbone"
    backbone = model.backbone.state_dict()
    for key, value in reference.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(backbone[key], value), key
    assert all(torch.equal(v, model.extra.state_dict()[k]) for k, v in extra_before.items())
    broken = {k: v for k, v in reference.state_dict().items() if k != "layer4.2.bn3.weight"}
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match=r"fit backbone.*missing e\.g\. layer4\.2\.bn3"):
        load_init_weights(model, path)
