"""Typed configuration of the shapes world (the schema behind ``miro/conf/shapes.yaml``).

Everything that changes the generated content lives here; ``out``, ``workers`` and ``overwrite`` do not, so
they are left out of ``world.json`` and of the determinism guarantee.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from miro.data.shapes.vocab import BACKGROUND, CLASSES, COLORS, RELATIONS
from miro.utils.config import require

TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
WRONG_KINDS: tuple[str, ...] = ("wrong_count", "wrong_color", "wrong_class", "wrong_relation", "swapped_colors")
DEGRADATIONS: tuple[str, ...] = ("clutter", "blur", "low_contrast", "color_cast", "noise", "jpeg")  # applied in this order


@dataclass
class DegradationSpec:
    """Applied with probability ``prob``; its strength is drawn uniformly in [min_strength, max_strength]."""

    prob: float = 0.2
    min_strength: float = 0.15
    max_strength: float = 1.0

    def check(self, key: str) -> None:
        require(0.0 <= self.prob <= 1.0, f"{key}.prob", self.prob, "must be in [0, 1]")
        require(0.0 <= self.min_strength <= self.max_strength <= 1.0, f"{key}.min_strength/max_strength",
                (self.min_strength, self.max_strength), "need 0 <= min_strength <= max_strength <= 1")


@dataclass
class DegradationsConfig:
    clutter: DegradationSpec = field(default_factory=lambda: DegradationSpec(prob=0.2))
    blur: DegradationSpec = field(default_factory=lambda: DegradationSpec(prob=0.25))
    low_contrast: DegradationSpec = field(default_factory=lambda: DegradationSpec(prob=0.2))
    color_cast: DegradationSpec = field(default_factory=lambda: DegradationSpec(prob=0.2))
    noise: DegradationSpec = field(default_factory=lambda: DegradationSpec(prob=0.25))
    jpeg: DegradationSpec = field(default_factory=lambda: DegradationSpec(prob=0.25))

    def __post_init__(self):
        for name in DEGRADATIONS:
            getattr(self, name).check(f"degradations.{name}")


@dataclass
class SceneConfig:
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    colors: list[str] = field(default_factory=lambda: list(COLORS))
    # relative frequency of each GenEval task among the samples
    tasks: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in TASKS})
    # relative frequency of the classes a caption names (missing keys weigh 1); empty draws them uniformly with the
    # generator's original draws, so a world built without it is the same images as before the key existed
    class_weights: dict[str, float] = field(default_factory=dict)
    counts: list[int] = field(default_factory=lambda: [1, 2, 3, 4])  # object counts of the counting task
    extra_objects: float = 0.2  # probability of 1-2 un-mentioned objects of other classes
    object_size: list[float] = field(default_factory=lambda: [0.32, 0.55])  # extent of a lone object / resolution
    min_object_px: float = 10.0  # no object smaller than this many pixels, whatever the resolution
    background: list[int] = field(default_factory=lambda: list(BACKGROUND))
    texture: float = 6.0  # amplitude of the background's brightness texture (0..255 units)
    supersample: int = 4  # sub-pixel samples per axis for anti-aliasing

    def __post_init__(self):
        require(len(self.classes) >= 2 and set(self.classes) <= set(CLASSES) and len(set(self.classes)) == len(self.classes),
                "scene.classes", self.classes, f"at least 2 distinct names from {list(CLASSES)}")
        require(len(self.colors) >= 2 and set(self.colors) <= set(COLORS) and len(set(self.colors)) == len(self.colors),
                "scene.colors", self.colors, f"at least 2 distinct names from {list(COLORS)}")
        require(set(self.tasks) <= set(TASKS), "scene.tasks", dict(self.tasks), f"keys must be among {list(TASKS)}")
        require(all(v >= 0 for v in self.tasks.values()) and sum(self.tasks.values()) > 0, "scene.tasks",
                dict(self.tasks), "weights must be >= 0 with a positive sum")
        require(set(self.class_weights) <= set(self.classes), "scene.class_weights", dict(self.class_weights),
                f"keys must be among scene.classes {list(self.classes)}")
        require(all(v >= 0 for v in self.class_weights.values()) and
                sum(self.class_weights.get(c, 1.0) > 0 for c in self.classes) >= 2, "scene.class_weights",
                dict(self.class_weights), "weights must be >= 0 with at least two classes above 0")
        require(len(self.counts) > 0 and all(1 <= c <= 4 for c in self.counts), "scene.counts", self.counts,
                "a non-empty list of counts in 1..4")
        require(0.0 <= self.extra_objects <= 1.0, "scene.extra_objects", self.extra_objects, "must be in [0, 1]")
        require(len(self.object_size) == 2 and 0.05 <= self.object_size[0] <= self.object_size[1] <= 0.8,
                "scene.object_size", self.object_size, "[lo, hi] with 0.05 <= lo <= hi <= 0.8")
        require(4.0 <= self.min_object_px <= 64.0, "scene.min_object_px", self.min_object_px, "must be in [4, 64]")
        require(len(self.background) == 3 and all(0 <= v <= 255 for v in self.background), "scene.background",
                self.background, "three integers in 0..255")
        require(0.0 <= self.texture <= 40.0, "scene.texture", self.texture, "must be in [0, 40]")
        require(1 <= self.supersample <= 16, "scene.supersample", self.supersample, "must be in 1..16")


@dataclass
class CaptionConfig:
    geneval_phrasing: float = 0.5  # probability of GenEval's own phrasing; otherwise a free phrasing
    color_mention: float = 0.3  # free phrasings of position / counting captions name the colours this often
    synonyms: float = 0.15  # free phrasings use a synonym of a class noun this often ("disc", "rhombus")
    wrong: float = 0.15  # fraction of captions made wrong
    # swapped_colors is off by default: the demo's and the reference model's worlds were made without it
    wrong_kinds: dict[str, float] = field(default_factory=lambda: {k: float(k != "swapped_colors") for k in WRONG_KINDS})

    def __post_init__(self):
        for key in ("geneval_phrasing", "color_mention", "synonyms", "wrong"):
            v = getattr(self, key)
            require(0.0 <= v <= 1.0, f"captions.{key}", v, "must be in [0, 1]")
        require(set(self.wrong_kinds) <= set(WRONG_KINDS), "captions.wrong_kinds", dict(self.wrong_kinds),
                f"keys must be among {list(WRONG_KINDS)}")
        require(all(v >= 0 for v in self.wrong_kinds.values()) and sum(self.wrong_kinds.values()) > 0,
                "captions.wrong_kinds", dict(self.wrong_kinds), "weights must be >= 0 with a positive sum")


@dataclass
class HeldoutConfig:
    """Compositions never captioned in training.

    ``color_class`` pairs ("purple triangle") never appear in training scenes at all; ``relations`` triples
    ("star left of circle", and the same arrangement said the other way round) are never captioned but may
    appear un-mentioned in a scene.
    """

    color_class: list[str] = field(default_factory=lambda: ["purple triangle", "yellow heart", "green star", "blue hexagon"])
    relations: list[str] = field(default_factory=lambda: ["star left of circle", "triangle above square", "heart below diamond"])
    prompts_per_task: int = 40  # prompts of each task in heldout/evaluation_metadata.jsonl (single_object: one per class)


@dataclass
class ShapesConfig:
    out: str = "???"
    num_samples: int = 10000
    resolution: int = 64
    shard_size: int = 1000
    seed: int = 0
    name: str = "shapes"
    workers: int = 1  # processes generating shards in parallel (0 = one per CPU)
    overwrite: bool = False  # replace an existing world made with another config
    scene: SceneConfig = field(default_factory=SceneConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    degradations: DegradationsConfig = field(default_factory=DegradationsConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)

    def __post_init__(self):
        require(bool(self.out) and self.out != "???", "out", self.out, "an output directory is required (out=DIR)")
        require(self.num_samples >= 1, "num_samples", self.num_samples, "must be >= 1")
        require(32 <= self.resolution <= 256, "resolution", self.resolution, "must be in 32..256")
        require(self.shard_size >= 1, "shard_size", self.shard_size, "must be >= 1")
        require(self.num_samples <= self.shard_size * 1_000_000, "num_samples", self.num_samples,
                "too many samples for 1,000,000 shards of shard_size")
        require(self.seed >= 0, "seed", self.seed, "must be >= 0")
        require(bool(self.name) and "-" not in self.name and "/" not in self.name and "." not in self.name,
                "name", self.name, "a shard name prefix without '-', '/' or '.'")
        require(self.workers >= 0, "workers", self.workers, "must be >= 0 (0 = one per CPU)")
        require(self.heldout.prompts_per_task >= 1, "heldout.prompts_per_task", self.heldout.prompts_per_task, "must be >= 1")
        classes, colors = set(self.scene.classes), set(self.scene.colors)
        for pair in self.heldout.color_class:
            parts = pair.split()
            require(len(parts) == 2 and parts[0] in colors and parts[1] in classes, "heldout.color_class", pair,
                    "'COLOR CLASS' with a colour of scene.colors and a class of scene.classes")
        for triple in self.heldout.relations:
            ok = False
            for rel in RELATIONS:
                a, sep, b = triple.partition(f" {rel} ")
                if sep and a in classes and b in classes and a != b:
                    ok = True
            require(ok, "heldout.relations", triple, f"'CLASS RELATION CLASS' with two different classes of scene.classes and a relation of {list(RELATIONS)}")
        for cls in self.scene.classes:
            left = [c for c in self.scene.colors if f"{c} {cls}" not in self.heldout.color_class]
            require(len(left) >= 2, "heldout.color_class", self.heldout.color_class, f"leaves {cls!r} fewer than 2 colours")

    def world_dict(self) -> dict:
        """The content-defining part of the config (what ``world.json`` records)."""
        d = asdict(self)
        for k in ("out", "workers", "overwrite"):
            d.pop(k)
        if not d["captions"]["wrong_kinds"].get("swapped_colors"):  # worlds from before the kind existed stay equal
            d["captions"]["wrong_kinds"].pop("swapped_colors", None)
        return d
