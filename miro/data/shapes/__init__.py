"""The shapes world: a generator of captioned scenes of coloured shapes, its detector and caption alignment.

``python -m miro.data.shapes out=DIR ...`` writes WebDataset shards (docs/shapes_world.md).
"""
