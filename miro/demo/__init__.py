"""The end-to-end demo on the embedded default (``python -m miro.demo``): world, annotation, statistics,
cache, training, sampling figures, shapes-world GenEval, reward metrics, and ``report.md``."""
