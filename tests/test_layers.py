"""Imports run downward only: the layer order of the README's architecture section.

Every ``import`` and ``from ... import`` in the package (including those inside functions) is
read with :mod:`ast`; a module may import modules of its own layer or of lower layers only.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xraydebug"

# Lowest first. The README's "Architecture" section lists the same order.
LAYERS: list[set[str]] = [
    {"errors", "fsutil", "device", "progress", "settings", "runfolder"},
    {"data"},
    {"models"},
    {"text"},
    {"inpaint"},
    {"saliency"},
    {"flagging"},
    {"executor"},
    {"stages"},
    {"audit"},
    {"demo", "cli", "__init__", "__main__"},
]


def _layer(module: str) -> int:
    """The layer of ``xraydebug.<top>...`` (the package itself is the top layer)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, members in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"{module}: in no layer; add it to LAYERS and the README")


def _module_name(path: Path, root: Path) -> tuple[str, str]:
    """(module, package it resolves relative imports against)."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        module = ".".join(parts[:-1])
        return module, module
    module = ".".join(parts)
    return module, module.rsplit(".", 1)[0]


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every xraydebug import in ``path``."""
    _, package = _module_name(path, root)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.startswith("xraydebug")]
    return found


def upward_imports(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        module, _ = _module_name(path, root)
        mine = _layer(module)
        for line, name in imports_of(path, root):
            if _layer(name) > mine:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {module} -> {name}")
    return problems


def test_no_import_runs_upward():
    assert upward_imports() == []


def test_the_check_finds_an_upward_import(tmp_path: Path):
    fake = tmp_path / "xraydebug"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "bad.py").write_text("def f():\n    from xraydebug.audit import report\n")
    (fake / "data" / "ok.py").write_text("from ..errors import DatasetError\n")
    (fake / "errors.py").write_text("")
    problems = upward_imports(fake)
    assert problems == ["xraydebug/data/bad.py:2: xraydebug.data.bad -> xraydebug.audit"]
