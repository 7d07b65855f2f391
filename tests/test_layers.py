"""The import direction of the packages (DESIGN.md, "Layering"): a lower layer never imports a higher one.

Every ``import`` in ``miro/`` and ``annotate/`` counts, also those inside functions (a lazy import is still a
dependency).  A package may import its own modules, any package of a lower layer, and nothing of its own
layer but itself: ``annotate`` and ``miro.sampling`` sit side by side and neither knows the other.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    ["miro.utils"],
    ["miro.contracts"],  # reward names, shard paths, sidecar / stats / bucket formats, GenEval's rules
    ["miro.flow", "miro.models"],
    ["miro.data"],
    ["annotate", "miro.sampling"],  # the stages
    ["miro.train", "miro.eval"],  # stages that use a lower stage (the pipeline, the scorers)
    ["miro.testtime"],  # test-time scaling: the pipeline, the scorers and evaluation's GenEval metadata
    ["miro.demo", "miro"],  # the demo; ``miro`` itself: the package's lazy public names
]
LEVEL = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def package_of(module: str) -> str:
    """The layered package a dotted module name belongs to (the longest listed prefix)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LEVEL:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} belongs to no layer of tests/test_layers.py: add its package to LAYERS")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) of every import of a project module in the code ``source`` of ``module``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
            if node.level:  # relative: resolve against the package holding this module
                parts = module.split(".")
                base = parts[: len(parts) - node.level + (1 if is_package else 0)]
                names = [".".join(base + ([node.module] if node.module else []))]
        else:
            continue
        out += [(node.lineno, n) for n in names if n.split(".")[0] in ("miro", "annotate")]
    return out


def wrong_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of ``source`` (the code of ``module``) that go to its own layer's siblings or higher."""
    src = package_of(module)
    bad = []
    for line, target in imports(source, module, is_package):
        dst = package_of(target)
        if dst != src and LEVEL[dst] >= LEVEL[src]:
            bad.append(f"line {line}: {src} (layer {LEVEL[src]}) imports {target} (layer {LEVEL[dst]})")
    return bad


SOURCES = sorted([*ROOT.glob("miro/**/*.py"), *ROOT.glob("annotate/**/*.py")])


def test_every_package_has_a_layer():
    for path in SOURCES:
        package_of(module_name(path))


def test_no_import_goes_up_or_sideways():
    bad = [f"{p.relative_to(ROOT)} {err}" for p in SOURCES
           for err in wrong_imports(p.read_text(), module_name(p), p.name == "__init__.py")]
    assert bad == []


@pytest.mark.parametrize(("module", "line", "wrong"), [
    ("miro.data.pipeline", "from annotate.job import process_rank", True),  # data imports a stage
    ("miro.sampling.sliders", "from miro.eval.rewards import Scorer", True),  # a higher stage
    ("annotate.job", "from miro.sampling.pipeline import MiroPipeline", True),  # a sibling stage
    ("miro.contracts.sidecar", "import miro.models", True),
    ("miro.models.transformer", "from ..data import shards", True),  # relative imports resolve too
    ("miro.eval.cli", "from annotate.scorers import build_scorers", False),
    ("miro.train.loop", "from miro.contracts.shards import list_shards", False),
    ("miro.data.shapes.world", "from . import degrade", False),
    ("miro.testtime.cli", "from annotate.scorers.registry import build_scorers", False),
    ("miro.testtime.verifier", "from miro.eval.geneval.prompts import load_metadata", False),
    ("miro.eval.rewards", "from miro.testtime.verifier import Verifier", True),  # eval sits below testtime
])
def test_the_checker_catches_a_wrong_import(module, line, wrong):
    assert bool(wrong_imports(line + "\n", module)) == wrong
