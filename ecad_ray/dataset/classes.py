"""Class sets: which classes a synthetic dataset has and how many images each class gets.

A class set is shipped data (`classsets/<name>.json`: `{"source", "classes", "base_counts"}`, and
optionally `"descriptions"` and `"hypernyms"`, one per class), the demo's `shapes` (colour x shape,
so everything runs offline on the demo model), or any text file with one class name per line
(`--classes-file`). nameonly sizes a class as int(base count x increase ratio) (1.15 recommended),
so a generated set can be a little larger than the real one it stands in for; `--images-per-class N`
overrides that. A class's name is its folder and its key in a prompt file; its description is what
a prompt calls it (ImageNet's "tench, Tinca tinca" for the folder n01440764).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ecad_ray.errors import UserError

CLASSSETS_DIR = Path(__file__).resolve().parent / "classsets"
DEFAULT_INCREASE_RATIO = 1.15
GENERIC_HYPERNYM = "object"  # fake_f's hypernym for a class the set has none for


@dataclass(frozen=True)
class ClassSet:
    """A dataset's class names in their canonical order, with nameonly's base counts when known."""

    name: str
    classes: tuple[str, ...]
    base_counts: tuple[int, ...] | None = None
    descriptions: tuple[str, ...] | None = None  # what prompts call each class (default: its name, "_" -> " ")
    hypernyms: tuple[str, ...] | None = None  # a broader word per class, for fake_f prompts

    def description(self, cls: str) -> str:
        """What a prompt calls `cls`: the set's description, else the name with "_" as spaces (as nameonly)."""
        if self.descriptions is not None:
            return self.descriptions[self.classes.index(cls)]
        return cls.replace("_", " ")

    def hypernym(self, cls: str) -> str:
        """A broader word for `cls` ("canine" for dog): the set's, else the generic "object"."""
        if self.hypernyms is not None:
            return self.hypernyms[self.classes.index(cls)]
        return GENERIC_HYPERNYM

    def select(self, class_range: str | None) -> "ClassSet":
        """The classes START:END (Python slice of the canonical order), as `--class-range` asks."""
        if not class_range:
            return self
        start, end = parse_class_range(class_range, len(self.classes))
        part = slice(start, end)
        return ClassSet(self.name, self.classes[part], _part(self.base_counts, part),
                        _part(self.descriptions, part), _part(self.hypernyms, part))

    def images_per_class(self, *, increase_ratio: float | None = None, images_per_class: int | None = None) -> dict[str, int]:
        """How many images each class gets: N for every class, or int(base count x ratio) as nameonly
        computes it (floating point included: 151 x 1.15 gives 173, 200 x 1.15 gives 229)."""
        if images_per_class is not None:
            if images_per_class < 1:
                raise UserError(f"--images-per-class must be at least 1, got {images_per_class}")
            return {c: images_per_class for c in self.classes}
        ratio = DEFAULT_INCREASE_RATIO if increase_ratio is None else increase_ratio
        if ratio <= 0:
            raise UserError(f"--increase-ratio must be positive, got {ratio}")
        if self.base_counts is None:
            raise UserError(
                f"class set {self.name!r} has no per-class base counts: pass --images-per-class N"
            )
        return {c: int(n * ratio) for c, n in zip(self.classes, self.base_counts)}


def _part(values: tuple | None, part: slice) -> tuple | None:
    return values[part] if values is not None else None


def parse_class_range(text: str, n: int) -> tuple[int, int]:
    """`START:END` (either side may be empty) -> (start, end) within n classes; an empty range is an error."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        end = int(parts[1]) if parts[1].strip() else n
    except ValueError:
        raise UserError(f"--class-range {text!r}: expected START:END, e.g. 0:10") from None
    start, end = max(0, start), min(n, end)
    if start >= end:
        raise UserError(f"--class-range {text!r} selects no class (the set has {n} classes)")
    return start, end


def shapes_class_set() -> ClassSet:
    """The demo's classes: every colour x shape pair ("red circle", ...), no base counts."""
    from ecad_ray.shapes import COLOUR_NAMES, SHAPES

    classes = tuple(f"{c} {s}" for c in COLOUR_NAMES for s in SHAPES)
    return ClassSet("shapes", classes, hypernyms=("shape",) * len(classes))


def available_class_sets() -> list[str]:
    """Names `--dataset` accepts: the shipped sets and `shapes`."""
    return sorted(["shapes", *(p.stem for p in CLASSSETS_DIR.glob("*.json"))])


def load_class_set(name: str | None = None, classes_file: str | Path | None = None) -> ClassSet:
    """The class set `--dataset NAME` or `--classes-file FILE` names (exactly one of them)."""
    if (name is None) == (classes_file is None):
        raise UserError("give exactly one of --dataset NAME or --classes-file FILE")
    if classes_file is not None:
        return _read_classes_file(Path(classes_file))
    if name == "shapes":
        return shapes_class_set()
    path = CLASSSETS_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"--dataset {name!r} is not a known class set; known: {', '.join(available_class_sets())}")
    data = json.loads(path.read_text())
    optional = {key: tuple(data[key]) for key in ("base_counts", "descriptions", "hypernyms") if data.get(key) is not None}
    return ClassSet(name, tuple(data["classes"]), **optional)


def _read_classes_file(path: Path) -> ClassSet:
    if not path.is_file():
        raise UserError(f"--classes-file {path}: no such file")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise UserError(f"--classes-file {path}: holds no class name (one per line)")
    unsafe = [n for n in names if "/" in n or "\\" in n or n.startswith(".")]
    if unsafe:
        raise UserError(f"--classes-file {path}: a class name is a folder name, so it cannot hold '/' or start with '.': {unsafe[0]!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"--classes-file {path}: class names repeat: {', '.join(dupes)}")
    return ClassSet(path.stem, tuple(names))
