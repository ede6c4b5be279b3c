"""`import-model`: a network trained outside xraydebug, saved as state_dict, TorchScript and a
torch.export program, gives the same predictions from every format; bad files get one line."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

from benchmarks.import_bench import save_formats
from xraydebug.cli import app
from xraydebug.data.layouts import load_index
from xraydebug.data.torch_dataset import ImageCache
from xraydebug.models.checkpoint import load_model, read_checkpoint
from xraydebug.models.inference import predict_probs

CLASSES = "normal,pneumonia,COVID-19"
SIZE = 64


@pytest.fixture(scope="module")
def foreign_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A torchvision ResNet-18 (3 outputs) after a few SGD steps of a plain PyTorch loop, saved
    the four ways a team saves a model."""
    root = tmp_path_factory.mktemp("foreign")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(3):
        x, y = torch.randn(4, 3, SIZE, SIZE), torch.randint(0, 3, (4,))
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return save_formats(root, net, size=SIZE, max_batch=64)


def _import(file: Path, out: Path, *extra: str) -> object:
    args = ["import-model", str(file), "--out", str(out), "--classes", CLASSES]
    return CliRunner().invoke(app, [*args, "--input-size", str(SIZE), *extra])


def test_every_format_gives_the_same_predictions(foreign_files, tiny_covidx, tmp_path):
    index = load_index(tiny_covidx)
    cache = ImageCache.build(index.root, index.usable("test"), index.classes, SIZE)
    probs = {}
    for fmt, file in foreign_files.items():
        extra = ["--arch", "torchvision:resnet18"] if fmt == "state_dict" else []
        result = _import(file, tmp_path / f"{fmt}.pt", *extra)
        assert result.exit_code == 0, result.output
        payload = read_checkpoint(tmp_path / f"{fmt}.pt")
        assert payload["imported"]["format"] == fmt and len(payload["imported"]["sha256"]) == 64
        loaded = load_model(tmp_path / f"{fmt}.pt")
        assert loaded.classes == tuple(CLASSES.split(","))
        probs[fmt] = predict_probs(
            loaded.model, loaded.preprocessing, cache.images, torch.device("cpu")
        )
    reference = probs["state_dict"]
    for fmt, p in probs.items():
        assert torch.equal(p.argmax(1), reference.argmax(1)), fmt
        assert (p - reference).abs().max() < 1e-4, fmt


def test_an_imported_model_is_audited(foreign_files, tiny_covidx, tmp_path):
    out = tmp_path / "m.pt"
    assert _import(foreign_files["torchscript"], out).exit_code == 0
    result = CliRunner().invoke(
        app, ["evaluate", str(tiny_covidx), "--model", str(out), "--out", str(tmp_path / "e")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e").is_dir()


@pytest.mark.parametrize("fmt", ["torchscript", "exported_program", "onnx"])
def test_an_embedded_model_is_scanned_with_gradients(fmt, foreign_files, tiny_covidx, tmp_path):
    """iGOS++ needs gradients through the user's network: TorchScript and torch.export
    programs carried whole give finite masks and deletion/insertion AUCs."""
    import pandas as pd

    model = tmp_path / "m.pt"
    assert _import(foreign_files[fmt], model).exit_code == 0
    out = tmp_path / "scan"
    args = ["scan", str(tiny_covidx), "--model", str(model), "--out", str(out), "--device", "cpu"]
    settings = ["--mask-size", "8", "--iterations", "2", "--ig-steps", "3", "--limit", "2"]
    result = CliRunner().invoke(app, [*args, *settings])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "scan.csv")
    assert len(table) == 2 and table["insertion_auc"].between(0, 1).all()
    assert table["deletion_auc"].between(0, 1).all()


def test_bad_imports_are_one_line_and_write_nothing(foreign_files, tmp_path):
    cases = {
        "width": (_import(foreign_files["torchscript"], tmp_path / "a.pt", "--classes", "a,b")),
        "keys": _import(
            foreign_files["state_dict"], tmp_path / "b.pt", "--arch", "torchvision:resnet34"
        ),
        "no arch": _import(foreign_files["state_dict"], tmp_path / "c.pt"),
    }
    cases["size"] = _import(
        foreign_files["exported_program"], tmp_path / "e.pt", "--input-size", "96"
    )
    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Erf", ["x"], ["y"])],
        "erf",
        [value("x", TensorProto.FLOAT, [None, 3, SIZE, SIZE])],
        [value("y", TensorProto.FLOAT, [None, 3])],
    )
    unsupported = tmp_path / "erf.onnx"
    onnx.save(helper.make_model(graph), unsupported)
    cases["operator"] = _import(unsupported, tmp_path / "f.pt")
    not_a_module = tmp_path / "fn.ts"
    not_a_module.write_bytes(b"PK\x03\x04 not really a zip")
    cases["not a model"] = _import(not_a_module, tmp_path / "d.pt")
    expected = {
        "width": "3 outputs but --classes names 2",
        "keys": "do not fit",
        "no arch": "--arch torchvision:NAME",
        "not a model": "not a model file",
        "size": "exported for 64x64 input, not --input-size 96",
        "operator": "ONNX operators not supported: Erf",
    }
    for name, result in cases.items():
        assert result.exit_code == 1, (name, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) <= 3 and expected[name] in result.output.replace("\n", " "), name
    assert not list(tmp_path.glob("*.pt"))


