"""Typed hydra configs: dataclass schemas whose ``__post_init__`` rejects bad values with a clear message,
the folder of the shipped configs, and the runner every entry point goes through.

Every entry point (``python -m miro.train``, ``python -m annotate``, ... ; the list is in docs/configs.md)
follows the same pattern::

    @dataclass
    class SampleConfig:
        steps: int = 50
        def __post_init__(self):
            require(self.steps > 0, "steps", self.steps, "must be a positive integer")

    main = entry_point("sample", SampleConfig, run, errors=(StageError,))   # "error: <message>", exit code 1
    if __name__ == "__main__":
        main()

``entry_point`` registers the schema as ``<config>_schema`` (the name the yaml's defaults list starts with),
composes ``miro/conf/<config>.yaml`` with hydra (overrides, multirun, ``--config-dir``) and hands the result
to ``run_typed``.

OmegaConf checks types when the yaml is merged onto the schema; ``to_typed`` then builds the dataclass
objects so the value checks in ``__post_init__`` run, and turns both kinds of failure into one
``ConfigError`` whose message names the key, the value and what is allowed.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")

CONFIG_PACKAGE = "miro.conf"
# The hydra configs ship inside the package (miro/conf), so an installed wheel finds them from any folder.
CONFIG_DIR = Path(str(files(CONFIG_PACKAGE)))
CONFIG_PATH = str(CONFIG_DIR)  # ``@hydra.main(config_path=CONFIG_PATH, ...)``


def config_file(*parts: str) -> Path:
    """A shipped config file, e.g. ``config_file("accelerate", "cpu_ddp.yaml")`` (for ``accelerate launch``)."""
    return CONFIG_DIR.joinpath(*parts)


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ``ConfigError`` ("<key>=<value>: <allowed>") unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def require_choice(key: str, value: Any, choices: tuple | list) -> None:
    require(value in choices, key, value, f"must be one of {list(choices)}")


def register_schema(name: str, node: type, group: str | None = None) -> None:
    """Register a dataclass schema in hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=name, node=node, group=group)


def to_typed(cfg: DictConfig | dict, schema: type[T]) -> T:
    """Merge ``cfg`` onto ``schema`` and build the dataclass, so every ``__post_init__`` check runs."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        obj = OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as err:  # type errors, unknown keys, missing values
        key = getattr(err, "full_key", None) or "?"
        msg = (str(err.msg if hasattr(err, "msg") else err).strip().splitlines() or [""])[0]  # one line
        raise ConfigError(f"{key}: {msg}") from None
    if not isinstance(obj, schema):
        raise ConfigError(f"expected a {schema.__name__} config, got {type(obj).__name__}")
    return obj


def run_typed(cfg: DictConfig | dict, schema: type[T], run: Callable[[T], Any], errors: tuple = ()) -> Any:
    """An entry point's body: type the config and run; a ``ConfigError`` (or one of ``errors``, the
    stage's own user errors) ends the process with its one-line message instead of a traceback."""
    try:
        return run(to_typed(cfg, schema))
    except (ConfigError, *errors) as err:
        sys.exit(f"error: {err}")


def entry_point(config_name: str, schema: type[T], run: Callable[[T], Any],
                errors: tuple | Callable[[], tuple] = (),
                argv: Callable[[list[str]], list[str]] | None = None) -> Callable[..., None]:
    """The ``main`` of a stage's ``python -m`` command: hydra composes ``miro/conf/<config_name>.yaml`` with the
    command line, ``run_typed`` types it against ``schema`` and runs ``run`` (errors: one ``error:`` line).

    ``errors`` (the stage's user errors, or a function returning them so that heavy modules load only when the
    command runs) are reported like a ``ConfigError``.  ``argv`` rewrites the command-line arguments first (``python -m miro.eval evaluate k=v`` takes a
    command word that hydra would not); ``main(args)`` runs with ``args`` instead of ``sys.argv[1:]``.
    hydra's job name is ``config_name`` (its log file and ``${hydra:job.name}``), whichever file runs it.
    """
    register_schema(f"{config_name}_schema", schema)

    def main(args: list[str] | None = None) -> None:
        import hydra

        def app(hcfg: DictConfig) -> None:
            run_typed(hcfg, schema, run, errors() if callable(errors) else errors)

        app.__module__ = config_name  # hydra names the job after the task function's module
        saved = sys.argv
        given = list(saved[1:] if args is None else args)
        sys.argv = [saved[0], *(argv(given) if argv else given)]
        full_error = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"  # hydra raises instead of printing its multi-line report ...
        try:
            hydra.main(config_path=CONFIG_PATH, config_name=config_name, version_base="1.3")(app)()
        except Exception as err:  # ... so that a bad override or config group is one "error:" line too
            line = composition_error(err)
            if line is None or full_error:
                raise
            sys.exit(f"error: {line}")
        finally:
            sys.argv = saved
            if full_error is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = full_error

    return main


def rename_group_options(args: list[str], group: str, rename: Callable[[list[str]], list[str]]) -> list[str]:
    """Command-line overrides with the options of the config group ``group`` passed through ``rename`` (a list of
    names to a list of names), so that another spelling of an option selects its file before hydra looks for it:
    the value of ``group=...`` (``[a,b]``, ``+group=a``, multirun ``[a],[b]`` or ``choice(...)``: each word) and the
    option in ``group.a.key=v`` / ``~group.a``.  Other arguments are kept as given."""
    out = []
    for arg in args:
        op = re.match(r"[+~]*", arg).group()
        key, eq, value = arg[len(op):].partition("=")
        if key == group and eq:
            value = re.sub(r"[A-Za-z_]\w*", lambda m: rename([m.group()])[0], value)
        elif key.startswith(group + "."):
            option, dot, rest = key[len(group) + 1:].partition(".")
            key = f"{group}.{rename([option])[0]}{dot}{rest}"
        out.append(op + key + eq + value)
    return out


def composition_error(err: BaseException) -> str | None:
    """One line for an error of hydra composing the config (a value of the wrong type, an unknown key, a
    missing config group option, an unparsable override); None for any other error."""
    from hydra.errors import HydraException

    cause = err if isinstance(err, OmegaConfBaseException) else err.__cause__
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or "?"
        msg = (str(cause.msg if hasattr(cause, "msg") else cause).strip().splitlines() or [""])[0]
        return f"{key}: {msg}"
    if isinstance(err, HydraException):
        lines = [x.strip() for x in str(err).strip().splitlines() if x.strip()]
        options = getattr(err, "options", None)  # a missing config group option: say which exist
        missing = getattr(err, "missing_cfg_file", None)
        if not options and missing and "/" in missing:  # hydra names none for an option of a list (rewards=[a,b])
            options = sorted(p.stem for p in (CONFIG_DIR / missing.rsplit("/", 1)[0]).glob("*.yaml"))
        return (lines[0] if lines else type(err).__name__) + (f" (available: {', '.join(options)})" if options else "")
    return None
