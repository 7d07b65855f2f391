"""Data: shard and image I/O, the shapes world, the importer, and the training pipeline."""
