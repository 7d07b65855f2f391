"""MIRO: multi-reward conditioned flow-matching pretraining for text-to-image models."""

__version__ = "0.1.0"
