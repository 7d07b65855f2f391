"""Training: ``python -m miro.train`` (hydra + accelerate).  The loop is in ``loop.py``; docs/train.md has the usage."""
