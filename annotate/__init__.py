"""Offline reward annotation of WebDataset shards: scorers, sidecars, dataset statistics and buckets."""