def test_any_module_is_imported_from_python(tmp_path):
    """No file and no registered architecture: the module is exported and carried whole."""
    from xraydebug.models.foreign import ModelSpec, import_module

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    ).eval()
    with pytest.raises(ValueError, match="--channels 1 needs --mean"):
        ModelSpec(classes=("no", "yes"), channels=1)
    spec = ModelSpec(classes=("no", "yes"), input_size=32, channels=1, mean=(0.5,), std=(0.2,))
    result = import_module(net, spec, tmp_path / "m.pt")
    loaded = load_model(result.checkpoint)
    gray = torch.rand(5, 1, 32, 32)
    expected = torch.softmax(net((gray - 0.5) / 0.2), dim=1)
    got = predict_probs(loaded.model, loaded.preprocessing, gray, torch.device("cpu"))
    assert (got - expected).abs().max() < 1e-5
    assert read_checkpoint(result.checkpoint)["embedded"]["format"] == "exported_program"


def test_fixed_batch_onnx_and_passthrough(tiny_model, tmp_path):
    """A network exported for exactly 2 films is called in chunks of 2, the last padded; an
    xraydebug checkpoint is copied with its card, no --classes needed."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 3, SIZE, SIZE),), tmp_path / "n.onnx", dynamo=False)
    assert _import(tmp_path / "n.onnx", tmp_path / "fixed.pt").exit_code == 0
    loaded = load_model(tmp_path / "fixed.pt")
    x = torch.rand(5, 1, SIZE, SIZE)
    got = predict_probs(loaded.model, loaded.preprocessing, x, torch.device("cpu"))
    with torch.no_grad():
        expected = torch.softmax(net(loaded.preprocessing.normalize(x)), dim=1)
    assert got.shape == (5, 3) and (got - expected).abs().max() < 1e-4
    args = ["import-model", str(tiny_model.checkpoint), "--out", str(tmp_path / "copy.pt")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "copy.json").is_file() and (tmp_path / "copy.md").is_file()


# --- timm:, xrv: and --multilabel --------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network fails the test."""
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access during an import")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, ["import-model", *args])


def _one_line_error(result: object, expected: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and expected in lines[0], result.output


@pytest.mark.parametrize(("name", "channels"), [("resnet10t", 1), ("mobilenetv3_small_050", 3)])
def test_a_timm_state_dict_round_trips(name, channels, offline, tmp_path):
    """The checkpoint rebuilds the timm network (a 1-channel one as ``,in_chans=1``) and gives
    its logits; ``train --init-weights`` builds the same."""
    timm = pytest.importorskip("timm")
    from xraydebug.models.architectures import build_model, get_arch

    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=3, in_chans=channels)
    with torch.no_grad():  # BatchNorm statistics other than the initial ones
        net.train()(torch.randn(4, channels, SIZE, SIZE))
    net.eval()
    torch.save(net.state_dict(), tmp_path / "net.pth")
    gray = ["--mean", "0.5", "--std", "0.25"] if channels == 1 else []
    args = ["--arch", f"timm:{name}", "--channels", str(channels), *gray]
    result = _import(tmp_path / "net.pth", tmp_path / "m.pt", *args)
    assert result.exit_code == 0, result.output
    loaded = load_model(tmp_path / "m.pt")
    arch = f"timm:{name}" + (",in_chans=1" if channels == 1 else "")
    assert loaded.arch == arch and not loaded.multilabel
    x = loaded.preprocessing.apply(torch.rand(3, 1, SIZE, SIZE))
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net(x), atol=1e-6, rtol=0)
        rebuilt = build_model(arch, 3, init_weights=tmp_path / "net.pth").eval()
        assert torch.allclose(rebuilt(x), net(x), atol=1e-6, rtol=0)
    assert get_arch(arch).preprocessing.in_channels == channels


