"""``python -m miro.app [pipeline=<folder>] [key=value ...]``: the reward-slider web app (hydra, typed schema).

    python -m miro.app                                   # the shipped reference model, http://127.0.0.1:7860
    python -m miro.app pipeline=runs/my_run/final port=8080
    python -m miro.app host=0.0.0.0                      # every interface (by default only this machine)
    python -m miro.app 'scorers=[pickscore,hpsv2]'       # measure with real scorers (their weights configured)

A bad value ends the command with one ``error:`` line (``miro/conf/app.yaml``, ``miro.app.config``).  A pipeline
folder or scorers that cannot load do not: the server starts and its page says what is wrong and how to start
it right.  Nothing is loaded before the command runs.
"""

from __future__ import annotations

import sys

from miro.app import GRADIO_VERSION, INSTALL_HINT
from miro.app.config import AppConfig
from miro.utils.config import entry_point


def require_gradio():
    """gradio, or an ``AppError`` saying how to install it (the ``app`` extra, then gradio without its pins)."""
    import os

    from miro.app.core import AppError

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry, no version check over the network
    try:
        import gradio
    except ImportError as err:
        raise AppError(f"the app needs gradio, which is not importable ({err}); install it: {INSTALL_HINT}") from None
    if gradio.__version__ != GRADIO_VERSION:
        print(f"warning: gradio {gradio.__version__} is installed; the app is tested with {GRADIO_VERSION} "
              f"({INSTALL_HINT})", file=sys.stderr)  # fmt: skip
    return gradio


def run(cfg: AppConfig) -> None:
    from miro.app.core import AppError, prepare
    from miro.app.ui import build_app, build_error_app, launch, workdir

    require_gradio()
    try:
        demo = build_app(prepare(cfg, workdir()))
    except AppError as err:
        print(f"warning: the app cannot start: {err}; serving a page that says so", file=sys.stderr)
        demo = build_error_app("The app cannot start", str(err))
    try:
        launch(demo, cfg.host, cfg.port, cfg.open_browser)
    except OSError as err:  # the port is taken, the address is not this machine's
        raise AppError(f"host={cfg.host!r} port={cfg.port}: cannot listen there ({err}); choose another port=N") from None


def _errors() -> tuple:
    from miro.app.core import AppError

    return (AppError,)


main = entry_point("app", AppConfig, run, errors=_errors)
