"""Sampling is a stage below evaluation: it never imports ``miro.eval`` (nor the ``annotate`` stage)."""

import ast
from pathlib import Path

SAMPLING = Path(__file__).resolve().parents[2] / "miro" / "sampling"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_sampling_imports_neither_eval_nor_annotate():
    bad = {
        f"{path.name}: {name}"
        for path in sorted(SAMPLING.glob("*.py"))
        for name in imported_modules(path)
        if name == "miro.eval" or name.startswith(("miro.eval.", "annotate"))
    }
    assert not bad, f"miro.sampling imports a higher layer: {sorted(bad)}"
