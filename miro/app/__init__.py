"""The reward-slider web app: ``python -m miro.app [pipeline=<folder>] [key=value ...]`` (docs/app.md).

A prompt, one slider per reward the loaded model was trained with, negative targets, guidance and sampling
settings; the generated images with the rewards measured on them (the weight-free scorers by default); a sweep
tab that varies one reward and plots what the images measure against the target; a download of the images with
their settings as JSON.

Modules: ``config`` (the typed hydra schema, ``miro/conf/app.yaml``), ``core`` (everything but the page: the
form -> pipeline call, generation, measurement, sweeps, downloads, the error messages; no gradio), ``ui`` (the
gradio page), ``cli`` (the command).  Importing this package loads nothing: no gradio, no torch, no model; the
pipeline is loaded when the command runs.

gradio is an optional dependency that is installed WITHOUT its own dependency metadata: every gradio release caps
pillow (6.x: ``pillow<13``) below the version the core dependencies resolve to, so ``pip install gradio`` would
downgrade pillow.  The ``app`` extra of pyproject.toml lists gradio's other runtime requirements::

    pip install -e ".[app]" && pip install --no-deps gradio==6.31.0     # GRADIO_PIN
"""

GRADIO_VERSION = "6.31.0"  # the version the app and its browser test are checked with (tests/app)
GRADIO_PIN = f"gradio=={GRADIO_VERSION}"
INSTALL_HINT = f'pip install -e ".[app]" && pip install --no-deps {GRADIO_PIN}'
