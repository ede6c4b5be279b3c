"""`import-model`: a network trained outside xraydebug, saved as state_dict, TorchScript and a
torch.export program, gives the same predictions from every format; bad files get one line."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

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
    net.eval()
    example = torch.randn(2, 3, SIZE, SIZE)
    files = {"state_dict": root / "net.pth", "torchscript": root / "net.ts"}
    torch.save(net.state_dict(), files["state_dict"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, example), files["torchscript"])
    files["onnx"] = root / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            files["onnx"],
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )
    files["exported_program"] = root / "net.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, files["exported_program"])
    return files


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