def test_multilabel_is_recorded(foreign_files, tmp_path):
    """--multilabel (or the spec's ``multilabel``, or the API's) is in the checkpoint and the
    card; without it the outputs stay one softmax."""
    from xraydebug.models.foreign import ModelSpec, import_model

    assert _import(foreign_files["torchscript"], tmp_path / "s.pt").exit_code == 0
    result = _import(foreign_files["torchscript"], tmp_path / "m.pt", "--multilabel")
    assert result.exit_code == 0, result.output
    spec = tmp_path / "spec.json"
    spec.write_text('{"classes": "a,b,c", "multilabel": true, "input_size": 64}')
    result = _cli(
        str(foreign_files["torchscript"]), "--spec", str(spec), "--out", str(tmp_path / "j.pt")
    )
    assert result.exit_code == 0, result.output
    plain = ModelSpec(classes=("a", "b", "c"), input_size=SIZE)
    import_model(foreign_files["torchscript"], plain, tmp_path / "a.pt", multilabel=True)
    for stem in ("m", "j", "a"):
        assert read_checkpoint(tmp_path / f"{stem}.pt")["multilabel"] is True, stem
        loaded = load_model(tmp_path / f"{stem}.pt")
        assert loaded.multilabel and loaded.activation == "sigmoid"
        assert "- outputs (sigmoid, one per finding): " in (tmp_path / f"{stem}.md").read_text()
        assert '"multilabel": true' in (tmp_path / f"{stem}.json").read_text()
    assert read_checkpoint(tmp_path / "s.pt")["multilabel"] is False
    assert "- outputs (softmax, in order): " in (tmp_path / "s.md").read_text()
    with pytest.raises(ValueError, match="findings must be one or more"):
        ModelSpec(multilabel=True)


XRV_NAME = "densenet121-res224-nih"  # 14 findings, 4 empty slots of xrv's 18 outputs


@pytest.fixture(scope="module")
def xrv_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """xrv's DenseNet built with ``weights=None`` (nothing downloaded), saved as xrv's release
    file (a whole pickled model, under xrv's file name, in a cache folder) and as a
    state_dict."""
    xrv = pytest.importorskip("torchxrayvision")
    root = tmp_path_factory.mktemp("xrv")
    torch.manual_seed(0)
    net = xrv.models.DenseNet(weights=None).eval()
    with torch.no_grad():
        net.features.conv0.weight /= 512  # logits of a moderate size on xrv's [-1024, 1024]
    cache = root / "cache"
    cache.mkdir()
    filename = xrv.models.model_urls[XRV_NAME]["weights_url"].rsplit("/", 1)[-1]
    torch.save(net, cache / filename)
    torch.save(net.state_dict(), root / "state.pt")
    return {"pickled": cache / filename, "state_dict": root / "state.pt", "cache": cache}


def test_an_xrv_classifier_gives_xrvs_outputs(xrv_weights, offline, tmp_path):
    """Our logits, through our preprocessing, are xrv's own module's on xrv's scaling: its
    sigmoid gives xrv's probabilities and xrv's op_norm its calibrated outputs, for the
    findings it names (empty slots dropped). A pickled file needs --trust-pickle."""
    xrv = pytest.importorskip("torchxrayvision")
    out = tmp_path / "out"
    out.mkdir()
    args = ["--arch", f"xrv:{XRV_NAME}", "--weights", str(xrv_weights["pickled"])]
    _one_line_error(_cli(*args, "--out", str(out / "p.pt")), "--trust-pickle")
    result = _cli(*args, "--trust-pickle", "--out", str(out / "p.pt"))
    assert result.exit_code == 0, result.output
    args = ["--arch", f"xrv:{XRV_NAME}", "--weights", str(xrv_weights["state_dict"])]
    assert _cli(*args, "--out", str(out / "s.pt")).exit_code == 0

    labels = xrv.models.model_urls[XRV_NAME]["labels"]
    keep = [i for i, label in enumerate(labels) if label]
    # xrv's own module, loading the file from its cache folder (so nothing to download)
    reference = xrv.models.DenseNet(weights=XRV_NAME, cache_dir=str(xrv_weights["cache"]))
    gray = torch.rand(2, 1, 224, 224)
    xrv_input = torch.from_numpy(xrv.utils.normalize(gray.numpy(), 1))
    with torch.no_grad():
        calibrated = reference(xrv_input)[:, keep]  # sigmoid, then op_norm
        reference.op_threshs, reference.apply_sigmoid = None, True
        probabilities = reference(xrv_input)[:, keep]
        for stem in ("p", "s"):
            loaded = load_model(out / f"{stem}.pt")
            assert loaded.classes == tuple(labels[i] for i in keep) and loaded.multilabel
            prep = loaded.preprocessing
            assert (prep.input_size, prep.in_channels, prep.crop_top) == (224, 1, 0.0)
            logits = loaded.model(prep.apply(gray))
            assert torch.allclose(torch.sigmoid(logits), probabilities, atol=1e-5, rtol=0)
            thresholds = torch.tensor(xrv.models.model_urls[XRV_NAME]["op_threshs"])[keep]
            ours = xrv.models.op_norm(torch.sigmoid(logits), thresholds)
            assert torch.allclose(ours, calibrated, atol=1e-5, rtol=0)
    card = (out / "p.md").read_text()
    assert "outputs (sigmoid, one per finding): Atelectasis" in card and "op_threshs" in card
    assert read_checkpoint(out / "p.pt")["imported"]["format"] == "xrv"


