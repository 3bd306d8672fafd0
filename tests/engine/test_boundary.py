"""engine/ never imports Qt or the app layer (napari-style import contract)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
FORBIDDEN = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph", "app")


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_engine_never_imports_qt_or_app():
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) > 10
    bad = [
        f"{f.relative_to(ENGINE.parent)} imports {m}"
        for f in files
        for m in imported_modules(f)
        if m.split(".")[0] in FORBIDDEN
    ]
    assert not bad, bad


def test_engine_never_parses_arguments_or_prints():
    """The engine reports through events, return values and callbacks; app/cli.py prints."""
    bad = []
    for f in sorted(ENGINE.rglob("*.py")):
        tree = ast.parse(f.read_text(), filename=str(f))
        if "argparse" in set(imported_modules(f)):
            bad.append(f"{f.relative_to(ENGINE.parent)} imports argparse")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                bad.append(f"{f.relative_to(ENGINE.parent)}:{node.lineno} prints")
    assert not bad, bad
