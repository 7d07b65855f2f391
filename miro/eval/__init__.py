"""Evaluation: GenEval-style scoring and reward metrics."""