def test_zoo_refusals_are_one_line_and_write_nothing(xrv_weights, offline, tmp_path):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    import timm

    net = timm.create_model("resnet10t", pretrained=False, num_classes=3, in_chans=1)
    torch.save(net.state_dict(), tmp_path / "gray.pth")
    out = tmp_path / "out"
    out.mkdir()
    xrv = ["--arch", f"xrv:{XRV_NAME}", "--out", str(out / "x.pt")]
    _one_line_error(_cli(*xrv), f"xrv:{XRV_NAME} needs its weights on disk: --weights FILE")
    _one_line_error(
        _cli(*xrv, "--weights", str(tmp_path / "nowhere.pt")),
        "needs its weights on disk: --weights FILE (xraydebug downloads nothing",
    )
    resnet = ["--arch", "xrv:resnet50-res512-all", "--out", str(out / "r.pt")]
    _one_line_error(
        _cli(*resnet, "--weights", str(xrv_weights["state_dict"])), "weights do not fit"
    )
    _one_line_error(
        _import(tmp_path / "gray.pth", out / "t.pt", "--arch", "timm:no_such_net"),
        "is not a timm model (timm.list_models(",
    )
    _one_line_error(
        _import(tmp_path / "gray.pth", out / "t.pt", "--arch", "timm:resnet10t"), "do not fit"
    )
    assert not any(out.iterdir())


def test_a_missing_extra_is_one_line(monkeypatch, tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pth")
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` fails
    monkeypatch.setitem(sys.modules, "torchxrayvision", None)
    result = _import(tmp_path / "w.pth", tmp_path / "t.pt", "--arch", "timm:resnet10t")
    _one_line_error(
        result, "timm:resnet10t needs the optional extra: pip install 'xraydebug[timm]'"
    )
    result = _cli("--arch", "xrv:densenet121-res224-all", "--out", str(tmp_path / "x.pt"))
    _one_line_error(result, "needs the optional extra: pip install 'xraydebug[xrv]'")
    assert not list(tmp_path.glob("*.pt"))


def test_an_embedded_network_is_explained_exactly_as_the_native_build(
    foreign_files, tiny_covidx, tmp_path
):
    """With the same arithmetic (no BatchNorm folding, which only a network iGOS++ can copy
    gets) a TorchScript or torch.export import gives the native build's AUCs to the bit."""
    from tests.conftest import scan_config
    from xraydebug.stages.scan import scan

    tables = {}
    for fmt in ("state_dict", "torchscript", "exported_program"):
        extra = ["--arch", "torchvision:resnet18"] if fmt == "state_dict" else []
        assert _import(foreign_files[fmt], tmp_path / f"{fmt}.pt", *extra).exit_code == 0
        settings = scan_config(
            mask_size=8,
            iterations=3,
            ig_steps=3,
            metric_steps=8,
            limit=3,
            split="test",
            text=False,
            fold_bn=False,
            device="cpu",
        )
        out = tmp_path / f"scan-{fmt}"
        tables[fmt] = scan(tiny_covidx, tmp_path / f"{fmt}.pt", out, config=settings).table
    native = tables["state_dict"]
    for fmt in ("torchscript", "exported_program"):
        for column in ("deletion_auc", "insertion_auc", "prob"):
            assert tables[fmt][column].tolist() == native[column].tolist(), (fmt, column)
