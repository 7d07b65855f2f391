"""The contract layer: what every stage agrees on, owned once, depending on no stage.

- ``rewards``: the reward names and what each reward is;
- ``shards``: shard names, listing, and the paths of per-shard files (sidecars, buckets, caches);
- ``sidecar``: the per-shard parquet files of raw scores and buckets;
- ``buckets``: ``reward_stats.json``, bucket files and the bucket-to-value encoding fed to the network;
- ``geneval_rules``: GenEval's rules on a detector's output (used by the evaluator and by the shapes world).

Layering (kept by tests/test_layers.py): ``miro.utils`` and ``miro.contracts`` at the bottom; ``miro.flow`` and
``miro.models``; ``miro.data``; the stages (``annotate``, ``miro.sampling``, then ``miro.train``, ``miro.eval``);
on top the demo.  A module imports only from its own layer's package or lower ones.
"""
