"""The scorer modules import each other without a circle (function-local imports included)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import annotate.scorers

PACKAGE = "annotate.scorers"
FOLDER = Path(annotate.scorers.__file__).parent
MODULES = sorted(p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__")


def scorer_imports(name: str) -> set[str]:
    """The sibling scorer modules that ``annotate.scorers.<name>`` imports anywhere in its source."""
    out = set()
    for node in ast.walk(ast.parse((FOLDER / f"{name}.py").read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{name}: use absolute imports")
        else:
            continue
        out |= {t.split(".")[2] for t in targets if t.startswith(PACKAGE + ".") and t.split(".")[2] in MODULES}
    return out - {name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_scorer_import_graph_is_acyclic():
    graph = {m: scorer_imports(m) for m in MODULES}
    assert {"clip_l", "clip_l_config", "aesthetic_head"} <= graph["aesthetic"] | graph["clip_score"] | graph["clip_l"]
    assert find_cycle(graph) is None, f"import circle among the scorers: {' -> '.join(find_cycle(graph))}"


def test_cycle_finder_finds_the_old_circle():
    old = {"aesthetic": {"clip_l"}, "clip_score": {"clip_l"}, "clip_l": {"aesthetic", "clip_score"}}
    assert find_cycle(old) == ["aesthetic", "clip_l", "aesthetic"]


@pytest.mark.parametrize("name", ["aesthetic", "clip_l", "clip_score"])
def test_imports_alone_in_a_fresh_interpreter(name):
    code = f"import {PACKAGE}.{name} as m; assert callable(getattr(m, 'build', None) or getattr(m, 'build_clip_l'))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
