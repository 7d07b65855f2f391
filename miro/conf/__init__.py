"""The hydra configs of every entry point, shipped as package data (``miro.utils.config.CONFIG_DIR``).

Top-level files are the entry points' primary configs (``train.yaml``, ``annotate.yaml``, ...); folders are
config groups.  Add a folder of your own with hydra's ``--config-dir DIR`` (docs/configs.md).
"""
