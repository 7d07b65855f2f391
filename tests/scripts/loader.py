"""Import a file under scripts/ as a module (the scripts are not a package)."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_script(relative: str, name: str | None = None):
    """``scripts/<relative>`` as a module, registered in ``sys.modules`` (dataclasses look their module up)."""
    path = ROOT / "scripts" / relative
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module
